"""Orbit camera for the viewport, in NumPy (no Dear PyGui, no OpenGL).

The camera follows the project's convention: OpenCV pinhole (x right, y down, z forward), ``K`` 3x3
and ``Rt`` 4x4 world->camera. :func:`gl_projection` converts once, at the boundary, to an OpenGL
clip-space matrix whose framebuffer row 0 is the image's top row (so a read-back is top-first).
World "up" is +y.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

ELEVATION_LIMIT = math.radians(89.0)


@dataclass
class OrbitCamera:
    """A camera orbiting ``target`` at ``distance``; angles in radians.

    ``azimuth`` turns about world +y (0 looks along -z from +z), ``elevation`` lifts the eye
    above the target's horizontal plane.
    """

    target: np.ndarray = field(default_factory=lambda: np.zeros(3))
    distance: float = 0.5
    azimuth: float = 0.0
    elevation: float = 0.3
    fov_y: float = math.radians(35.0)
    min_distance: float = 0.02
    max_distance: float = 20.0

    def eye(self) -> np.ndarray:
        """Camera centre in world coordinates, (3,)."""
        ce = math.cos(self.elevation)
        offset = np.array([ce * math.sin(self.azimuth), math.sin(self.elevation), ce * math.cos(self.azimuth)])
        return np.asarray(self.target, dtype=np.float64) + self.distance * offset

    def world_to_camera(self) -> np.ndarray:
        """``Rt`` (4, 4): world -> OpenCV camera (x right, y down, z forward)."""
        eye = self.eye()
        forward = np.asarray(self.target, dtype=np.float64) - eye
        forward /= np.linalg.norm(forward)
        right = np.cross(forward, [0.0, 1.0, 0.0])
        right /= np.linalg.norm(right)
        down = np.cross(forward, right)
        rt = np.eye(4)
        rt[:3, :3] = np.stack([right, down, forward])
        rt[:3, 3] = -rt[:3, :3] @ eye
        return rt

    def intrinsics(self, width: int, height: int) -> np.ndarray:
        """``K`` (3, 3) for an image of ``width`` x ``height`` pixels, square pixels."""
        f = 0.5 * height / math.tan(0.5 * self.fov_y)
        return np.array([[f, 0.0, 0.5 * width], [0.0, f, 0.5 * height], [0.0, 0.0, 1.0]])

    def orbit(self, dx: float, dy: float, speed: float = 0.01) -> None:
        """Turn by a mouse drag of (dx, dy) pixels: right drags turn the hand right-to-left."""
        self.azimuth = (self.azimuth - dx * speed) % (2 * math.pi)
        self.elevation = float(np.clip(self.elevation + dy * speed, -ELEVATION_LIMIT, ELEVATION_LIMIT))

    def pan(self, dx: float, dy: float, height: int) -> None:
        """Move the target in the image plane so that the scene follows a drag of (dx, dy) pixels."""
        rt = self.world_to_camera()
        metres_per_pixel = 2.0 * self.distance * math.tan(0.5 * self.fov_y) / max(height, 1)
        right, down = rt[0, :3], rt[1, :3]
        self.target = np.asarray(self.target, dtype=np.float64) - metres_per_pixel * (dx * right + dy * down)

    def zoom(self, steps: float, factor: float = 0.9) -> None:
        """Move closer (steps > 0) or away (steps < 0) by ``factor`` per step."""
        self.distance = float(np.clip(self.distance * factor**steps, self.min_distance, self.max_distance))

    def frame(self, points: np.ndarray) -> None:
        """Aim at the bounding-box centre of ``points`` (N, 3) and back off until they fit."""
        lo, hi = points.min(axis=0), points.max(axis=0)
        self.target = 0.5 * (lo + hi)
        radius = 0.5 * float(np.linalg.norm(hi - lo))
        self.distance = float(np.clip(1.15 * radius / math.sin(0.5 * self.fov_y), self.min_distance, self.max_distance))


def gl_projection(K: np.ndarray, width: int, height: int, near: float, far: float) -> np.ndarray:
    """OpenCV intrinsics -> OpenGL clip matrix (4, 4) for points in OpenCV camera coordinates.

    Pixel ``(u, v)`` (v down) maps to NDC ``x = 2u/W - 1``, ``y = 2v/H - 1``: framebuffer row 0
    holds image row 0, so ``glReadPixels`` returns the image top-first. Triangle winding flips
    relative to the usual GL set-up (the renderer does not cull).
    """
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    return np.array(
        [
            [2 * fx / width, 0.0, 2 * cx / width - 1.0, 0.0],
            [0.0, 2 * fy / height, 2 * cy / height - 1.0, 0.0],
            [0.0, 0.0, (far + near) / (far - near), -2 * far * near / (far - near)],
            [0.0, 0.0, 1.0, 0.0],
        ]
    )
