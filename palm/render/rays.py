"""Calibrated pinhole cameras and the rays through their pixels.

Conventions (``docs/architecture.md``): OpenCV pinhole cameras (x right, y down, z forward),
intrinsics ``K`` (3, 3) and extrinsics ``Rt`` (4, 4) mapping world to camera coordinates.
Pixel ``(u, v)`` (column, row) has its centre at ``(u + 0.5, v + 0.5)`` in continuous image
coordinates, which is also what :func:`project` returns.

Rays are marched in "MANO space" (spec section 2): :func:`world_to_local` maps world rays with
``w2s = A_root^-1``. Directions are mapped with the linear part of ``w2s`` and are *not*
renormalised, so a ray parameter ``t`` names the same point in both spaces (``w2s`` is rigid in
practice, so unit directions stay unit).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from palm.errors import PalmError

MAX_IMAGE_SIDE = 16384
"""Largest image side a camera may declare."""


@dataclass
class Camera:
    """An OpenCV pinhole camera.

    Attributes:
        K: (3, 3) intrinsics.
        Rt: (4, 4) world -> camera extrinsics (last row ``0 0 0 1``).
        height: image height in pixels.
        width: image width in pixels.
    """

    K: torch.Tensor
    Rt: torch.Tensor
    height: int
    width: int

    @property
    def c2w(self) -> torch.Tensor:
        """(4, 4) camera -> world transform (rigid inverse of ``Rt``)."""
        R = self.Rt[:3, :3]
        t = self.Rt[:3, 3]
        out = torch.eye(4, dtype=self.Rt.dtype, device=self.Rt.device)
        out[:3, :3] = R.T
        out[:3, 3] = -R.T @ t
        return out

    @property
    def centre(self) -> torch.Tensor:
        """(3,) camera centre in world coordinates."""
        return self.c2w[:3, 3]

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Camera:
        """The same camera with ``K``/``Rt`` on another device or dtype."""
        return Camera(self.K.to(device=device, dtype=dtype), self.Rt.to(device=device, dtype=dtype),
                      self.height, self.width)

    def scaled(self, factor: float) -> Camera:
        """The camera of the image resized by ``factor`` (pixel-centre convention preserved).

        With pixel centres at ``u + 0.5`` resizing by ``factor`` scales continuous image coordinates
        by exactly ``factor``, so ``fx, fy, cx, cy`` are all multiplied by it.
        """
        if factor <= 0:
            raise PalmError("camera", f"scale factor must be positive, got {factor}")
        K = self.K.clone()
        K[:2, :] = K[:2, :] * factor
        return Camera(K, self.Rt.clone(), max(1, round(self.height * factor)), max(1, round(self.width * factor)))

    @classmethod
    def look_at(
        cls,
        eye: Sequence[float] | torch.Tensor,
        target: Sequence[float] | torch.Tensor,
        up: Sequence[float] | torch.Tensor = (0.0, 1.0, 0.0),
        fov_deg: float = 30.0,
        height: int = 256,
        width: int = 256,
        dtype: torch.dtype = torch.float32,
    ) -> Camera:
        """A camera at ``eye`` looking at ``target`` with world ``up`` appearing upwards in the image.

        Args:
            eye, target, up: (3,) world points / direction.
            fov_deg: vertical field of view in degrees (square pixels, principal point at the centre).
            height, width: image size in pixels.
        """
        eye_t = torch.as_tensor(eye, dtype=torch.float64)
        z = torch.as_tensor(target, dtype=torch.float64) - eye_t
        if z.norm() < 1e-12:
            raise PalmError("camera", "eye and target coincide")
        z = z / z.norm()
        x = torch.linalg.cross(z, torch.as_tensor(up, dtype=torch.float64))
        if x.norm() < 1e-9:
            raise PalmError("camera", "up is parallel to the viewing direction")
        x = x / x.norm()
        y = torch.linalg.cross(z, x)  # image y points down (OpenCV)
        R = torch.stack([x, y, z])
        Rt = torch.eye(4, dtype=torch.float64)
        Rt[:3, :3] = R
        Rt[:3, 3] = -R @ eye_t
        f = 0.5 * height / math.tan(math.radians(fov_deg) / 2)
        K = torch.tensor([[f, 0.0, width / 2], [0.0, f, height / 2], [0.0, 0.0, 1.0]], dtype=torch.float64)
        return cls(K.to(dtype), Rt.to(dtype), int(height), int(width))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready ``{"K": 3x3 list, "Rt": 4x4 list, "height", "width"}``."""
        return {"K": self.K.tolist(), "Rt": self.Rt.tolist(), "height": int(self.height), "width": int(self.width)}

    @classmethod
    def from_dict(cls, data: dict[str, Any], path: str = "camera", dtype: torch.dtype = torch.float32) -> Camera:
        """Inverse of :meth:`to_dict`; a malformed dict raises :class:`PalmError` naming ``path``."""
        try:
            K = torch.as_tensor(data["K"], dtype=dtype)
            Rt = torch.as_tensor(data["Rt"], dtype=dtype)
            height, width = int(data["height"]), int(data["width"])
        except (KeyError, TypeError, ValueError, OverflowError) as exc:  # OverflowError: an infinite size
            raise PalmError(path, f"camera needs K (3x3), Rt (4x4), height and width ({exc})") from None
        if K.shape != (3, 3) or Rt.shape != (4, 4):
            raise PalmError(path, f"camera K must be 3x3 and Rt 4x4, got {tuple(K.shape)} and {tuple(Rt.shape)}")
        if height <= 0 or width <= 0:
            raise PalmError(path, f"camera image size must be positive, got {height}x{width}")
        if height > MAX_IMAGE_SIDE or width > MAX_IMAGE_SIDE:
            raise PalmError(path, f"camera image size {width}x{height} is beyond {MAX_IMAGE_SIDE} pixels per side")
        if not (torch.isfinite(K).all() and torch.isfinite(Rt).all()):
            raise PalmError(path, "camera K/Rt contain non-finite values")
        check_camera(K.double(), Rt.double(), path)
        return cls(K, Rt, height, width)


def check_camera(K: torch.Tensor, Rt: torch.Tensor, path: str = "camera") -> None:
    """Refuse a degenerate pinhole: focal lengths must be positive and K invertible, ``Rt`` a rigid
    transform (orthonormal rotation with determinant +1, bottom row ``0 0 0 1``).

    Args:
        K: (3, 3) intrinsics.  Rt: (4, 4) world -> camera.
    """
    if not (K[0, 0] > 0 and K[1, 1] > 0) or abs(float(torch.linalg.det(K))) < 1e-12:
        raise PalmError(path, "camera K must have positive focal lengths (K[0][0], K[1][1]) and be invertible")
    R = Rt[:3, :3]
    eye = torch.eye(3, dtype=R.dtype)
    if float((R @ R.T - eye).abs().max()) > 1e-3 or float(torch.linalg.det(R)) <= 0:
        raise PalmError(path, "camera Rt must be a rotation and translation (its 3x3 block is not a rotation)")
    if float((Rt[3] - torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=Rt.dtype)).abs().max()) > 1e-6:
        raise PalmError(path, "camera Rt's bottom row must be 0 0 0 1")


def pixel_grid(height: int, width: int, device: torch.device | str | None = None) -> torch.Tensor:
    """(H*W, 2) integer pixel coordinates ``(u, v)`` in row-major order (row ``v`` outer)."""
    v, u = torch.meshgrid(torch.arange(height, device=device), torch.arange(width, device=device), indexing="ij")
    return torch.stack([u.reshape(-1), v.reshape(-1)], dim=-1)


def pixel_rays(cam: Camera, pixels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """World rays through pixel centres.

    Args:
        cam: the camera.
        pixels: (N, 2) pixel coordinates ``(u, v)`` = (column, row); the ray passes through
            ``(u + 0.5, v + 0.5)``. ``None`` = every pixel, row-major (``N = H * W``).

    Returns:
        origins (N, 3) (the camera centre) and unit directions (N, 3), world coordinates, dtype of ``cam.K``.
    """
    if pixels is None:
        pixels = pixel_grid(cam.height, cam.width, device=cam.K.device)
    uv = pixels.to(dtype=cam.K.dtype, device=cam.K.device) + 0.5
    ones = torch.ones_like(uv[:, :1])
    d_cam = torch.cat([uv, ones], dim=-1) @ torch.linalg.inv(cam.K).T  # (N, 3)
    R = cam.Rt[:3, :3]
    dirs = d_cam @ R  # R^T d for each row
    dirs = dirs / dirs.norm(dim=-1, keepdim=True)
    origins = cam.centre.expand_as(dirs)
    return origins, dirs


def project(cam: Camera, points: torch.Tensor) -> torch.Tensor:
    """Continuous image coordinates of world points (pixel ``(u, v)`` centre = ``(u+0.5, v+0.5)``).

    Args:
        cam: the camera.
        points: (N, 3) world points (in front of the camera).

    Returns:
        (N, 2) image coordinates ``(x, y)``.
    """
    p_cam = points @ cam.Rt[:3, :3].T + cam.Rt[:3, 3]
    p_img = p_cam @ cam.K.T
    return p_img[:, :2] / p_img[:, 2:3]


def world_to_local(
    rays: tuple[torch.Tensor, torch.Tensor], w2s: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Map world rays into MANO space with ``w2s`` (spec section 2).

    Args:
        rays: ``(origins (N, 3), dirs (N, 3))`` in world coordinates.
        w2s: (4, 4) world -> MANO-space transform, or (N, 4, 4) one per ray.

    Returns:
        ``(origins (N, 3), dirs (N, 3))`` in MANO space; ``w2s(o + t d) = o' + t d'``.
    """
    origins, dirs = rays
    if w2s.dim() == 2:
        R, t = w2s[:3, :3], w2s[:3, 3]
        return origins @ R.T + t, dirs @ R.T
    R, t = w2s[:, :3, :3], w2s[:, :3, 3]
    return torch.einsum("nij,nj->ni", R, origins) + t, torch.einsum("nij,nj->ni", R, dirs)


def local_dirs_to_world(dirs: torch.Tensor, w2s: torch.Tensor) -> torch.Tensor:
    """Map MANO-space directions (or normals) back to world with the rotation of ``w2s^-1``.

    Args:
        dirs: (N, 3) directions in MANO space.
        w2s: (4, 4) or (N, 4, 4) rigid world -> MANO-space transform.

    Returns:
        (N, 3) world directions.
    """
    if w2s.dim() == 2:
        return dirs @ w2s[:3, :3]
    return torch.einsum("nji,nj->ni", w2s[:, :3, :3], dirs)
