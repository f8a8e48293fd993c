"""Export: images (PNG/EXR), meshes (OBJ/PLY/skinned PBR glTF), turntables and environments.

Everything here takes a :class:`palm.bake.BakedAvatar` (a canonical skinned mesh with per-vertex
PBR material) and writes files other tools open:

- :func:`write_image`: PNG (tone-mapped sRGB, 8-bit, with alpha) or EXR (linear float32 RGBA).
- :func:`export_mesh`: OBJ (+MTL + textures), PLY (optional vertex colours) or GLB. The GLB is
  written by this module (``json`` + ``struct``) so that it carries a skin (the 16 joints as a node
  hierarchy, inverse bind matrices, top-4 ``JOINTS_0``/``WEIGHTS_0``) and a metallic-roughness
  material with baseColor, metallicRoughness and normal textures in an ``xatlas`` UV atlas.
- :func:`raster_render`: a CPU z-buffer rasteriser of the posed avatar shaded under SG light.
- :func:`export_turntable`: MP4 (imageio-ffmpeg) or GIF (pillow) of ``frames`` rendered views.
- :func:`export_env`: an SG environment as an equirect EXR or as JSON.

Every file goes through :func:`palm.io.atomic_write`.
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from palm.bake import BakedAvatar, _numpy
from palm.errors import PalmError
from palm.imageio import png_bytes, to_srgb8, write_exr, write_png
from palm.io import atomic_write, check_output_path
from palm.jobs import Emit, Progress, check_cancel, null_emit

MESH_EXTENSIONS = (".glb", ".obj", ".ply")
VIDEO_EXTENSIONS = (".mp4", ".gif")
ENV_EXTENSIONS = (".exr", ".json")

# ---------------------------------------------------------------------------------------------
# Posing (linear blend skinning of the baked avatar)
# ---------------------------------------------------------------------------------------------


def bone_transforms(hand: Any, pose: Any, betas: Any = None) -> np.ndarray:
    """LBS transforms rest (shaped, flat) -> posed of the hand rig.

    Args:
        hand: a ``palm.hand.HandModel``.
        pose: (16, 3) axis-angle (row 0 global orientation).
        betas: (n_betas,) shape or None.

    Returns:
        (16, 4, 4) float64.
    """
    import torch

    pose_t = torch.as_tensor(np.asarray(_numpy(pose), np.float32).reshape(1, 16, 3))
    betas_t = None if betas is None else torch.as_tensor(np.asarray(_numpy(betas), np.float32).reshape(1, -1))
    with torch.no_grad():
        out = hand(pose=pose_t, betas=betas_t)
    return _numpy(out.bone_transforms).reshape(16, 4, 4).astype(np.float64)


def skin_vertices(
    vertices: np.ndarray, normals: np.ndarray, weights: np.ndarray, bones: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Linear blend skinning of points and normals.

    Args:
        vertices: (V, 3) canonical positions.
        normals: (V, 3) canonical unit normals.
        weights: (V, J) skin weights (rows sum to 1).
        bones: (J, 4, 4) bone transforms.

    Returns:
        Posed (V, 3) positions and (V, 3) unit normals, float32.
    """
    blend = np.einsum("vj,jab->vab", weights.astype(np.float64), bones)  # (V, 4, 4)
    posed = np.einsum("vab,vb->va", blend[:, :3, :3], vertices) + blend[:, :3, 3]
    n = np.einsum("vab,vb->va", blend[:, :3, :3], normals)
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
    return posed.astype(np.float32), n.astype(np.float32)


def posed_avatar(avatar: BakedAvatar, pose: Any, hand: Any, betas: Any = None) -> BakedAvatar:
    """A display copy with ``pose`` baked into vertices, normals and joints (``pose=None``: as is)."""
    if pose is None:
        return avatar
    return _apply_bones(avatar, bone_transforms(hand, pose, betas))


# ---------------------------------------------------------------------------------------------
# Triangle rasterisation (UV atlas and screen space share it)
# ---------------------------------------------------------------------------------------------


def rasterize(
    xy: np.ndarray, height: int, width: int, depth: np.ndarray | None = None, chunk: int = 1 << 22
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Find the pixels whose centres ``(x + 0.5, y + 0.5)`` lie inside each triangle.

    Triangles are processed in batches: every pixel of each triangle's bounding box is tested with
    the three edge functions at once (vectorised numpy).

    Args:
        xy: (F, 3, 2) vertex positions in continuous pixel coordinates (x right, y down).
        height, width: image size.
        depth: (F, 3) positive view depths, or None. With depth, barycentrics are perspective
            correct and only the nearest fragment of each pixel is kept (z-buffer); without,
            one fragment per pixel is kept (for non-overlapping UV charts).
        chunk: most candidate pixels tested at once.

    Returns:
        pix (N,) int64 flat pixel indices ``y * width + x`` (unique), tri (N,) int64 triangle
        indices, bary (N, 3) float32 barycentric weights of the triangle's vertices.
    """
    xy = np.asarray(xy, np.float64)
    p0, p1, p2 = xy[:, 0], xy[:, 1], xy[:, 2]
    area = (p1[:, 0] - p0[:, 0]) * (p2[:, 1] - p0[:, 1]) - (p1[:, 1] - p0[:, 1]) * (p2[:, 0] - p0[:, 0])
    lo = np.ceil(xy.min(axis=1) - 0.5).astype(np.int64)
    hi = np.floor(xy.max(axis=1) - 0.5).astype(np.int64)
    lo = np.maximum(lo, 0)
    hi = np.minimum(hi, np.array([width - 1, height - 1]))
    size = np.maximum(hi - lo + 1, 0)
    count = size[:, 0] * size[:, 1]
    keep = np.nonzero((count > 0) & (np.abs(area) > 1e-12))[0]
    # Edge function of the edge opposite vertex k, (b - a) x (p - a), over the signed area: the
    # barycentric weight of vertex k, linear in p: A x + B y + C (either winding).
    coef = np.empty((len(xy), 3, 3))
    for k, (a, b) in enumerate(((p1, p2), (p2, p0), (p0, p1))):
        coef[:, k, 0] = -(b[:, 1] - a[:, 1])
        coef[:, k, 1] = b[:, 0] - a[:, 0]
        coef[:, k, 2] = (b[:, 1] - a[:, 1]) * a[:, 0] - (b[:, 0] - a[:, 0]) * a[:, 1]
    coef /= np.where(np.abs(area) > 1e-12, area, 1.0)[:, None, None]
    # Re-centre on each bounding box's first pixel centre: float32 then stays accurate at any size.
    coef[:, :, 2] += coef[:, :, 0] * (lo[:, None, 0] + 0.5) + coef[:, :, 1] * (lo[:, None, 1] + 0.5)
    coef = coef.astype(np.float32)
    inv_depth = None if depth is None else (1.0 / np.asarray(depth, np.float64)).astype(np.float32)

    out_pix, out_tri, out_bary, out_z = [], [], [], []
    bounds = np.cumsum(count[keep])
    start = 0
    while start < len(keep):
        stop = int(np.searchsorted(bounds, (bounds[start - 1] if start else 0) + chunk, side="right"))
        stop = max(stop, start + 1)
        tris = keep[start:stop]
        start = stop
        n = count[tris]
        tri = np.repeat(tris, n)
        offset = (np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)).astype(np.int32)
        w = size[tri, 0].astype(np.int32)
        lx, ly = offset % w, offset // w
        c = coef[tri]  # (N, 3, 3)
        bary = c[:, :, 0] * lx[:, None].astype(np.float32) + c[:, :, 1] * ly[:, None].astype(np.float32) + c[:, :, 2]
        inside = (bary >= -1e-6).all(axis=1)
        tri, bary = tri[inside], bary[inside]
        px = lo[tri, 0] + lx[inside]
        py = lo[tri, 1] + ly[inside]
        pix = py * width + px
        if inv_depth is not None:
            bw = bary * inv_depth[tri]
            z = 1.0 / bw.sum(axis=1)
            bary = bw * z[:, None]
            first = _first_per_key(pix, z)
            out_z.append(z[first])
        else:
            first = _first_per_key(pix, None)
        out_pix.append(pix[first]), out_tri.append(tri[first]), out_bary.append(bary[first])
    if not out_pix:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 3), np.float32)
    pix, tri, bary = np.concatenate(out_pix), np.concatenate(out_tri), np.concatenate(out_bary)
    first = _first_per_key(pix, np.concatenate(out_z) if out_z else None)
    bary = np.clip(bary[first], 0.0, None)
    return pix[first], tri[first], (bary / bary.sum(axis=1, keepdims=True)).astype(np.float32)


def _first_per_key(key: np.ndarray, z: np.ndarray | None) -> np.ndarray:
    """Indices of one entry per distinct ``key``: the smallest ``z`` (or the first) of each."""
    order = np.lexsort((z, key)) if z is not None else np.argsort(key, kind="stable")
    sorted_key = key[order]
    first = np.ones(len(order), bool)
    first[1:] = sorted_key[1:] != sorted_key[:-1]
    return order[first]


# ---------------------------------------------------------------------------------------------
# UV atlas and texture baking
# ---------------------------------------------------------------------------------------------


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
    xy = atlas.uv[atlas.faces] * res  # (F, 3, 2)
    pix, tri, bary = rasterize(xy, res, res)
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


# ---------------------------------------------------------------------------------------------
# Mesh export
# ---------------------------------------------------------------------------------------------


def export_mesh(
    path: str | os.PathLike,
    avatar: BakedAvatar,
    pose: Any = None,
    hand: Any = None,
    betas: Any = None,
    texture_res: int = 1024,
    vertex_colors: bool = False,
    detail_normals: Callable[[np.ndarray], np.ndarray] | None = None,
) -> dict[str, Any]:
    """Write the avatar as ``.obj`` (+ ``.mtl`` + PNG textures), ``.ply`` or ``.glb``.

    Posed export: OBJ/PLY get the pose baked into their vertices; the GLB stays bound to the rest
    pose and gets the pose as its joints' node transforms, so it shows posed and still animates.

    Args:
        path: output file; its extension picks the format.
        avatar: the canonical baked avatar (metres).
        pose: (16, 3) axis-angle or None for the canonical (flat) hand.
        hand: the hand rig (needed when ``pose`` is given).
        betas: the rig's shape coefficients for the pose's bone transforms.
        texture_res: side of the square textures (OBJ and GLB).
        vertex_colors: add sRGB vertex colours (OBJ ``v x y z r g b``, PLY ``red green blue``,
            GLB ``COLOR_0``).
        detail_normals: optional finer normals for the normal texture (see :func:`bake_textures`).

    Returns:
        A summary: ``path``, ``format``, ``vertices`` (in the file), ``faces``, and for textured
        formats ``atlas_vertices`` and ``texture_coverage``.
    """
    path = check_output_path(path, MESH_EXTENSIONS)
    fmt = path.suffix.lower()[1:]
    if pose is not None and hand is None:
        raise PalmError("--pose", "posing the mesh needs the hand rig")
    bones = None if pose is None else bone_transforms(hand, pose, betas)
    summary: dict[str, Any] = {"path": str(path), "format": fmt, "faces": len(avatar.faces)}
    if fmt == "ply":
        shown = avatar if bones is None else _apply_bones(avatar, bones)
        _write_ply(path, shown, vertex_colors)
        summary["vertices"] = len(shown.vertices)
        return summary

    atlas = build_atlas(avatar.vertices, avatar.faces, texture_res)
    tangents = vertex_tangents(avatar.vertices[atlas.vmapping], avatar.normals[atlas.vmapping], atlas.uv, atlas.faces)
    textures = bake_textures(avatar, atlas, tangents, texture_res, detail_normals)
    summary.update(atlas_vertices=len(atlas.vmapping), texture_coverage=textures.coverage)
    if fmt == "obj":
        shown = avatar if bones is None else _apply_bones(avatar, bones)
        _write_obj(path, shown, atlas, textures, vertex_colors)
        summary["vertices"] = len(atlas.vmapping)
    else:
        _write_glb(path, avatar, atlas, tangents, textures, bones, vertex_colors)
        summary["vertices"] = len(atlas.vmapping)
    return summary


def _apply_bones(avatar: BakedAvatar, bones: np.ndarray) -> BakedAvatar:
    verts, normals = skin_vertices(avatar.vertices, avatar.normals, avatar.skin_weights, bones)
    joints = np.einsum("jab,jb->ja", bones[:, :3, :3], avatar.joints) + bones[:, :3, 3]
    return BakedAvatar(
        **{**avatar.__dict__, "vertices": verts, "normals": normals, "joints": joints.astype(np.float32)}
    )


def _write_ply(path: Path, avatar: BakedAvatar, vertex_colors: bool) -> None:
    """Binary little-endian PLY: positions, normals, optional uchar sRGB colours, triangle faces."""
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("nx", "<f4"), ("ny", "<f4"), ("nz", "<f4")]
    if vertex_colors:
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    vert = np.zeros(len(avatar.vertices), dtype=fields)
    for k, name in enumerate("xyz"):
        vert[name] = avatar.vertices[:, k]
        vert["n" + name] = avatar.normals[:, k]
    if vertex_colors:
        rgb = to_srgb8(avatar.albedo[None])[0]
        vert["red"], vert["green"], vert["blue"] = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    face = np.zeros(len(avatar.faces), dtype=[("n", "u1"), ("i", "<i4", (3,))])
    face["n"] = 3
    face["i"] = avatar.faces
    props = "".join(f"property {'float' if dt == '<f4' else 'uchar'} {name}\n" for name, dt in fields)
    header = (
        "ply\nformat binary_little_endian 1.0\ncomment palm-studio baked hand avatar (metres)\n"
        f"element vertex {len(vert)}\n{props}"
        f"element face {len(face)}\nproperty list uchar int vertex_indices\nend_header\n"
    )
    with atomic_write(path) as tmp, open(tmp, "wb") as fh:
        fh.write(header.encode("ascii"))
        fh.write(vert.tobytes())
        fh.write(face.tobytes())


def _write_obj(path: Path, avatar: BakedAvatar, atlas: UVAtlas, textures: BakedTextures, vertex_colors: bool) -> None:
    """OBJ with shared positions/normals, atlas UVs (``vt``), an MTL and PNG textures beside it.

    The MTL uses the common PBR extension (``Pr``/``Pm``, ``map_Pr``/``map_Pm``, ``norm``) besides
    ``map_Kd``; readers that do not know it keep the albedo texture.
    """
    stem = path.stem
    tex = {
        "albedo": textures.base_color,
        "roughness": textures.metallic_roughness[..., 1],
        "metallic": textures.metallic_roughness[..., 2],
        "normal": textures.normal,
    }
    for name, image in tex.items():
        write_png(path.with_name(f"{stem}_{name}.png"), image)
    mtl = (
        "# palm-studio baked hand avatar\nnewmtl skin\nKa 0 0 0\nKd 1 1 1\nKs 0 0 0\nd 1\nillum 1\n"
        f"Pr {float(avatar.roughness.mean()):.4f}\nPm {float(avatar.metallic.mean()):.4f}\n"
        f"map_Kd {stem}_albedo.png\nmap_Pr {stem}_roughness.png\nmap_Pm {stem}_metallic.png\n"
        f"norm {stem}_normal.png\n"
    )
    with atomic_write(path.with_suffix(".mtl")) as tmp:
        tmp.write_text(mtl)
    lines = [f"# palm-studio baked hand avatar (metres)\nmtllib {stem}.mtl\no hand\n"]
    if vertex_colors:
        rgb = to_srgb8(avatar.albedo[None])[0] / 255.0
        lines += [
            f"v {a:.6f} {b:.6f} {c:.6f} {r:.4f} {g:.4f} {s:.4f}\n" for (a, b, c), (r, g, s) in zip(avatar.vertices, rgb)
        ]
    else:
        lines += [f"v {a:.6f} {b:.6f} {c:.6f}\n" for a, b, c in avatar.vertices]
    lines += [f"vt {u:.6f} {1.0 - v:.6f}\n" for u, v in atlas.uv]  # OBJ: origin bottom-left
    lines += [f"vn {a:.5f} {b:.5f} {c:.5f}\n" for a, b, c in avatar.normals]
    lines.append("usemtl skin\ns 1\n")
    pos = avatar.faces.astype(np.int64) + 1
    uv = atlas.faces + 1
    lines += [f"f {p[0]}/{t[0]}/{p[0]} {p[1]}/{t[1]}/{p[1]} {p[2]}/{t[2]}/{p[2]}\n" for p, t in zip(pos, uv)]
    with atomic_write(path) as tmp:
        tmp.write_text("".join(lines))


# --- glTF 2.0 binary -------------------------------------------------------------------------

_FLOAT, _UBYTE, _USHORT, _UINT = 5126, 5121, 5123, 5125
_ARRAY_BUFFER, _ELEMENT_ARRAY_BUFFER = 34962, 34963
_GLB_MAGIC, _CHUNK_JSON, _CHUNK_BIN = 0x46546C67, 0x4E4F534A, 0x004E4942


class _GltfBuffer:
    """Accumulates buffer views and accessors of one binary buffer (4-byte aligned)."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.views: list[dict[str, Any]] = []
        self.accessors: list[dict[str, Any]] = []

    def view(self, payload: bytes, target: int | None = None) -> int:
        self.data.extend(b"\0" * (-len(self.data) % 4))
        view: dict[str, Any] = {"buffer": 0, "byteOffset": len(self.data), "byteLength": len(payload)}
        if target is not None:
            view["target"] = target
        self.data.extend(payload)
        self.views.append(view)
        return len(self.views) - 1

    def accessor(
        self, array: np.ndarray, component: int, kind: str, target: int | None = None, minmax: bool = False
    ) -> int:
        dtype = {_FLOAT: "<f4", _UBYTE: "u1", _USHORT: "<u2", _UINT: "<u4"}[component]
        array = np.ascontiguousarray(array, dtype=dtype)
        acc: dict[str, Any] = {
            "bufferView": self.view(array.tobytes(), target),
            "componentType": component,
            "count": int(array.shape[0]),
            "type": kind,
        }
        if minmax:
            flat = array.reshape(len(array), -1)
            acc["min"] = [float(x) for x in flat.min(0)]
            acc["max"] = [float(x) for x in flat.max(0)]
        self.accessors.append(acc)
        return len(self.accessors) - 1


def _quat_xyzw(rot: np.ndarray) -> list[float]:
    """Unit quaternion ``[x, y, z, w]`` (glTF order, ``w >= 0``) of a 3x3 rotation."""
    u, _, vt = np.linalg.svd(rot)
    r = u @ vt  # nearest rotation
    tr = np.trace(r)
    if tr > 0:
        s = 2.0 * math.sqrt(1.0 + tr)
        q = [(r[2, 1] - r[1, 2]) / s, (r[0, 2] - r[2, 0]) / s, (r[1, 0] - r[0, 1]) / s, 0.25 * s]
    else:
        i = int(np.argmax(np.diag(r)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2.0 * math.sqrt(max(1.0 + r[i, i] - r[j, j] - r[k, k], 1e-300))
        q = [0.0, 0.0, 0.0, (r[k, j] - r[j, k]) / s]
        q[i] = 0.25 * s
        q[j] = (r[j, i] + r[i, j]) / s
        q[k] = (r[k, i] + r[i, k]) / s
    q = np.asarray(q)
    q = q / np.linalg.norm(q)
    if q[3] < 0:
        q = -q
    return [float(x) for x in q]


def joint_node_transforms(joints: np.ndarray, parents: np.ndarray, bones: np.ndarray | None) -> list[np.ndarray]:
    """Local 4x4 transforms of the joint nodes (rest: pure translations between rest joints).

    With bone transforms ``B_j`` the posed joint frame is ``G_j = B_j T(J_j)`` (the rest frames are
    axis-aligned at the rest joints, matching the inverse bind matrices ``T(-J_j)``), and the node's
    local transform is ``G_parent^-1 G_j``; skinning then reproduces the rig's LBS exactly.

    Args:
        joints: (16, 3) rest joints; parents: (16,); bones: (16, 4, 4) or None.

    Returns:
        16 local (4, 4) float64 matrices.
    """
    frames = np.tile(np.eye(4), (len(joints), 1, 1))
    frames[:, :3, 3] = joints
    if bones is not None:
        frames = bones @ frames
    local = []
    for j, p in enumerate(parents):
        local.append(frames[j] if p < 0 else np.linalg.inv(frames[p]) @ frames[j])
    return local


def top4_weights(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 4 largest skin weights of each vertex, renormalised to sum to 1.

    Args:
        weights: (V, J) non-negative.

    Returns:
        joints (V, 4) uint8 (or uint16 when J > 256), weights (V, 4) float32 (zero weights get
        joint 0).
    """
    order = np.argsort(-weights, axis=1, kind="stable")[:, :4]
    w = np.take_along_axis(weights, order, axis=1).astype(np.float64)
    w = np.maximum(w, 0.0)
    w /= np.maximum(w.sum(1, keepdims=True), 1e-12)
    w = w.astype(np.float32)
    w[:, 0] = 1.0 - w[:, 1:].sum(1)  # exact float32 normalisation (the largest absorbs rounding)
    idx = np.where(w > 0, order, 0)
    return idx.astype(np.uint8 if weights.shape[1] <= 256 else np.uint16), w


def _write_glb(
    path: Path,
    avatar: BakedAvatar,
    atlas: UVAtlas,
    tangents: np.ndarray,
    textures: BakedTextures,
    bones: np.ndarray | None,
    vertex_colors: bool,
) -> None:
    vm = atlas.vmapping
    n_joints = len(avatar.joints)
    buf = _GltfBuffer()
    normals = avatar.normals[vm].astype(np.float64)
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    joint_idx, joint_w = top4_weights(avatar.skin_weights[vm])
    attributes = {
        "POSITION": buf.accessor(avatar.vertices[vm], _FLOAT, "VEC3", _ARRAY_BUFFER, minmax=True),
        "NORMAL": buf.accessor(normals, _FLOAT, "VEC3", _ARRAY_BUFFER),
        "TANGENT": buf.accessor(tangents, _FLOAT, "VEC4", _ARRAY_BUFFER),
        "TEXCOORD_0": buf.accessor(atlas.uv, _FLOAT, "VEC2", _ARRAY_BUFFER),
        "JOINTS_0": buf.accessor(joint_idx, _UBYTE if joint_idx.dtype == np.uint8 else _USHORT, "VEC4", _ARRAY_BUFFER),
        "WEIGHTS_0": buf.accessor(joint_w, _FLOAT, "VEC4", _ARRAY_BUFFER),
    }
    if vertex_colors:
        attributes["COLOR_0"] = buf.accessor(np.clip(avatar.albedo[vm], 0, 1), _FLOAT, "VEC3", _ARRAY_BUFFER)
    n_vertices = len(vm)
    index_type = _USHORT if n_vertices < 65535 else _UINT
    indices = buf.accessor(atlas.faces.reshape(-1), index_type, "SCALAR", _ELEMENT_ARRAY_BUFFER, minmax=True)

    ibm = np.tile(np.eye(4), (n_joints, 1, 1))
    ibm[:, :3, 3] = -avatar.joints.astype(np.float64)
    ibm_acc = buf.accessor(ibm.transpose(0, 2, 1).reshape(n_joints, 16), _FLOAT, "MAT4")  # column-major

    images = []
    for name, image in (
        ("baseColor", textures.base_color),
        ("metallicRoughness", textures.metallic_roughness),
        ("normal", textures.normal),
    ):
        images.append({"name": name, "mimeType": "image/png", "bufferView": buf.view(png_bytes(image))})

    nodes = []
    parents = avatar.parents.astype(np.int64)
    for j, local in enumerate(joint_node_transforms(avatar.joints.astype(np.float64), parents, bones)):
        node: dict[str, Any] = {"name": _joint_name(j), "translation": [float(x) for x in local[:3, 3]]}
        quat = _quat_xyzw(local[:3, :3])
        if abs(quat[3] - 1.0) > 1e-12:
            node["rotation"] = quat
        children = [int(c) for c in np.nonzero(parents == j)[0]]
        if children:
            node["children"] = children
        nodes.append(node)
    mesh_node = len(nodes)
    nodes.append({"name": "hand", "mesh": 0, "skin": 0})
    root = int(np.nonzero(parents < 0)[0][0])

    gltf: dict[str, Any] = {
        "asset": {"version": "2.0", "generator": "palm-studio export"},
        "scene": 0,
        "scenes": [{"name": "palm", "nodes": [mesh_node, root]}],
        "nodes": nodes,
        "skins": [
            {"name": "hand_skin", "joints": list(range(n_joints)), "skeleton": root, "inverseBindMatrices": ibm_acc}
        ],
        "meshes": [
            {"name": "hand", "primitives": [{"attributes": attributes, "indices": indices, "material": 0, "mode": 4}]}
        ],
        "materials": [
            {
                "name": "skin",
                "pbrMetallicRoughness": {
                    "baseColorTexture": {"index": 0},
                    "metallicRoughnessTexture": {"index": 1},
                    "metallicFactor": 1.0,
                    "roughnessFactor": 1.0,
                },
                "normalTexture": {"index": 2},
            }
        ],
        "textures": [{"sampler": 0, "source": i} for i in range(3)],
        "samplers": [{"magFilter": 9729, "minFilter": 9987, "wrapS": 33071, "wrapT": 33071}],
        "images": images,
        "accessors": buf.accessors,
        "bufferViews": buf.views,
        "buffers": [{"byteLength": 0}],
    }
    buf.data.extend(b"\0" * (-len(buf.data) % 4))
    gltf["buffers"][0]["byteLength"] = len(buf.data)
    text = json.dumps(gltf, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 4)
    total = 12 + 8 + len(text) + 8 + len(buf.data)
    with atomic_write(path) as tmp, open(tmp, "wb") as fh:
        fh.write(struct.pack("<III", _GLB_MAGIC, 2, total))
        fh.write(struct.pack("<II", len(text), _CHUNK_JSON))
        fh.write(text)
        fh.write(struct.pack("<II", len(buf.data), _CHUNK_BIN))
        fh.write(bytes(buf.data))


def _joint_name(j: int) -> str:
    try:
        from palm.hand import JOINT_NAMES

        return str(JOINT_NAMES[j])
    except (ImportError, IndexError):
        return f"joint_{j:02d}"


def read_glb(path: str | os.PathLike) -> tuple[dict[str, Any], bytes]:
    """Split a GLB into its JSON document and binary chunk."""
    data = Path(path).read_bytes()
    magic, version, total = struct.unpack_from("<III", data, 0)
    if magic != _GLB_MAGIC or version != 2 or total != len(data):
        raise PalmError(path, "not a glTF 2.0 binary")
    length, _kind = struct.unpack_from("<II", data, 12)
    doc = json.loads(data[20 : 20 + length])
    offset = 20 + length
    blob = b""
    if offset < len(data):
        blen, _ = struct.unpack_from("<II", data, offset)
        blob = data[offset + 8 : offset + 8 + blen]
    return doc, blob


def glb_accessor(doc: dict[str, Any], blob: bytes, index: int) -> np.ndarray:
    """An accessor of a GLB (tightly packed views only) as a numpy array (count, n)."""
    acc = doc["accessors"][index]
    view = doc["bufferViews"][acc["bufferView"]]
    dtype = {_FLOAT: "<f4", _UBYTE: "u1", _USHORT: "<u2", _UINT: "<u4"}[acc["componentType"]]
    width = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4, "MAT4": 16}[acc["type"]]
    start = view.get("byteOffset", 0) + acc.get("byteOffset", 0)
    arr = np.frombuffer(blob, dtype=dtype, count=acc["count"] * width, offset=start)
    return arr.reshape(acc["count"], width)


# ---------------------------------------------------------------------------------------------
# Rendering (CPU rasteriser, SG light)
# ---------------------------------------------------------------------------------------------


def default_lobes() -> np.ndarray:
    """A neutral three-lobe studio light (key, fill, sky) as raw SG lobes (3, 7)."""
    return np.array(
        [
            [0.4, 0.8, 0.45, 8.0, 3.0, 2.9, 2.7],
            [-0.6, 0.2, 0.5, 3.0, 0.8, 0.85, 1.0],
            [0.0, 1.0, 0.0, 0.8, 0.35, 0.38, 0.42],
        ],
        np.float32,
    )


def hand_frame(joints: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Orthonormal axes of a right hand from its joints (MANO order).

    Args:
        joints: (16, 3).

    Returns:
        ``up`` (wrist -> middle-finger base), ``side`` (pinky -> index base, orthogonalised) and
        ``back`` (the normal on the back of the hand, ``cross(up, side)``), each (3,).
    """
    j = np.asarray(joints, np.float64)
    up = j[4] - j[0]
    up /= np.linalg.norm(up)
    side = j[1] - j[7]
    side -= up * (side @ up)
    side /= np.linalg.norm(side)
    return up, side, np.cross(up, side)


def framing_camera(
    vertices: np.ndarray,
    res: int | tuple[int, int],
    azimuth_deg: float = 0.0,
    elevation_deg: float = 10.0,
    fov_deg: float = 30.0,
    joints: np.ndarray | None = None,
) -> Any:
    """A camera that frames ``vertices`` with the fingers pointing up in the image.

    With ``joints`` the camera looks at the back of the hand (azimuth 0) and the azimuth orbits
    about the hand's wrist-to-fingers axis (:func:`hand_frame`); without, the axes are those of the
    flat MANO right hand (fingers ``+x``, back ``+y``). The elevation raises the camera toward the
    fingertips.

    Args:
        vertices: (V, 3) posed vertices; res: square side or (height, width).
        azimuth_deg, elevation_deg, fov_deg: orbit angles and vertical field of view, degrees.
        joints: (16, 3) posed joints, or None.

    Returns:
        A ``palm.render.rays.Camera``.
    """
    from palm.render.rays import Camera

    height, width = (res, res) if isinstance(res, int) else res
    if joints is not None:
        up, side, back = hand_frame(joints)
    else:
        up, side, back = np.array([1.0, 0, 0]), np.array([0, 0, 1.0]), np.array([0, 1.0, 0])
    v = np.asarray(vertices, np.float64)
    centre = (v.min(0) + v.max(0)) / 2
    radius = float(np.linalg.norm(v - centre, axis=1).max())
    fov = math.radians(fov_deg) * min(1.0, width / height)
    dist = 1.08 * radius / math.sin(fov / 2)
    az, el = math.radians(azimuth_deg), math.radians(elevation_deg)
    direction = math.cos(el) * (math.cos(az) * back + math.sin(az) * side) + math.sin(el) * up
    return Camera.look_at(centre + dist * direction, centre, up=up, fov_deg=fov_deg, height=height, width=width)


def raster_render(
    avatar: BakedAvatar,
    pose: Any,
    hand: Any,
    camera: Any,
    sg_lobes: Any,
    res: int | tuple[int, int] | None = None,
    betas: Any = None,
) -> np.ndarray:
    """Render the (posed) avatar with a z-buffered CPU rasteriser under an SG environment.

    Per pixel: perspective-correct interpolated position, normal, albedo, roughness and metallic,
    shaded by ``palm.render.brdf.shade_sg`` (two-sided). Until that module exists the shading is
    diffuse only: SG irradiance at the vertices, interpolated. No anti-aliasing (render larger and
    downsample for it).

    Args:
        avatar: the baked avatar; pose: (16, 3) or None (canonical); hand: the rig.
        camera: a ``palm.render.rays.Camera`` (``K``, ``Rt`` world -> OpenCV camera).
        sg_lobes: (K, 7) raw SG lobes.
        res: output side or (height, width); None uses the camera's size (K is rescaled otherwise).
        betas: shape coefficients for the pose.

    Returns:
        (H, W, 4) float32 linear RGB with straight alpha (1 on the hand, 0 elsewhere).
    """
    import torch

    shown = posed_avatar(avatar, pose, hand, betas)
    K = _numpy(camera.K).astype(np.float64)
    Rt = _numpy(camera.Rt).astype(np.float64)
    height, width = int(camera.height), int(camera.width)
    if res is not None:
        new_h, new_w = (res, res) if isinstance(res, int) else res
        K = K.copy()
        K[0] *= new_w / width
        K[1] *= new_h / height
        height, width = int(new_h), int(new_w)
    cam_pts = shown.vertices.astype(np.float64) @ Rt[:3, :3].T + Rt[:3, 3]
    z = cam_pts[:, 2]
    faces = shown.faces.astype(np.int64)
    visible = (z[faces] > 1e-4).all(axis=1)  # near plane: drop triangles behind/at the camera
    faces = faces[visible]
    proj = cam_pts @ K.T
    xy = proj[:, :2] / np.maximum(proj[:, 2:3], 1e-9)
    pix, tri, bary = rasterize(xy[faces], height, width, depth=z[faces])

    image = np.zeros((height * width, 4), np.float32)
    if len(pix):
        corners = faces[tri]

        def interp(values: np.ndarray) -> np.ndarray:
            return np.einsum("nk,nkc->nc", bary, values[corners].astype(np.float32))

        position = interp(shown.vertices)
        normal = interp(shown.normals)
        normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-12)
        eye = (-Rt[:3, :3].T @ Rt[:3, 3]).astype(np.float32)
        view = eye - position
        view /= np.maximum(np.linalg.norm(view, axis=1, keepdims=True), 1e-12)
        front = (normal * view).sum(1, keepdims=True) >= 0
        normal = np.where(front, normal, -normal)  # two-sided
        material = interp(np.concatenate([shown.albedo, shown.roughness[:, None], shown.metallic[:, None]], 1))
        lobes = torch.as_tensor(np.asarray(_numpy(sg_lobes), np.float32))
        try:
            from palm.render.brdf import shade_sg
        except ImportError:  # diffuse only, irradiance per vertex (both sides), interpolated
            from palm.render.sg import sg_irradiance

            with torch.no_grad():
                n = torch.from_numpy(shown.normals)
                e_front, e_back = (_numpy(sg_irradiance(lobes, s * n)) for s in (1.0, -1.0))
            irradiance = np.where(front, interp(e_front), interp(e_back))
            image[pix, :3] = material[:, :3] / math.pi * irradiance
        else:
            step = 1 << 16
            with torch.no_grad():
                for s in range(0, len(pix), step):
                    sl = slice(s, s + step)
                    image[pix[sl], :3] = _numpy(
                        shade_sg(
                            torch.from_numpy(normal[sl]),
                            torch.from_numpy(view[sl]),
                            torch.from_numpy(material[sl, :3]),
                            torch.from_numpy(material[sl, 3:4]),
                            torch.from_numpy(material[sl, 4:5]),
                            lobes,
                        )
                    )
        image[pix, 3] = 1.0
    return image.reshape(height, width, 4)


# ---------------------------------------------------------------------------------------------
# Turntables
# ---------------------------------------------------------------------------------------------


def export_turntable(
    path: str | os.PathLike,
    render_fn: Callable[[float], Any],
    frames: int,
    fps: int = 24,
    background: tuple[float, float, float] = (1.0, 1.0, 1.0),
    exposure: float = 1.0,
    emit: Emit = null_emit,
    cancel: Any = None,
) -> Path:
    """Render ``frames`` views at azimuths ``360 i / frames`` and write an MP4 or a GIF.

    Args:
        path: ``.mp4`` (H.264 via imageio-ffmpeg) or ``.gif`` (pillow, loops forever).
        render_fn: ``azimuth_deg -> (H, W, 4)`` linear RGBA (straight alpha) image.
        frames: number of frames (>= 1). The MP4 always holds exactly ``frames``; in a GIF, pillow
            folds a frame that is pixel-identical to the one before into it (longer duration), which
            only happens when the render does not change with the azimuth.
        fps: frames per second.
        background: linear RGB the frames are composited over (videos have no alpha).
        exposure: linear multiplier before tone mapping.
        emit: receives a :class:`palm.jobs.Progress` after every frame.
        cancel: optional cancel token, checked between frames.

    Returns:
        The path written.
    """
    path = check_output_path(path, VIDEO_EXTENSIONS)
    if frames < 1:
        raise PalmError("--frames", f"need at least 1 frame, got {frames}")
    images = []
    for i in range(frames):
        check_cancel(cancel)
        rgba = np.asarray(_numpy(render_fn(360.0 * i / frames)), np.float32)
        rgb = rgba[..., :3]
        if rgba.shape[-1] == 4:
            a = rgba[..., 3:4]
            rgb = rgb * a + np.asarray(background, np.float32) / max(exposure, 1e-12) * (1 - a)
        images.append(to_srgb8(rgb, exposure))
        emit(Progress(step=i + 1, total=frames, message="turntable"))
    if path.suffix.lower() == ".mp4":
        import imageio.v2 as imageio

        h, w = images[0].shape[:2]
        pad = ((0, h % 2), (0, w % 2), (0, 0))  # yuv420p needs even sizes
        with atomic_write(path) as tmp:
            writer = imageio.get_writer(
                str(tmp),
                format="FFMPEG",
                fps=fps,
                codec="libx264",
                quality=8,
                macro_block_size=2,
                pixelformat="yuv420p",
                ffmpeg_log_level="error",
            )
            try:
                for image in images:
                    writer.append_data(np.pad(image, pad, mode="edge"))
            finally:
                writer.close()
    else:
        from PIL import Image

        pil = [Image.fromarray(image) for image in images]
        with atomic_write(path) as tmp:
            pil[0].save(
                tmp, format="GIF", save_all=True, append_images=pil[1:], duration=round(1000 / fps), loop=0, disposal=1
            )
    return path


# ---------------------------------------------------------------------------------------------
# Environments
# ---------------------------------------------------------------------------------------------


def export_env(path: str | os.PathLike, sg_lobes: Any, height: int = 256, source: str = "palm export") -> Path:
    """Write an SG environment as an equirect linear EXR (``H x 2H``) or as SG JSON.

    Args:
        path: ``.exr`` or ``.json``.
        sg_lobes: (K, 7) raw lobes.
        height: EXR rows.
        source: the JSON's ``source`` field.

    Returns:
        The path written.
    """
    path = check_output_path(path, ENV_EXTENSIONS)
    lobes = np.asarray(_numpy(sg_lobes), np.float32)
    if lobes.ndim != 2 or lobes.shape[1] != 7:
        raise PalmError(path, f"SG lobes must be (K, 7), got {lobes.shape}")
    import torch

    from palm.render.sg import save_sg, sg_to_equirect

    P = torch.as_tensor(lobes)
    if path.suffix.lower() == ".json":
        save_sg(path, P, {"source": source})
        return path
    with torch.no_grad():
        write_exr(path, _numpy(sg_to_equirect(P, height)).astype(np.float32))
    return path
