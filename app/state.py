"""The studio's state: plain dataclasses read and written on the main thread only (no Dear PyGui)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

N_JOINTS = 16
N_PCA = 5


@dataclass
class PoseState:
    """Axis-angle pose (16, 3): row 0 global orientation, rows 1-15 relative to the flat hand."""

    pose: np.ndarray = field(default_factory=lambda: np.zeros((N_JOINTS, 3), np.float32))
    preset: str = ""
    left: bool = False


@dataclass
class SubjectState:
    """PCA coefficients of the active prior and the personalised avatar, if any."""

    shape: np.ndarray = field(default_factory=lambda: np.zeros(N_PCA, np.float32))
    appearance: np.ndarray = field(default_factory=lambda: np.zeros(N_PCA, np.float32))
    personal_shape: np.ndarray | None = None
    personal_appearance: np.ndarray | None = None
    personal_shape_code: np.ndarray | None = None
    """(32,) codes of the personalised avatar (they override its coefficients), or None."""
    personal_appearance_code: np.ndarray | None = None
    personal_betas: np.ndarray | None = None
    personal_albedo_gain: np.ndarray | None = None
    """(3,) the avatar's colour correction of the neural albedo (its ``albedo_gain``), or None."""
    personal_mesh: Any = None
    """The avatar's refined mesh (``mesh.safetensors``, a ``palm.bake.BakedAvatar``), shown while comparing."""
    compare: bool = False
    prior_path: str = ""
    prior_note: str = ""
    can_rebake: bool = False
    avatar_path: str = ""
    bake_resolution: int = 0


@dataclass
class LightState:
    name: str = ""
    lobes: np.ndarray | None = None
    rotation: float = 0.0
    exposure: float = 0.0
    show_background: bool = True
    fitted: dict[str, np.ndarray] = field(default_factory=dict)
    """Environments fitted from files or during personalisation: entry name -> lobes (K, 7)."""


@dataclass
class PhotoState:
    path: str = ""
    result: Any = None
    """The ``palm.data.photo.PhotoResult`` waiting for the user to accept, or accepted."""
    accepted: bool = False
    losses: dict[str, list[float]] = field(default_factory=dict)
    steps: list[int] = field(default_factory=list)


@dataclass
class TrainState:
    dataset: str = ""
    preset: str = "cpu"
    out_dir: str = ""
    losses: dict[str, list[float]] = field(default_factory=dict)
    steps: list[int] = field(default_factory=list)


@dataclass
class AppState:
    """Everything the panels show; the frame loop pushes it into widgets and the renderer."""

    pose: PoseState = field(default_factory=PoseState)
    subject: SubjectState = field(default_factory=SubjectState)
    light: LightState = field(default_factory=LightState)
    photo: PhotoState = field(default_factory=PhotoState)
    train: TrainState = field(default_factory=TrainState)
    neural_mode: bool = False
    neural_available: bool = False
    neural_note: str = ""
    log: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    """Paths received by drag-and-drop, newest last."""
    events_seen: list[str] = field(default_factory=list)
    """Names of jobs started, in order (a test hook and the log's source)."""
    frame_ms: float = 0.0
    render_ms: float = 0.0
    frames: int = 0

    def add_log(self, line: str, limit: int = 2000) -> None:
        self.log.append(line)
        del self.log[:-limit]
