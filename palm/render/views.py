"""Standard views of a hand: the upright presentation and the cameras that frame it.

Pose presets keep a zero global orientation, i.e. the flat MANO frame (fingers towards -x, palm
towards -y). For presenting a hand we rotate it upright (:func:`present_upright`), fingers up (+y)
and palm towards the viewer (+z), so that the environment's sky lights it from above.

:func:`framing_camera` is the one framing of every hand render (``palm render``, ``palm export
render|turntable`` with either renderer, the studio): the palm faces the camera at azimuth 0, the
fingers point up in the image, and the azimuth orbits about the hand's own wrist-to-fingers axis
(:func:`hand_frame`), whatever the hand's global orientation. :func:`orbit_camera` is the plain
world-axis orbit the benchmarks use.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from palm.render.rays import Camera

#: Rotation that takes the MANO frame to the upright presentation: -x -> +y, -y -> +z.
UPRIGHT = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


def present_upright(pose: np.ndarray) -> np.ndarray:
    """The pose with its global orientation pre-multiplied by :data:`UPRIGHT`. ``pose``: (16, 3)."""
    from scipy.spatial.transform import Rotation

    pose = np.array(pose, dtype=np.float64, copy=True)
    pose[0] = Rotation.from_matrix(UPRIGHT @ Rotation.from_rotvec(pose[0]).as_matrix()).as_rotvec()
    return pose.astype(np.float32)


def orbit_camera(
    target: np.ndarray | torch.Tensor,
    radius: float,
    res: int | tuple[int, int],
    azimuth_deg: float = 0.0,
    elevation_deg: float = 10.0,
    fov_deg: float = 30.0,
) -> Camera:
    """A camera on a sphere around ``target`` (azimuth about +y, 0 = on +z), looking at it.

    ``radius`` is chosen by :func:`framing_radius` when framing a hand.
    """
    h, w = (res, res) if isinstance(res, int) else res
    az, el = math.radians(azimuth_deg), math.radians(elevation_deg)
    t = np.asarray(torch.as_tensor(target).detach().cpu(), dtype=np.float64)
    eye = t + radius * np.array([math.sin(az) * math.cos(el), math.sin(el), math.cos(az) * math.cos(el)])
    return Camera.look_at(eye, t, up=(0.0, 1.0, 0.0), fov_deg=fov_deg, height=h, width=w)


def framing_radius(points: np.ndarray | torch.Tensor, fov_deg: float = 30.0, margin: float = 0.95) -> float:
    """Camera distance at which a sphere bounding ``points`` (N, 3) fills the field of view."""
    p = np.asarray(torch.as_tensor(points).detach().cpu(), dtype=np.float64)
    r = float(np.linalg.norm(p - p.mean(0), axis=1).max()) * margin
    return r / math.sin(math.radians(fov_deg) / 2)


#: The flat MANO right hand's axes (``up`` = fingers, ``side`` = towards the thumb, ``back``),
#: for framing without joints.
CANONICAL_AXES = (np.array([-1.0, 0.0, 0.0]), np.array([0.0, 0.0, 1.0]), np.array([0.0, 1.0, 0.0]))


def hand_frame(joints: np.ndarray | torch.Tensor, left: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Orthonormal axes of a posed hand from its joints (MANO order).

    Args:
        joints: (16, 3) posed joints.
        left: the joints are a (mirrored) left hand.

    Returns:
        ``up`` (wrist -> middle-finger base), ``side`` (pinky -> index base, orthogonalised) and
        ``back`` (the normal on the back of the hand; the palm faces ``-back``), each (3,) float64.
        For a right hand ``back = up x side``; a left hand is its mirror image, ``back = side x up``.
    """
    j = np.asarray(torch.as_tensor(joints).detach().cpu(), dtype=np.float64).reshape(-1, 3)
    up = j[4] - j[0]
    up /= np.linalg.norm(up)
    side = j[1] - j[7]
    side -= up * (side @ up)
    side /= np.linalg.norm(side)
    back = np.cross(side, up) if left else np.cross(up, side)
    return up, side, back


def framing_camera(
    vertices: np.ndarray | torch.Tensor,
    res: int | tuple[int, int],
    azimuth_deg: float = 0.0,
    elevation_deg: float = 10.0,
    fov_deg: float = 30.0,
    joints: np.ndarray | torch.Tensor | None = None,
    left: bool = False,
) -> Camera:
    """The camera of every hand render: palm to the camera, fingers up, the hand filling the view.

    At azimuth 0 the camera looks at the palm along its normal; the azimuth orbits about the
    hand's up axis (towards the index side first), the elevation raises the camera towards the
    fingertips. The distance fits the sphere around the vertices' bounding-box centre in the
    field of view (with a margin).

    Args:
        vertices: (V, 3) posed vertices.
        res: square side or (height, width) in pixels.
        azimuth_deg, elevation_deg, fov_deg: orbit angles and vertical field of view, degrees.
        joints: (16, 3) posed joints (:func:`hand_frame`), or None for the flat MANO right hand's
            axes (:data:`CANONICAL_AXES`: fingers -x, palm -y).
        left: the joints are a left hand.

    Returns:
        A :class:`palm.render.rays.Camera` (CPU, float32).
    """
    height, width = (res, res) if isinstance(res, int) else res
    up, side, back = CANONICAL_AXES if joints is None else hand_frame(joints, left)
    palm = -back
    v = np.asarray(torch.as_tensor(vertices).detach().cpu(), dtype=np.float64).reshape(-1, 3)
    centre = (v.min(0) + v.max(0)) / 2
    radius = float(np.linalg.norm(v - centre, axis=1).max())
    fov = math.radians(fov_deg) * min(1.0, width / height)
    dist = 1.08 * radius / math.sin(fov / 2)
    az, el = math.radians(azimuth_deg), math.radians(elevation_deg)
    direction = math.cos(el) * (math.cos(az) * palm + math.sin(az) * side) + math.sin(el) * up
    return Camera.look_at(centre + dist * direction, centre, up=up, fov_deg=fov_deg, height=height, width=width)


def mirrored_camera(K: np.ndarray, rt: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """The camera that sees the world mirrored through x = 0 as ``(K, rt)`` sees it, flipped left to
    right: ``(K', F rt M)`` with ``M = F = diag(-1, 1, 1, 1)`` (a proper rotation again) and the
    principal point mirrored, ``cx' = width - cx`` (pixel centres at +0.5). A point ``M X`` lands
    at ``(width - u, v)`` where ``X`` lands at ``(u, v)``. Returns float64 copies (3, 3), (4, 4)."""
    mirror = np.diag([-1.0, 1.0, 1.0, 1.0])
    K = np.asarray(K, np.float64).reshape(3, 3).copy()
    K[0, 1], K[0, 2] = -K[0, 1], width - K[0, 2]
    return K, mirror @ np.asarray(rt, np.float64).reshape(4, 4) @ mirror
