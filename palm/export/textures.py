"""UV atlas, tangent frames and baked PBR textures of a :class:`palm.bake.BakedAvatar`.

:func:`build_atlas` unwraps the mesh with ``xatlas``; :func:`bake_textures` rasterises the
per-vertex material into the atlas (:func:`palm.render.raster.rasterize` in texture space) and
dilates it over the empty texels; :func:`vertex_tangents` gives the glTF ``TANGENT`` frames the
normal texture is expressed in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from palm.bake import BakedAvatar
from palm.imageio import to_srgb8
from palm.render.raster import rasterize


@dataclass
class UVAtlas:
    """A UV parameterisation from ``xatlas``: the mesh split at chart seams."""

    vmapping: np.ndarray
    """(V', ) int64: original vertex of each atlas vertex."""
    faces: np.ndarray
    """(F, 3) int64 faces into atlas vertices (same order as the input faces)."""
    uv: np.ndarray
    """(V', 2) float32 in [0, 1], glTF convention (origin top-left, v down)."""


def build_atlas(vertices: np.ndarray, faces: np.ndarray, texture_res: int = 1024, padding: int = 4) -> UVAtlas:
    """Generate a UV atlas with ``xatlas`` (charts packed for a ``texture_res`` square texture).

    Args:
        vertices: (V, 3) positions.
        faces: (F, 3) indices.
        texture_res: texture side in texels the packing is for.
        padding: texels between charts.

    Returns:
        The atlas (vertices split at seams; face order preserved).
    """
    import xatlas

    atlas = xatlas.Atlas()
    atlas.add_mesh(np.ascontiguousarray(vertices, np.float32), np.ascontiguousarray(faces, np.uint32))
    pack = xatlas.PackOptions()
    pack.resolution = int(texture_res)
    pack.padding = int(padding)
    pack.bilinear = True
    atlas.generate(pack_options=pack)
    vmapping, indices, uv = atlas[0]
    return UVAtlas(vmapping.astype(np.int64), indices.astype(np.int64), uv.astype(np.float32))


def vertex_tangents(vertices: np.ndarray, normals: np.ndarray, uv: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Per-vertex tangent frames from UV derivatives (the glTF ``TANGENT`` attribute).

    The tangent follows ``+u``; ``w = +-1`` gives the bitangent ``cross(n, t) * w``, which follows
    ``+v`` of the texture's rows. Degenerate UVs fall back to any unit vector orthogonal to ``n``.

    Args:
        vertices: (V, 3), normals: (V, 3) unit, uv: (V, 2), faces: (F, 3).

    Returns:
        (V, 4) float32: unit xyz orthogonal to the normal, w in {-1, +1}.
    """
    v, n, t = vertices.astype(np.float64), normals.astype(np.float64), uv.astype(np.float64)
    dp1, dp2 = v[faces[:, 1]] - v[faces[:, 0]], v[faces[:, 2]] - v[faces[:, 0]]
    d1, d2 = t[faces[:, 1]] - t[faces[:, 0]], t[faces[:, 2]] - t[faces[:, 0]]
    det = d1[:, 0] * d2[:, 1] - d2[:, 0] * d1[:, 1]
    r = np.where(np.abs(det) > 1e-20, 1.0 / np.where(det == 0, 1.0, det), 0.0)[:, None]
    face_t = (dp1 * d2[:, 1:2] - dp2 * d1[:, 1:2]) * r
    face_b = (dp2 * d1[:, 0:1] - dp1 * d2[:, 0:1]) * r
    tan, bit = np.zeros_like(v), np.zeros_like(v)
    for k in range(3):
        np.add.at(tan, faces[:, k], face_t)
        np.add.at(bit, faces[:, k], face_b)
    tan -= n * (n * tan).sum(1, keepdims=True)
    length = np.linalg.norm(tan, axis=1, keepdims=True)
    fallback = np.cross(n, np.where(np.abs(n[:, :1]) < 0.9, [[1.0, 0.0, 0.0]], [[0.0, 1.0, 0.0]]))
    tan = np.where(length > 1e-12, tan / np.maximum(length, 1e-30), fallback)
    tan /= np.linalg.norm(tan, axis=1, keepdims=True)
    w = np.where((np.cross(n, tan) * bit).sum(1) < 0.0, -1.0, 1.0)
    return np.concatenate([tan, w[:, None]], axis=1).astype(np.float32)


def atlas_texels(atlas: UVAtlas, res: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The texels whose centres lie in a chart of the atlas (a ``res`` x ``res`` texture).

    Rasterised in texture space by :func:`palm.render.raster.rasterize` (orthographic, float64:
    the edge functions stay exact at any texture size); texel row 0 is ``v = 0`` (glTF).

    Returns:
        pix (N,) int64 flat texel indices ``row * res + col``, tri (N,) int64 atlas faces,
        bary (N, 3) float32 barycentrics of the face's atlas vertices.
    """
    uv = torch.as_tensor(atlas.uv, dtype=torch.float64) * res
    screen = torch.cat([uv, torch.ones(len(uv), 1, dtype=torch.float64)], dim=1)[None]  # (1, V', 3)
    frags = rasterize(screen, torch.as_tensor(atlas.faces), res, res, perspective=False)
    face = frags.face_id.reshape(-1)
    pix = torch.nonzero(face >= 0).squeeze(1)
    bary = frags.bary.reshape(-1, 3)[pix]
    return pix.numpy(), face[pix].numpy(), bary.to(torch.float32).numpy()


@dataclass
class BakedTextures:
    """Texture images of an atlas (row 0 = ``v = 0``)."""

    base_color: np.ndarray
    """(R, R, 3) uint8 sRGB albedo."""
    metallic_roughness: np.ndarray
    """(R, R, 3) uint8 linear: G = roughness, B = metallic (R unused, 0)."""
    normal: np.ndarray
    """(R, R, 3) uint8 tangent-space normals ``(n + 1) / 2``."""
    coverage: float
    """Fraction of texels covered by charts (before dilation)."""


def bake_textures(
    avatar: BakedAvatar,
    atlas: UVAtlas,
    tangents: np.ndarray,
    texture_res: int = 1024,
    detail_normals: Callable[[np.ndarray], np.ndarray] | None = None,
) -> BakedTextures:
    """Rasterise the per-vertex material into the atlas and dilate it over the empty texels.

    Every empty texel takes the value of its nearest covered texel (Euclidean distance transform),
    so bilinear filtering and mip-mapping never pull background into the charts (no seams).

    Args:
        avatar: the baked avatar (per-vertex albedo, roughness, metallic, normals).
        atlas: its UV atlas.
        tangents: (V', 4) atlas-vertex tangents (:func:`vertex_tangents`).
        texture_res: texture side R.
        detail_normals: optional ``f(points (N, 3) canonical) -> (N, 3)`` finer unit normals (e.g.
            the SDF gradient of the neural avatar). Without it the normal texture is flat
            ``(0.5, 0.5, 1)``: the mesh's own vertex normals already carry all the avatar's detail.

    Returns:
        The three 8-bit textures.
    """
    from scipy.ndimage import distance_transform_edt

    res = int(texture_res)
    vm = atlas.vmapping
    pix, tri, bary = atlas_texels(atlas, res)
    corners = atlas.faces[tri]  # (N, 3) atlas vertices

    def interp(values: np.ndarray) -> np.ndarray:
        return np.einsum("nk,nkc->nc", bary, values[corners].astype(np.float32))

    attrs = np.concatenate([avatar.albedo[vm], avatar.roughness[vm, None], avatar.metallic[vm, None]], axis=1)
    material = interp(attrs)  # (N, 5)
    if detail_normals is not None and len(pix):
        n = interp(avatar.normals[vm])
        t = interp(tangents[:, :3])
        w = tangents[corners[:, 0], 3:4]
        n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
        t -= n * (n * t).sum(1, keepdims=True)
        t /= np.maximum(np.linalg.norm(t, axis=1, keepdims=True), 1e-12)
        b = np.cross(n, t) * w
        d = np.asarray(detail_normals(interp(avatar.vertices[vm])), np.float32)
        d /= np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-12)
        ts = np.stack([(d * t).sum(1), (d * b).sum(1), (d * n).sum(1)], axis=1)
        ts[:, 2] = np.maximum(ts[:, 2], 1e-3)
        ts /= np.linalg.norm(ts, axis=1, keepdims=True)
    else:
        ts = np.tile(np.array([[0.0, 0.0, 1.0]], np.float32), (len(pix), 1))

    planes = np.zeros((res * res, 8), np.float32)
    planes[pix, :5] = material
    planes[pix, 5:] = ts
    covered = np.zeros(res * res, bool)
    covered[pix] = True
    planes, covered = planes.reshape(res, res, 8), covered.reshape(res, res)
    if covered.any() and not covered.all():
        _, (iy, ix) = distance_transform_edt(~covered, return_indices=True)
        planes = planes[iy, ix]
    elif not covered.any():
        planes[..., :5] = np.concatenate([avatar.albedo.mean(0), [avatar.roughness.mean(), avatar.metallic.mean()]])
        planes[..., 5:] = (0.0, 0.0, 1.0)

    base = to_srgb8(planes[..., :3])
    mr = np.zeros((res, res, 3), np.uint8)
    mr[..., 1] = np.round(np.clip(planes[..., 3], 0, 1) * 255)
    mr[..., 2] = np.round(np.clip(planes[..., 4], 0, 1) * 255)
    normal = np.round(np.clip((planes[..., 5:] + 1.0) * 0.5, 0, 1) * 255).astype(np.uint8)
    return BakedTextures(base, mr, normal, float(covered.mean()))

