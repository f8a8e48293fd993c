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

Every pose read here is checked once, before any work: finite numbers whose magnitude is at most
:data:`MAX_POSE_RADIANS` (a rotation of more than 1000 rad is a unit or file error, and values of
1e20 make the rig's SVD fail). :func:`check_betas` applies the same rule to shape coefficients
(at most :data:`MAX_BETA` in magnitude; the PCA spaces are in standard deviations).

Joint limits: :data:`JOINT_LIMITS` holds the anatomical range of motion of every joint as
(flexion, abduction, twist) intervals in the joint's own anatomical frame (:func:`joint_frames`,
built from the rig's rest joints); :func:`pose_to_angles` / :func:`angles_to_pose` convert between
axis-angle poses and those angles, :func:`clamp_pose` pulls a pose back inside the limits (for the
studio's joint sliders) and :func:`pose_within_limits` checks one. Every shipped preset lies
inside the limits.
"""

from __future__ import annotations

import functools
import json
import math
import os
from pathlib import Path

import numpy as np

# Imported here, not inside the functions: the studio's GUI thread calls them while job threads
# import other parts of scipy, and two threads importing scipy's lazily loaded submodules at once
# can deadlock on the import locks (seen with scipy 1.17: "_DeadlockError ... scipy.spatial").
from scipy.spatial.transform import Rotation

from palm.assets import POSES
from palm.errors import PalmError
from palm.io import read_json

POSE_FORMAT = "palm-pose-v1"
#: Largest axis-angle component accepted in a pose (radians; one turn is 6.28).
MAX_POSE_RADIANS = 1e3
#: Largest shape coefficient accepted (MANO betas are in standard deviations, |b| < 5 is typical).
MAX_BETA = 100.0


def check_pose_values(arr: np.ndarray, path: str | os.PathLike, what: str = "pose") -> np.ndarray:
    """Refuse NaN/Inf and axis-angle values beyond :data:`MAX_POSE_RADIANS`; returns ``arr``.

    Raises:
        PalmError: naming ``path``.
    """
    if not np.isfinite(arr).all():
        raise PalmError(path, f"{what} contains NaN or infinite values")
    if arr.size and np.abs(arr).max() > MAX_POSE_RADIANS:
        raise PalmError(path, f"{what} has a value of {np.abs(arr).max():.3g} rad, beyond the limit of "
                              f"{MAX_POSE_RADIANS:g} (axis-angle in radians expected)")
    return arr


def check_betas(values: object, path: str | os.PathLike, n_max: int | None = None, what: str = "betas") -> np.ndarray:
    """Shape coefficients as a float64 vector: numbers, finite, at most :data:`MAX_BETA` in magnitude
    and (with ``n_max``) at most ``n_max`` of them.

    Raises:
        PalmError: naming ``path`` (a file or a flag such as ``--betas``).
    """
    try:
        arr = np.asarray(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError, OverflowError):
        raise PalmError(path, f"{what} must be a list of numbers") from None
    if not np.isfinite(arr).all():
        raise PalmError(path, f"{what} contain NaN or infinite values")
    if arr.size and np.abs(arr).max() > MAX_BETA:
        raise PalmError(path, f"{what} include a value of {np.abs(arr).max():.3g}, beyond the limit of {MAX_BETA:g}")
    if n_max is not None and arr.size > n_max:
        raise PalmError(path, f"got {arr.size} {what}, the hand model has {n_max}")
    return arr


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
    except (TypeError, ValueError, OverflowError):
        raise PalmError(path, "pose is not an array of numbers of shape (16, 3), (48,) or (45,)") from None
    if arr.shape in ((16, 3), (48,)):
        arr = arr.reshape(16, 3)
    elif arr.shape in ((15, 3), (45,)):
        arr = np.concatenate([np.zeros((1, 3)), arr.reshape(15, 3)])
    else:
        raise PalmError(path, f"pose has shape {arr.shape}, expected (16, 3), (48,) or (45,) axis-angle values")
    return check_pose_values(arr, path)


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
            except (TypeError, ValueError, OverflowError):
                raise PalmError(path, "'global_orient' is not 3 numbers") from None
            if glob.size != 3:
                raise PalmError(path, f"'global_orient' has shape {glob.shape}, expected (3,)")
            hand[0] = check_pose_values(glob.reshape(3), path, "'global_orient'")
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


# ---------------------------------------------------------------------------------------------
# anatomical joint frames and range-of-motion limits
# ---------------------------------------------------------------------------------------------
#
# Every hand joint rotates in its own anatomical frame, built from the rig's flat rest hand
# (``joint_frames``); for the open rig and MANO's frame (fingers along -x, palm facing -y, thumb
# on +z):
#
# * twist axis t: along the bone the joint moves (joint -> next joint, or -> fingertip);
# * flexion axis f = t x pad: positive flexion turns the bone towards its pad. For the four fingers
#   the pad side is the palm normal (-y), so f is within 15 degrees of the rig's +z axis (a positive
#   z axis-angle flexes a finger towards the palm; y spreads it, x twists it). The thumb's pad is
#   the palm normal rolled about the thumb by ``THUMB_PAD_ROLL`` towards the fingers (measured on
#   the open rig's thumbnail: the flat thumb lies on its side), so thumb flexion curls the thumb
#   across the palm;
# * abduction axis a = t x f (the back of the finger, the nail side): positive abduction turns the
#   bone towards f, i.e. towards the thumb side for the fingers (index away from the middle
#   finger, ring and pinky towards it), and lifts the thumb off the palm plane at the CMC (palmar
#   abduction). Positive twist rolls the pad towards f (the thumb's pad towards the palm and wrist;
#   negative CMC twist turns it to face the fingertips, as in opposition and pinches).
#
# A joint's local rotation ``R`` (its axis-angle row) is read as intrinsic Euler angles in that
# frame, ``B^T R B = Rx(flex) Ry(abd) Rz(twist)`` with ``B = [f, a, t]`` (columns): flexion about
# the parent-fixed axis first, then abduction, then twist about the bone. The decomposition is
# singular only at |abduction| = 90 degrees, far outside every limit.

#: Order of the three anatomical angles of a joint.
ANGLE_NAMES = ("flex", "abd", "twist")
#: Roll of the thumb's pad direction about the thumb's bone (radians, right-handed about the bone
#: direction), from the palm normal towards the fingers.
THUMB_PAD_ROLL = -math.radians(65.0)


def _deg(lo: float, hi: float) -> tuple[float, float]:
    return (math.radians(lo), math.radians(hi))


_MCP = {"flex": _deg(-30, 90), "twist": _deg(-10, 10)}
_PIP = {"flex": _deg(0, 110), "abd": _deg(-5, 5), "twist": _deg(-5, 5)}
_DIP = {"flex": _deg(0, 80), "abd": _deg(-5, 5), "twist": _deg(-5, 5)}
_FINGER_ABD = {"index": _deg(-15, 25), "middle": _deg(-20, 20), "ring": _deg(-25, 15), "pinky": _deg(-35, 15)}

#: Range of motion of every joint in radians: ``JOINT_LIMITS[joint][angle] = (low, high)`` for the
#: angles of ``ANGLE_NAMES`` in the joint's anatomical frame (see above), from human hand anatomy:
#: finger MCP flexion 0..90 deg with 30 deg of hyperextension, 20-35 deg of abduction (positive
#: towards the thumb) and 10 deg of passive twist; PIP 0..110 and DIP 0..80 deg (no backward
#: bending; 5 deg of sideways play); thumb CMC -20..50 deg flexion across the palm, -15..60 deg
#: palmar abduction, +-40 deg axial rotation (opposition); thumb MCP -10..60 deg, IP -15..80 deg
#: (the thumb's IP hyperextends). The wrist (global orientation) is not limited.
JOINT_LIMITS: dict[str, dict[str, tuple[float, float]]] = {
    "wrist": {a: (-math.inf, math.inf) for a in ANGLE_NAMES},
    **{
        f"{finger}{k}": dict(lim)
        for finger in ("index", "middle", "pinky", "ring")
        for k, lim in ((1, {**_MCP, "abd": _FINGER_ABD[finger]}), (2, _PIP), (3, _DIP))
    },
    "thumb1": {"flex": _deg(-20, 50), "abd": _deg(-15, 60), "twist": _deg(-40, 40)},
    "thumb2": {"flex": _deg(-10, 60), "abd": _deg(-15, 15), "twist": _deg(-15, 15)},
    "thumb3": {"flex": _deg(-15, 80), "abd": _deg(-5, 5), "twist": _deg(-5, 5)},
}


def limits_array() -> np.ndarray:
    """(16, 3, 2) ``JOINT_LIMITS`` as an array: joint (MANO order), angle (flex, abd, twist), (low, high)."""
    from palm.hand.model import JOINT_NAMES

    return np.array([[JOINT_LIMITS[j][a] for a in ANGLE_NAMES] for j in JOINT_NAMES], dtype=np.float64)


#: Where each joint's bone ends, in ``joints (16) + fingertips (16 thumb, 17 index, 18 middle,
#: 19 ring, 20 pinky)``.
_BONE_END = (4, 2, 3, 17, 5, 6, 18, 8, 9, 20, 11, 12, 19, 14, 15, 16)


def joint_frames(hand=None, betas=None) -> np.ndarray:
    """(16, 3, 3) anatomical frames ``B_j = [f, a, t]`` (columns) of a hand's flat rest pose.

    Row 0 (the wrist, global orientation) is the identity.

    Args:
        hand: a :class:`palm.hand.HandModel` (default: the embedded open rig).
        betas: (NB,) or (1, NB) shape coefficients, or None (mean shape).
    """
    if hand is None and betas is None:
        return _open_frames().copy()
    if hand is None:
        from palm.hand import load_hand

        hand = load_hand("open")
    import torch

    with torch.no_grad():
        b = None if betas is None else torch.as_tensor(betas, dtype=torch.float32).reshape(1, -1)
        verts, joints = hand.rest(b)
        tips = verts[0, hand.tip_vertex_ids]
    points = np.concatenate([joints[0].cpu().numpy(), tips.cpu().numpy()]).astype(np.float64)
    palm = np.cross(points[1] - points[0], points[7] - points[0])  # index x pinky: the palm side
    palm /= np.linalg.norm(palm)
    frames = np.repeat(np.eye(3)[None], 16, axis=0)
    for j in range(1, 16):
        t = points[_BONE_END[j]] - points[j]
        t /= np.linalg.norm(t)
        pad = palm - t * (t @ palm)
        pad /= np.linalg.norm(pad)
        if j >= 13:  # the thumb lies on its side: roll its pad about the bone
            pad = math.cos(THUMB_PAD_ROLL) * pad + math.sin(THUMB_PAD_ROLL) * np.cross(t, pad)
        f = np.cross(t, pad)
        f /= np.linalg.norm(f)
        frames[j] = np.stack([f, np.cross(t, f), t], axis=1)
    return frames


@functools.lru_cache(maxsize=1)
def _open_frames() -> np.ndarray:
    from palm.hand import load_hand

    return joint_frames(load_hand("open"))


def _frames(hand, betas, frames) -> np.ndarray:
    return np.asarray(frames, dtype=np.float64) if frames is not None else joint_frames(hand, betas)


def pose_to_angles(pose, hand=None, betas=None, frames: np.ndarray | None = None) -> np.ndarray:
    """Anatomical angles (flex, abd, twist) of every joint of axis-angle poses.

    Args:
        pose: (..., 16, 3) or (..., 48) axis-angle. hand: the rig whose frames to use (default: the
            open rig). betas: its shape. frames: precomputed :func:`joint_frames` (then hand and
            betas are not used).

    Returns:
        (..., 16, 3) radians; row 0 holds the global orientation as intrinsic x-y-z Euler angles.
    """
    frames = _frames(hand, betas, frames)
    p = np.asarray(pose, dtype=np.float64)
    shape = p.shape if p.shape[-1] == 3 else p.shape[:-1] + (16, 3)
    p = p.reshape(-1, 16, 3)
    rot = Rotation.from_rotvec(p.reshape(-1, 3)).as_matrix().reshape(-1, 16, 3, 3)
    local = np.einsum("jab,njac,jcd->njbd", frames, rot, frames)  # B^T R B
    return Rotation.from_matrix(local.reshape(-1, 3, 3)).as_euler("XYZ").reshape(shape)


def angles_to_pose(angles, hand=None, betas=None, frames: np.ndarray | None = None) -> np.ndarray:
    """Inverse of :func:`pose_to_angles`: (..., 16, 3) anatomical angles -> (..., 16, 3) axis-angle."""
    frames = _frames(hand, betas, frames)
    a = np.asarray(angles, dtype=np.float64)
    local = Rotation.from_euler("XYZ", a.reshape(-1, 3)).as_matrix().reshape(-1, 16, 3, 3)
    rot = np.einsum("jab,njbc,jdc->njad", frames, local, frames)  # B R' B^T
    return Rotation.from_matrix(rot.reshape(-1, 3, 3)).as_rotvec().reshape(a.shape)


def pose_within_limits(pose, hand=None, betas=None, tol: float = 1e-4, frames: np.ndarray | None = None) -> np.ndarray:
    """(..., 16) bool: each joint's anatomical angles lie within ``JOINT_LIMITS`` (up to ``tol`` rad)."""
    ang = pose_to_angles(pose, hand, betas, frames)
    lim = limits_array()
    return np.all((ang >= lim[:, :, 0] - tol) & (ang <= lim[:, :, 1] + tol), axis=-1)


#: Radians by which a joint may read past its range and still count as inside it (rounding).
CLAMP_TOL = 1e-9


def clamp_pose(pose, hand=None, betas=None, frames: np.ndarray | None = None):
    """Pull every joint of a pose back inside its anatomical range (``JOINT_LIMITS``).

    Each joint's rotation is read as (flex, abd, twist) in its anatomical frame, each angle is
    clipped to its range and the rotation rebuilt. Joints already inside their range, and the
    global orientation (row 0), come back bit for bit.

    Args:
        pose: (..., 16, 3) or (..., 48) axis-angle, numpy or torch.
        hand: the rig (default: the open rig). betas: its shape (the frames follow the rest joints).
        frames: precomputed :func:`joint_frames` (then hand and betas are not used); pass them when
            clamping often (slider drags).

    Returns:
        The clamped pose, the same shape and array type (numpy or torch, dtype, device) as ``pose``.
    """
    is_torch = type(pose).__module__.startswith("torch")
    src = pose.detach().cpu().numpy() if is_torch else np.asarray(pose)
    frames = _frames(hand, betas, frames)
    p = src.astype(np.float64).reshape(-1, 16, 3)
    ang = pose_to_angles(p, frames=frames)
    lim = limits_array()
    clipped = np.clip(ang, lim[:, :, 0], lim[:, :, 1])
    # (N, 16): keep these joints as they were. A joint rebuilt at its limit reads back within
    # rounding of it, so the tolerance makes a second clamp return the first bit for bit.
    inside = np.all(np.abs(clipped - ang) <= CLAMP_TOL, axis=-1)
    out = np.where(inside[..., None], p, angles_to_pose(clipped, frames=frames))
    out = out.reshape(src.shape).astype(src.dtype if src.dtype.kind == "f" else np.float64)
    if is_torch:
        import torch

        return torch.as_tensor(out, dtype=pose.dtype, device=pose.device)
    return out
