"""Equirectangular maps: the one direction convention, pixel directions and solid angles.

Direction convention (``docs/architecture.md``; the only place it is implemented): world "up" is
``+y``; a unit direction ``w = (x, y, z)`` maps to

    u = atan2(x, z) / (2 pi) + 0.5,   v = asin(y) / pi + 0.5,   image row = (1 - v) * H,
    image column = u * W,

so row 0 of an equirect image is the sky (``+y``) and the image centre looks along ``+z``
(``u = 0.5``). Pixel centres sit at ``(col + 0.5, row + 0.5)``. Reading HDR files lives in
:mod:`palm.imageio`; turning a preset or file into SG light in :mod:`palm.render.environment`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

# ---------------------------------------------------------------------------------------------
# Direction convention
# ---------------------------------------------------------------------------------------------


def dir_to_uv(dirs: Any) -> Any:
    """Equirect texture coordinates of world directions.

    Args:
        dirs: ``(..., 3)`` directions (torch or numpy; need not be unit length).

    Returns:
        ``(..., 2)`` ``(u, v)`` in ``[0, 1]``; ``u = atan2(x, z)/2pi + 0.5``, ``v = asin(y)/pi + 0.5``.
    """
    if isinstance(dirs, torch.Tensor):
        d = dirs / dirs.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        u = torch.atan2(d[..., 0], d[..., 2]) / (2 * math.pi) + 0.5
        v = torch.asin(d[..., 1].clamp(-1.0, 1.0)) / math.pi + 0.5
        return torch.stack([u, v], dim=-1)
    d = np.asarray(dirs, dtype=np.float64)
    d = d / np.maximum(np.linalg.norm(d, axis=-1, keepdims=True), 1e-12)
    u = np.arctan2(d[..., 0], d[..., 2]) / (2 * np.pi) + 0.5
    v = np.arcsin(np.clip(d[..., 1], -1.0, 1.0)) / np.pi + 0.5
    return np.stack([u, v], axis=-1)


def uv_to_dir(uv: Any) -> Any:
    """Unit world directions of equirect texture coordinates (inverse of :func:`dir_to_uv`).

    Args:
        uv: ``(..., 2)`` texture coordinates (torch or numpy).

    Returns:
        ``(..., 3)`` unit directions.
    """
    if isinstance(uv, torch.Tensor):
        lon = (uv[..., 0] - 0.5) * (2 * math.pi)
        lat = (uv[..., 1] - 0.5) * math.pi
        cos_lat = torch.cos(lat)
        return torch.stack([cos_lat * torch.sin(lon), torch.sin(lat), cos_lat * torch.cos(lon)], dim=-1)
    uv = np.asarray(uv, dtype=np.float64)
    lon = (uv[..., 0] - 0.5) * (2 * np.pi)
    lat = (uv[..., 1] - 0.5) * np.pi
    cos_lat = np.cos(lat)
    return np.stack([cos_lat * np.sin(lon), np.sin(lat), cos_lat * np.cos(lon)], axis=-1)


def equirect_dirs(height: int, width: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Unit directions through the pixel centres of an equirect image.

    Returns:
        ``(H, W, 3)`` directions; row 0 is next to ``+y``.
    """
    u = (torch.arange(width, dtype=torch.float64) + 0.5) / width
    v = 1.0 - (torch.arange(height, dtype=torch.float64) + 0.5) / height
    uv = torch.stack(torch.meshgrid(u, v, indexing="xy"), dim=-1)  # (H, W, 2)
    return uv_to_dir(uv).to(dtype)


def solid_angles(height: int, width: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Exact solid angle (steradians) of each pixel of an equirect image; they sum to ``4 pi``.

    Returns:
        ``(H, W)`` solid angles.
    """
    edges = math.pi / 2 - torch.arange(height + 1, dtype=torch.float64) * (math.pi / height)  # latitudes
    band = torch.sin(edges[:-1]) - torch.sin(edges[1:])  # (H,)
    return (band[:, None] * (2 * math.pi / width)).expand(height, width).to(dtype).contiguous()


def downsample_equirect(image: Any, height: int) -> torch.Tensor:
    """Solid-angle-weighted area average of an equirect map to ``height x 2*height`` pixels.

    Each output pixel holds the mean radiance over the input pixels it covers, weighted by their
    solid angle, so the integral of radiance over the sphere is preserved. A map that is already
    that size (or smaller) is returned unchanged (as float32).

    Args:
        image: ``(H, W, C)`` linear map (numpy or torch), ``W == 2 H`` expected.
        height: output height ``h``.

    Returns:
        ``(h, 2h, C)`` float32 tensor.
    """
    img = torch.as_tensor(np.asarray(image) if not isinstance(image, torch.Tensor) else image)
    img = img.to(torch.float64)
    h_in, w_in = img.shape[:2]
    width = 2 * height
    if h_in <= height and w_in <= width:
        return img.to(torch.float32)
    w = solid_angles(h_in, w_in, dtype=torch.float64)[None, None]  # (1,1,H,W)
    chw = img.permute(2, 0, 1)[None]  # (1,C,H,W)
    num = torch.nn.functional.adaptive_avg_pool2d(chw * w, (height, width))
    den = torch.nn.functional.adaptive_avg_pool2d(w, (height, width))
    return (num / den)[0].permute(1, 2, 0).to(torch.float32).contiguous()
