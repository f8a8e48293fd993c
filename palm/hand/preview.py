"""A tiny CPU z-buffer rasteriser for looking at hand meshes (no OpenGL needed).

``python -m palm.hand.preview docs/hand_presets.png`` renders every pose preset of the open rig
into one contact sheet (the picture in ``docs/``). Orthographic camera, Lambert shading with a
key and a fill light, per-vertex normals; meant for inspection, not for the avatar renderer.
"""

from __future__ import annotations

import argparse
import math
import sys

import numpy as np


def look_rotation(azimuth_deg: float, elevation_deg: float) -> np.ndarray:
    """World -> camera rotation (3,3) for a camera orbiting the origin (camera looks along -z)."""
    a, e = math.radians(azimuth_deg), math.radians(elevation_deg)
    ry = np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])
    rx = np.array([[1, 0, 0], [0, math.cos(e), -math.sin(e)], [0, math.sin(e), math.cos(e)]])
    return rx @ ry


def rasterise(
    vertices: np.ndarray,
    faces: np.ndarray,
    normals: np.ndarray,
    size: int,
    extent: float,
    colour=(0.80, 0.60, 0.50),
    background=(1.0, 1.0, 1.0),
) -> np.ndarray:
    """Orthographic z-buffer render of a mesh already in camera coordinates.

    Camera coordinates: x right, y up, the camera at +z looking towards -z; the square image spans
    ``[-extent, extent]`` in x and y.

    Args:
        vertices: (V,3) camera-space positions. faces: (F,3). normals: (V,3) camera-space normals.
        size: image side in pixels. extent: half side of the view in scene units.

    Returns:
        (size, size, 3) float image in [0,1], sRGB-encoded.
    """
    px = (vertices[:, 0] / extent * 0.5 + 0.5) * size
    py = (0.5 - vertices[:, 1] / extent * 0.5) * size
    depth = np.full((size, size), -np.inf)
    shade = np.zeros((size, size, 3))
    key = np.array([0.4, 0.6, 0.7])
    key /= np.linalg.norm(key)
    fill = np.array([-0.6, -0.2, 0.5])
    fill /= np.linalg.norm(fill)
    n_dot = 0.75 * np.clip(normals @ key, 0, None) + 0.25 * np.clip(normals @ fill, 0, None) + 0.08
    albedo = np.asarray(colour)
    for f in faces:
        x, y, z = px[f], py[f], vertices[f, 2]
        x0, x1 = max(math.floor(x.min()), 0), min(math.ceil(x.max()), size - 1)
        y0, y1 = max(math.floor(y.min()), 0), min(math.ceil(y.max()), size - 1)
        if x0 > x1 or y0 > y1:
            continue
        area = (x[1] - x[0]) * (y[2] - y[0]) - (x[2] - x[0]) * (y[1] - y[0])
        if abs(area) < 1e-12:
            continue
        gx, gy = np.meshgrid(np.arange(x0, x1 + 1) + 0.5, np.arange(y0, y1 + 1) + 0.5)
        w0 = ((x[1] - gx) * (y[2] - gy) - (x[2] - gx) * (y[1] - gy)) / area
        w1 = ((x[2] - gx) * (y[0] - gy) - (x[0] - gx) * (y[2] - gy)) / area
        w2 = 1 - w0 - w1
        inside = (w0 >= 0) & (w1 >= 0) & (w2 >= 0)
        if not inside.any():
            continue
        zz = w0 * z[0] + w1 * z[1] + w2 * z[2]
        sub = depth[y0 : y1 + 1, x0 : x1 + 1]
        win = inside & (zz > sub)
        if not win.any():
            continue
        sub[win] = zz[win]
        light = w0 * n_dot[f[0]] + w1 * n_dot[f[1]] + w2 * n_dot[f[2]]
        shade[y0 : y1 + 1, x0 : x1 + 1][win] = np.clip(light[win, None] * albedo, 0, 1)
    img = np.where(np.isfinite(depth)[..., None], shade, np.asarray(background))
    return np.where(img <= 0.0031308, 12.92 * img, 1.055 * np.power(np.clip(img, 0, 1), 1 / 2.4) - 0.055)


def render_view(vertices, faces, rotation, size=320, extent=0.12, centre=None):
    """Render one hand (V,3) with a world->camera rotation (3,3); returns (size,size,3) image."""
    faces = np.asarray(faces)
    centre = (vertices.min(0) + vertices.max(0)) / 2 if centre is None else centre
    cam = (vertices - centre) @ rotation.T
    from palm.bake import vertex_normals  # the one numpy implementation

    normals = vertex_normals(cam, faces)
    return rasterise(cam, faces, normals, size, extent)


#: World -> camera rotations of the contact sheet, fingers (-x) pointing up in every image.
SHEET_VIEWS = {
    "back": np.array([[0.0, 0.0, -1.0], [-1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]),
    "thumb side": np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]),
    "palm": np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]]),
}


def preset_sheet(hand_source: str = "open", size: int = 260) -> np.ndarray:
    """Contact sheet of every pose preset: one column per preset, one row per view.

    Returns:
        (rows * size, n_presets * size, 3) sRGB image in [0, 1].
    """
    import torch

    from palm.hand import POSE_PRESETS, load_hand, load_pose

    hand = load_hand(hand_source)
    faces = hand.faces.numpy()
    posed = []
    for name in POSE_PRESETS:
        pose = torch.as_tensor(load_pose(name), dtype=torch.float32)[None]
        posed.append(hand(pose).vertices[0].detach().numpy())
    rows = []
    for rot in SHEET_VIEWS.values():
        tilt = look_rotation(0.0, -20.0)
        rows.append(np.concatenate([render_view(v, faces, tilt @ rot, size, 0.11) for v in posed], axis=1))
    return np.concatenate(rows, axis=0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="render the pose presets of a hand rig into one PNG")
    ap.add_argument("out", help="output .png")
    ap.add_argument("--hand", default="open", choices=["open", "mano"])
    ap.add_argument("--size", type=int, default=260)
    args = ap.parse_args(argv)
    from PIL import Image

    from palm.io import atomic_write, check_output_path

    check_output_path(args.out, (".png",))
    sheet = preset_sheet(args.hand, args.size)
    with atomic_write(args.out) as tmp:
        Image.fromarray((np.clip(sheet, 0, 1) * 255).astype(np.uint8)).save(tmp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
