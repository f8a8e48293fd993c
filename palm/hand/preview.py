"""A contact sheet of the pose presets, for looking at a hand rig (no OpenGL needed).

``python -m palm.hand.preview docs/hand_presets.png`` renders every pose preset of the open rig
into one picture (the one in ``docs/``): one column per preset, one row per view (back, thumb side,
palm). Orthographic cameras, Lambert shading with a key and a fill light interpolated from the
vertices; rasterised by :func:`palm.render.raster.rasterize`. Meant for inspection, not for the
avatar renderer.
"""

from __future__ import annotations

import argparse
import math
import sys

import numpy as np
import torch

from palm.render.raster import interpolate, rasterize, vertex_normals

#: World -> camera rotations of the contact sheet, fingers (-x) pointing up in every image.
SHEET_VIEWS = {
    "back": np.array([[0.0, 0.0, -1.0], [-1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]),
    "thumb side": np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]),
    "palm": np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]]),
}
#: Key and fill light directions (camera space, towards the lights) and their weights, plus ambient.
KEY, FILL = np.array([0.4, 0.6, 0.7]), np.array([-0.6, -0.2, 0.5])
KEY_WEIGHT, FILL_WEIGHT, AMBIENT = 0.75, 0.25, 0.08
SKIN = (0.80, 0.60, 0.50)


def look_rotation(azimuth_deg: float, elevation_deg: float) -> np.ndarray:
    """World -> camera rotation (3, 3) for a camera orbiting the origin (camera looks along -z)."""
    a, e = math.radians(azimuth_deg), math.radians(elevation_deg)
    ry = np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])
    rx = np.array([[1, 0, 0], [0, math.cos(e), -math.sin(e)], [0, math.sin(e), math.cos(e)]])
    return rx @ ry


def render_view(
    vertices: np.ndarray,
    faces: np.ndarray,
    rotation: np.ndarray,
    size: int = 320,
    extent: float = 0.12,
    centre: np.ndarray | None = None,
    colour: tuple[float, float, float] = SKIN,
    background: tuple[float, float, float] = (1.0, 1.0, 1.0),
) -> np.ndarray:
    """Orthographic Lambert render of one mesh.

    Camera space: x right, y up, the camera at +z looking towards -z; the square image spans
    ``[-extent, extent]`` in x and y around ``centre``.

    Args:
        vertices: (V, 3) world positions. faces: (F, 3) counter-clockwise seen from outside.
        rotation: (3, 3) world -> camera rotation.
        size: image side in pixels. extent: half side of the view in scene units.
        centre: (3,) world point at the image centre (default: the bounding-box centre).
        colour, background: linear RGB of the surface and of the empty pixels.

    Returns:
        (size, size, 3) float32 linear RGB.
    """
    v = np.asarray(vertices, np.float64)
    centre = (v.min(0) + v.max(0)) / 2 if centre is None else np.asarray(centre, np.float64)
    cam = torch.as_tensor((v - centre) @ np.asarray(rotation, np.float64).T)
    faces_t = torch.as_tensor(np.asarray(faces), dtype=torch.long)
    normals = vertex_normals(cam, faces_t)
    light = torch.zeros(len(cam), 1, dtype=cam.dtype) + AMBIENT
    for direction, weight in ((KEY, KEY_WEIGHT), (FILL, FILL_WEIGHT)):
        d = torch.as_tensor(direction / np.linalg.norm(direction), dtype=cam.dtype)
        light += weight * (normals @ d).clamp_min(0.0)[:, None]
    screen = torch.stack(
        [(cam[:, 0] / extent * 0.5 + 0.5) * size, (0.5 - cam[:, 1] / extent * 0.5) * size, -cam[:, 2]], dim=1
    )  # depth -z: the nearest surface has the largest z
    frags = rasterize(screen[None], faces_t, size, size, perspective=False)
    shade = interpolate(light, faces_t, frags)[0].numpy()  # (size, size, 1)
    mask = frags.mask[0].numpy()[..., None]
    lit = np.clip(shade * np.asarray(colour), 0.0, 1.0)
    return np.where(mask, lit, np.asarray(background)).astype(np.float32)


def preset_sheet(hand_source: str = "open", size: int = 260) -> np.ndarray:
    """Contact sheet of every pose preset: one column per preset, one row per view.

    Returns:
        (rows * size, n_presets * size, 3) float32 linear RGB.
    """
    from palm.hand import POSE_PRESETS, load_hand, load_pose

    hand = load_hand(hand_source)
    faces = hand.faces.numpy()
    posed = []
    with torch.no_grad():
        for name in POSE_PRESETS:
            pose = torch.as_tensor(load_pose(name), dtype=torch.float32)[None]
            posed.append(hand(pose).vertices[0].numpy())
    tilt = look_rotation(0.0, -20.0)
    rows = [
        np.concatenate([render_view(v, faces, tilt @ rot, size, 0.11) for v in posed], axis=1)
        for rot in SHEET_VIEWS.values()
    ]
    return np.concatenate(rows, axis=0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="render the pose presets of a hand rig into one PNG")
    ap.add_argument("out", help="output .png")
    ap.add_argument("--hand", default="open", choices=["open", "mano"])
    ap.add_argument("--size", type=int, default=260)
    args = ap.parse_args(argv)
    from palm.imageio import to_srgb8, write_png
    from palm.io import check_output_path

    out = check_output_path(args.out, (".png",))
    write_png(out, to_srgb8(preset_sheet(args.hand, args.size)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
