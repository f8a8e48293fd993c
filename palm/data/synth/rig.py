"""Poses and cameras of the synthetic set: preset/random hand poses and the 7-camera rig."""

from __future__ import annotations

import math

import numpy as np

from palm.data.synth.config import CAMERA_IDS, RIG_ANGLES, SynthConfig
from palm.data.types import CameraParams
from palm.errors import PalmError


def unit(v: np.ndarray) -> np.ndarray:
    """``(..., 3)`` vectors scaled to unit length (zero vectors stay zero)."""
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


def preset_poses() -> tuple[list[str], np.ndarray]:
    """Names and (P, 16, 3) poses of the shipped presets."""
    from palm.hand import POSE_PRESETS, load_pose

    names = list(POSE_PRESETS)
    if not names:
        raise PalmError("assets/poses", "no pose presets installed")
    return names, np.stack([np.asarray(load_pose(n), np.float32).reshape(16, 3) for n in names])


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """Axis-angle (3,) of a uniformly random rotation."""
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    if q[0] < 0:
        q = -q
    angle = 2 * np.arccos(np.clip(q[0], -1, 1))
    axis = q[1:] / max(np.linalg.norm(q[1:]), 1e-12)
    return (axis * angle).astype(np.float32)


def sample_pose(
    rng: np.random.Generator, presets: np.ndarray, names: list[str], p_preset: float
) -> tuple[np.ndarray, str]:
    """A (16, 3) hand pose: a preset or a random mix within the presets' joint ranges.

    Returns:
        pose (16, 3) float32 (row 0 = random global orientation) and its description.
    """
    pose = np.zeros((16, 3), np.float32)
    if rng.uniform() < p_preset:
        k = int(rng.integers(len(names)))
        pose[1:] = presets[k, 1:]
        label = f"preset:{names[k]}"
    else:
        lo = presets[:, 1:].min(0) - 0.15
        hi = presets[:, 1:].max(0) + 0.15
        w = rng.dirichlet(np.full(len(names), 0.7))
        mix = np.einsum("p,pjc->jc", w, presets[:, 1:]) + rng.normal(0.0, 0.08, (15, 3))
        pose[1:] = np.clip(mix, lo, hi)
        label = "random"
    pose[0] = random_rotation(rng)
    return pose, label


def look_at_rt(eye: np.ndarray, target: np.ndarray, up: tuple[float, float, float] = (0.0, 1.0, 0.0)) -> np.ndarray:
    """(4, 4) OpenCV world->camera of a camera at ``eye`` looking at ``target`` (world up appears up)."""
    up = np.asarray(up, dtype=np.float64)
    z = unit(target - eye)
    x = np.cross(z, up)
    if np.linalg.norm(x) < 1e-6:
        x = np.cross(z, np.array([0.0, 0.0, 1.0]))
    x = unit(x)
    y = np.cross(z, x)
    Rt = np.eye(4)
    Rt[:3, :3] = np.stack([x, y, z])
    Rt[:3, 3] = -Rt[:3, :3] @ eye
    return Rt


def rig_cameras(rng: np.random.Generator, cfg: SynthConfig) -> dict[str, CameraParams]:
    """The subject's calibrated cameras (first ``cfg.n_views`` of the 7-camera rig)."""
    res = cfg.resolution
    cams = {}
    for cam_id, (az, el) in list(zip(CAMERA_IDS, RIG_ANGLES))[: cfg.n_views]:
        a = math.radians(az + rng.uniform(-4, 4))
        e = math.radians(el + rng.uniform(-4, 4))
        d = cfg.camera_distance + rng.uniform(-0.03, 0.03)
        eye = d * np.array([math.cos(e) * math.sin(a), math.sin(e), math.cos(e) * math.cos(a)])
        target = rng.uniform(-0.005, 0.005, 3)
        f = cfg.fill * res * cfg.camera_distance / cfg.hand_extent * rng.uniform(0.97, 1.03)
        cx, cy = res / 2 + rng.uniform(-0.01, 0.01, 2) * res
        K = np.array([[f, 0.0, cx], [0.0, f, cy], [0.0, 0.0, 1.0]])
        cams[cam_id] = CameraParams(K, look_at_rt(eye, target), res, res)
    return cams


def rotation_y(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])
