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

from palm.render.views import mirrored_camera

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
    photo: PhotoCamera | None = None
    """When set, the camera is the photo's own (``K``, ``Rt``): orbit, pan and zoom leave it first."""

    def eye(self) -> np.ndarray:
        """Camera centre in world coordinates, (3,)."""
        if self.photo is not None:
            return self.photo.centre()
        ce = math.cos(self.elevation)
        offset = np.array([ce * math.sin(self.azimuth), math.sin(self.elevation), ce * math.cos(self.azimuth)])
        return np.asarray(self.target, dtype=np.float64) + self.distance * offset

    def world_to_camera(self) -> np.ndarray:
        """``Rt`` (4, 4): world -> OpenCV camera (x right, y down, z forward)."""
        if self.photo is not None:
            return self.photo.rt.copy()
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
        """``K`` (3, 3) for an image of ``width`` x ``height`` pixels, square pixels (in the photo's view:
        the photo's ``K`` fitted into the image, see :func:`fit_intrinsics`)."""
        if self.photo is not None:
            return fit_intrinsics(self.photo.K, self.photo.width, self.photo.height, width, height)
        f = 0.5 * height / math.tan(0.5 * self.fov_y)
        return np.array([[f, 0.0, 0.5 * width], [0.0, f, 0.5 * height], [0.0, 0.0, 1.0]])

    def orbit(self, dx: float, dy: float, speed: float = 0.01) -> None:
        """Turn by a mouse drag of (dx, dy) pixels: right drags turn the hand right-to-left."""
        self.leave_photo()
        self.azimuth = (self.azimuth - dx * speed) % (2 * math.pi)
        self.elevation = float(np.clip(self.elevation + dy * speed, -ELEVATION_LIMIT, ELEVATION_LIMIT))

    def pan(self, dx: float, dy: float, height: int) -> None:
        """Move the target in the image plane so that the scene follows a drag of (dx, dy) pixels."""
        self.leave_photo()
        rt = self.world_to_camera()
        metres_per_pixel = 2.0 * self.distance * math.tan(0.5 * self.fov_y) / max(height, 1)
        right, down = rt[0, :3], rt[1, :3]
        self.target = np.asarray(self.target, dtype=np.float64) - metres_per_pixel * (dx * right + dy * down)

    def zoom(self, steps: float, factor: float = 0.9) -> None:
        """Move closer (steps > 0) or away (steps < 0) by ``factor`` per step."""
        self.leave_photo()
        self.distance = float(np.clip(self.distance * factor**steps, self.min_distance, self.max_distance))

    def frame(self, points: np.ndarray, aspect: float = 1.0, margin: float = 1.2) -> None:
        """Aim at the centre of ``points`` (N, 3) and back off until they fit an image of ``aspect``
        (width / height): the bounding sphere fits the narrower field of view; leaves the photo view."""
        self.photo = None
        pts = np.asarray(points, np.float64).reshape(-1, 3)
        lo, hi = pts.min(axis=0), pts.max(axis=0)
        self.target = 0.5 * (lo + hi)
        radius = float(np.linalg.norm(pts - self.target, axis=1).max())
        half = 0.5 * self.fov_y
        if aspect < 1.0:
            half = math.atan(math.tan(half) * aspect)  # the horizontal field is the narrower one
        self.distance = float(np.clip(margin * radius / math.sin(half), self.min_distance, self.max_distance))

    def home(self, points: np.ndarray, azimuth: float, elevation: float, aspect: float = 1.0) -> None:
        """The start-up view (also "Reset camera"): fixed angles, ``points`` framed."""
        self.photo = None
        self.azimuth, self.elevation = float(azimuth), float(elevation)
        self.frame(points, aspect)

    def use_photo(self, photo: PhotoCamera) -> None:
        """Look through the photo's camera (exactly its ``K`` and ``Rt``)."""
        self.photo = photo

    def leave_photo(self) -> None:
        """Turn the photo's camera into the orbit camera nearest to it (same eye, same direction; up
        is +y again and the field of view the orbit camera's), so a drag starts where the view is."""
        photo = self.photo
        if photo is None:
            return
        self.photo = None
        eye = photo.centre()
        forward = photo.rt[2, :3] / np.linalg.norm(photo.rt[2, :3])
        depth = float(photo.rt[2, :3] @ np.asarray(self.target, np.float64) + photo.rt[2, 3])
        self.distance = float(np.clip(depth if depth > self.min_distance else self.distance, self.min_distance,
                                      self.max_distance))
        self.target = eye + self.distance * forward
        back = -forward
        self.elevation = float(np.clip(math.asin(np.clip(back[1], -1.0, 1.0)), -ELEVATION_LIMIT, ELEVATION_LIMIT))
        self.azimuth = math.atan2(back[0], back[2]) % (2 * math.pi)


@dataclass
class PhotoCamera:
    """The camera of a personalisation photo: ``K`` (3, 3), ``Rt`` (4, 4) world -> camera, image size.

    Build with :meth:`from_avatar` so that the avatar's translation is folded into ``Rt`` (the
    studio poses the hand without it).
    """

    K: np.ndarray
    rt: np.ndarray
    width: int
    height: int

    def centre(self) -> np.ndarray:
        r, t = self.rt[:3, :3], self.rt[:3, 3]
        return -r.T @ t

    @classmethod
    def from_avatar(cls, camera: dict, transl=None, left: bool = False) -> PhotoCamera:
        """From an avatar's ``camera`` dict (``K``, ``Rt``, ``width``, ``height``) and its ``transl`` (3,):
        the fitted hand is ``LBS(pose) + transl``; the studio draws ``LBS(pose)``, so ``Rt @ T(transl)``.

        A left hand was fitted as the right hand of the mirrored photo, and the studio draws it as
        that right hand mirrored through the world's x = 0 plane, ``M X`` (``M = diag(-1, 1, 1)``,
        ``Controller.current_bones``). Its camera is ``F Rt M`` with ``F`` the same mirror in
        camera space (a proper rotation again) and the principal point mirrored, ``cx -> width - cx``:
        it sees ``M X`` as the photo shows the hand, the fitted right hand's image flipped left to right.
        """
        rt = np.asarray(camera["Rt"], np.float64).reshape(4, 4).copy()
        if transl is not None:
            shift = np.eye(4)
            shift[:3, 3] = np.asarray(transl, np.float64).reshape(3)
            rt = rt @ shift
        K = np.asarray(camera["K"], np.float64).reshape(3, 3)
        width = int(camera["width"])
        if left:
            K, rt = mirrored_camera(K, rt, width)
        return cls(K, rt, width, int(camera["height"]))


def fit_intrinsics(K: np.ndarray, photo_w: int, photo_h: int, width: int, height: int) -> np.ndarray:
    """The photo's intrinsics for an image of ``width`` x ``height``: the whole photo frame is scaled
    to fit (aspect kept) and centred; the bands outside it show more of the same scene (letterbox).

    A pixel ``(u, v)`` of the photo lands at ``(s u + ox, s v + oy)`` with ``s = min(W/w, H/h)``.
    """
    s = min(width / max(photo_w, 1), height / max(photo_h, 1))
    ox, oy = 0.5 * (width - s * photo_w), 0.5 * (height - s * photo_h)
    out = np.asarray(K, np.float64).reshape(3, 3).copy()
    out[:2] *= s
    out[0, 2] += ox
    out[1, 2] += oy
    return out


def photo_rect(photo: PhotoCamera, width: int, height: int) -> tuple[int, int, int, int]:
    """Where the photo's frame lies in a ``width`` x ``height`` view: (x0, y0, x1, y1) pixels."""
    s = min(width / max(photo.width, 1), height / max(photo.height, 1))
    ox, oy = 0.5 * (width - s * photo.width), 0.5 * (height - s * photo.height)
    return round(ox), round(oy), round(ox + s * photo.width), round(oy + s * photo.height)


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
