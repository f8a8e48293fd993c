"""Standard views of a hand: the upright presentation and orbit cameras around it.

Pose presets keep a zero global orientation, i.e. the flat MANO frame (fingers towards -x, palm
towards -y). For presenting a hand we rotate it upright, fingers up (+y) and palm towards the
viewer (+z), then orbit the camera around the world's +y axis.
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
