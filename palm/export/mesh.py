"""Mesh export of a :class:`palm.bake.BakedAvatar`: OBJ (+ MTL + PNG textures), PLY or skinned GLB.

:func:`export_mesh` picks the format from the extension; the GLB writer is
:func:`palm.export.gltf.write_glb`, the textures come from :mod:`palm.export.textures`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from palm.bake import BakedAvatar, apply_bones, left_hand
from palm.errors import PalmError
from palm.export.gltf import write_glb
from palm.export.textures import BakedTextures, UVAtlas, bake_textures, build_atlas, vertex_tangents
from palm.hand.lbs import bone_transforms
from palm.imageio import to_srgb8, write_png
from palm.io import atomic_write, check_output_path

MESH_EXTENSIONS = (".glb", ".obj", ".ply")


def export_mesh(
    path: str | os.PathLike,
    avatar: BakedAvatar,
    pose: Any = None,
    hand: Any = None,
    betas: Any = None,
    texture_res: int = 1024,
    vertex_colors: bool = False,
    detail_normals: Callable[[np.ndarray], np.ndarray] | None = None,
    left: bool = False,
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
        detail_normals: optional finer normals for the normal texture (see
            :func:`palm.export.textures.bake_textures`).
        left: write the left hand: the mirror image of ``avatar`` in ``pose`` (a left avatar's
            photo, or the studio's "left hand"), rigged about its own mirrored skeleton
            (:func:`palm.bake.left_hand`).

    Returns:
        A summary: ``path``, ``format``, ``vertices`` (in the file), ``faces``, and for textured
        formats ``atlas_vertices`` and ``texture_coverage``.
    """
    path = check_output_path(path, MESH_EXTENSIONS)
    fmt = path.suffix.lower()[1:]
    if pose is not None and hand is None:
        raise PalmError("--pose", "posing the mesh needs the hand rig")
    if left:
        avatar, pose = left_hand(avatar, pose)
    bones = None if pose is None else bone_transforms(hand, pose, betas, joints=avatar.joints)
    summary: dict[str, Any] = {"path": str(path), "format": fmt, "faces": len(avatar.faces)}
    if fmt == "ply":
        shown = avatar if bones is None else apply_bones(avatar, bones)
        _write_ply(path, shown, vertex_colors)
        summary["vertices"] = len(shown.vertices)
        return summary

    atlas = build_atlas(avatar.vertices, avatar.faces, texture_res)
    tangents = vertex_tangents(avatar.vertices[atlas.vmapping], avatar.normals[atlas.vmapping], atlas.uv, atlas.faces)
    textures = bake_textures(avatar, atlas, tangents, texture_res, detail_normals)
    summary.update(atlas_vertices=len(atlas.vmapping), texture_coverage=textures.coverage)
    if fmt == "obj":
        shown = avatar if bones is None else apply_bones(avatar, bones)
        _write_obj(path, shown, atlas, textures, vertex_colors)
        summary["vertices"] = len(atlas.vmapping)
    else:
        write_glb(path, avatar, atlas, tangents, textures, bones, vertex_colors)
        summary["vertices"] = len(atlas.vmapping)
    return summary


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
