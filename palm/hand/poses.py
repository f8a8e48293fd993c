"""Hand poses as data: the presets in ``assets/poses/`` and user pose files.

Pose file formats accepted by :func:`load_pose`:

* JSON ``{"format": "palm-pose-v1", "pose": [[x, y, z], ...16 rows]}``: MANO axis-angle in
  radians, row 0 the global orientation, rows 1-15 the joints in MANO order, relative to the flat
  hand (``flat_hand_mean=True``). The presets also carry ``"name"``, ``"description"`` and
  ``"order"``. ``"pose"`` may also be a flat list of 48 numbers.
* JSON in MANO's split form ``{"hand_pose": [45 numbers], "global_orient": [3 numbers]}``
  (``global_orient`` optional, zero by default); ``hand_pose`` must be relative to the flat hand.
* JSON that is a bare list of 16x3, 48 or 45 numbers.
* ``.npy`` with shape (16, 3), (48,) or (45,) (the last without global orientation).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from palm.assets import POSES
from palm.errors import PalmError
from palm.io import read_json

POSE_FORMAT = "palm-pose-v1"


def _preset_files() -> dict[str, Path]:
    if not POSES.is_dir():
        return {}
    found = []
    for p in POSES.glob("*.json"):
        try:
            order = json.loads(p.read_text()).get("order", 1000)
        except (OSError, ValueError, AttributeError):
            order = 1000
        found.append((order, p.stem, p))
    return {name: p for _, name, p in sorted(found)}


_PRESETS = _preset_files()
#: Names of the shipped pose presets (``assets/poses/<name>.json``), in display order.
POSE_PRESETS: tuple[str, ...] = tuple(_PRESETS)


def _as_pose(values: object, path: str | os.PathLike) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise PalmError(path, "pose is not an array of numbers of shape (16, 3), (48,) or (45,)") from None
    if arr.shape in ((16, 3), (48,)):
        arr = arr.reshape(16, 3)
    elif arr.shape in ((15, 3), (45,)):
        arr = np.concatenate([np.zeros((1, 3)), arr.reshape(15, 3)])
    else:
        raise PalmError(path, f"pose has shape {arr.shape}, expected (16, 3), (48,) or (45,) axis-angle values")
    if not np.isfinite(arr).all():
        raise PalmError(path, "pose contains NaN or infinite values")
    return arr


def pose_from_json(data: object, path: str | os.PathLike) -> np.ndarray:
    """(16, 3) pose from parsed JSON in any accepted form (see the module docstring)."""
    if isinstance(data, dict):
        if "pose" in data:
            return _as_pose(data["pose"], path)
        if "hand_pose" in data:
            hand = _as_pose(data["hand_pose"], path)
            if np.shape(data["hand_pose"]) not in ((45,), (15, 3)):
                raise PalmError(path, f"'hand_pose' has shape {np.shape(data['hand_pose'])}, expected (45,)")
            try:
                glob = np.asarray(data.get("global_orient", [0.0, 0.0, 0.0]), dtype=np.float64)
            except (TypeError, ValueError):
                raise PalmError(path, "'global_orient' is not 3 numbers") from None
            if glob.size != 3 or not np.isfinite(glob).all():
                raise PalmError(path, f"'global_orient' has shape {glob.shape}, expected (3,)")
            hand[0] = glob.reshape(3)
            return hand
        raise PalmError(path, "pose JSON has neither a 'pose' nor a 'hand_pose' key")
    return _as_pose(data, path)


def load_pose(name_or_path: str | os.PathLike) -> np.ndarray:
    """A hand pose as (16, 3) float64 axis-angle.

    Args:
        name_or_path: a preset name (see ``POSE_PRESETS``) or a ``.json`` / ``.npy`` file.

    Raises:
        PalmError: unknown preset, missing file, or a file whose pose has the wrong shape.
    """
    text = os.fspath(name_or_path)
    if text in _PRESETS and not Path(text).exists():
        return pose_from_json(read_json(_PRESETS[text]), _PRESETS[text])
    path = Path(text)
    if not path.exists():
        if path.suffix == "" and os.sep not in text:
            raise PalmError(text, f"unknown pose preset (presets: {', '.join(POSE_PRESETS)})")
        raise PalmError(path, "pose file not found")
    if path.is_dir():
        raise PalmError(path, "expected a pose file, found a folder")
    if path.suffix.lower() == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise PalmError(path, f"not a .npy array ({exc or 'empty file'})") from None
        return _as_pose(arr, path)
    return pose_from_json(read_json(path), path)


def pose_json(pose: np.ndarray, name: str = "", description: str = "", order: int | None = None) -> dict:
    """The palm-pose-v1 JSON object of a (16, 3) pose (numbers rounded to 1e-4 rad)."""
    pose = np.asarray(pose, dtype=np.float64).reshape(16, 3)
    out: dict = {"format": POSE_FORMAT}
    if name:
        out["name"] = name
    if description:
        out["description"] = description
    if order is not None:
        out["order"] = order
    out["pose"] = [[round(float(v), 4) for v in row] for row in pose]
    return out
