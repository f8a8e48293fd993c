"""Studio jobs beyond :mod:`app.actions`: naming the PCA components and exports with options.

Like :mod:`app.actions`, plain functions over ``palm`` (no Dear PyGui); the job functions take
``(emit, cancel, ...)`` and run on worker threads. Every export goes through :func:`check_export`
first: the CLI's output policy (known extension, existing folder) and never an input of the studio.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from app.actions import PriorInfo, Subject, bake_prior, export_mesh
from app.neural import composite_neural, neural_scene
from palm.errors import PalmError
from palm.jobs import Progress, check_cancel

#: Output formats of the exports (those of ``palm.imageio``, ``palm.export.mesh``, ``palm.export.preview``).
IMAGE_EXTENSIONS = (".png", ".exr")
MESH_EXTENSIONS = (".glb", ".obj", ".ply")
VIDEO_EXTENSIONS = (".mp4", ".gif")
ENV_EXTENSIONS = (".json", ".exr", ".png")


def check_export(path: str | os.PathLike, extensions: tuple[str, ...], inputs=()) -> Path:
    """``palm.io.check_output_path`` plus: never an input (the photo, the avatar or prior folder, a
    loaded pose or environment file), nor a file inside an input folder.

    Raises:
        PalmError: naming ``path``.
    """
    from palm.io import check_output_path

    out = check_output_path(path, extensions)
    target = out.resolve()
    for item in inputs:
        if not item:
            continue
        source = Path(item).resolve()
        if target == source:
            raise PalmError(path, f"is an input of the studio ({item}); choose another file")
        if source.is_dir() and source in target.parents:
            raise PalmError(path, f"lies inside the input folder {item}; choose another folder")
    return out


# ------------------------------------------------------------------------------------------------
# What the PCA components do
# ------------------------------------------------------------------------------------------------


def job_describe_components(emit, cancel, prior: PriorInfo, resolution: int = 20):
    """Name each PCA component by what it does: bake the subject at its two ends (coarse grid) and
    compare. Shape: the hand's extent along the fingers / through the palm / across it ("size" when
    all grow together); appearance: the albedo's brightness ("skin tone") or its red-blue balance.

    Returns:
        ``{"shape": {index: name}, "appearance": {index: name}}`` (components without spread skipped).
    """
    live = [(w, i) for w in ("shape", "appearance") for i in range(len(prior.std(w))) if prior.live(w, i)]
    names: dict = {"shape": {}, "appearance": {}}
    zeros = {w: np.zeros(len(prior.std(w)), np.float32) for w in ("shape", "appearance")}
    for k, (which, i) in enumerate(live):
        check_cancel(cancel)
        emit(Progress(k, len(live), f"naming {which} {i + 1}"))
        ends = []
        for sign in (-2.0, 2.0):
            c = zeros[which].copy()
            c[i] = sign * prior.std(which)[i]
            c = prior.held(which, c)
            sub = Subject(c if which == "shape" else zeros["shape"], c if which == "appearance" else zeros["appearance"])
            ends.append(bake_prior(prior, sub, resolution, exact=False, cancel=cancel))
        names[which][i] = describe_change(which, *ends)
    emit(Progress(len(live), len(live), "named"))
    return names


def describe_change(which: str, low: Any, high: Any) -> str:
    """A short name for what changes between two baked avatars (see :func:`job_describe_components`)."""
    if which == "shape":
        a, b = (np.ptp(np.asarray(m.vertices, np.float64), axis=0) for m in (low, high))
        rel = (b - a) / np.maximum(0.5 * (a + b), 1e-9)  # x: along the fingers, y: thickness, z: across
        if np.all(np.sign(rel) == np.sign(rel[0])) and np.abs(rel).min() > 0.4 * np.abs(rel).max():
            return "size"
        return ("length", "thickness", "width")[int(np.argmax(np.abs(rel)))]
    d = np.asarray(high.albedo, np.float64).mean(0) - np.asarray(low.albedo, np.float64).mean(0)
    lum = float(d.mean())
    tint = d - lum
    if abs(lum) >= np.abs(tint).max():
        return "skin tone"
    return "redness" if abs(tint[0] - tint[2]) >= abs(tint[1]) else "tint"


# ------------------------------------------------------------------------------------------------
# Exports
# ------------------------------------------------------------------------------------------------


def matte(on_black: np.ndarray, on_white: np.ndarray) -> np.ndarray:
    """Straight-alpha linear RGBA (H, W, 4) from two sRGB uint8 renders of the same view over black
    and over white (difference matting: the background's share is what changed)."""
    from palm.render.color import srgb_to_linear

    b = srgb_to_linear(np.asarray(on_black[..., :3], np.float32) / 255.0)
    w = srgb_to_linear(np.asarray(on_white[..., :3], np.float32) / 255.0)
    alpha = np.clip(1.0 - (w - b).mean(-1, keepdims=True), 0.0, 1.0)
    rgb = np.where(alpha > 1e-4, b / np.maximum(alpha, 1e-4), 0.0)
    return np.concatenate([np.clip(rgb, 0.0, None), alpha], -1).astype(np.float32)


def write_render(path: str | os.PathLike, image: np.ndarray, transparent: bool = False) -> Path:
    """Write an export render: (H, W, 4) linear straight-alpha RGBA (alpha kept when ``transparent``,
    else opaque) through ``palm.imageio.write_image`` (atomic)."""
    from palm.imageio import write_image

    rgba = np.asarray(image, np.float32).copy()
    if not transparent:
        rgba[..., 3] = 1.0
    return write_image(path, rgba)


def job_export_neural(emit, cancel, path: str, prior: PriorInfo, subject: Subject, pose: np.ndarray,
                      lobes: np.ndarray, view: Any, transparent: bool = False, left: bool = False):
    """The true volume PBR image (``palm.scene.render_scene``) of ``view`` (an ``app.neural.NeuralView``
    at the export's size) written to ``path``: over the viewport's background, or with alpha
    (``left``: the left hand, :func:`app.neural.neural_scene`)."""
    from palm.bake import to_numpy
    from palm.render.color import srgb_to_linear
    from palm.scene import render_scene

    scene = neural_scene(prior, subject, pose, lobes, view, left)
    rgba = np.asarray(to_numpy(render_scene(scene, "pbr", emit=emit, cancel=cancel)), np.float32)
    check_cancel(cancel)
    emit(Progress(1, 1, "writing"))
    if transparent:
        rgba = rgba.copy()
        rgba[..., :3] *= np.float32(view.exposure)
    else:
        srgb = composite_neural(rgba, view)
        rgba = np.concatenate([srgb_to_linear(srgb[..., :3]), np.ones_like(srgb[..., :1])], -1)
    return str(write_render(path, rgba, transparent))


def job_export_mesh(emit, cancel, path: str, avatar: Any, hand: Any, pose: np.ndarray, betas, prior=None,
                    subject: Subject | None = None, resolution: int = 0, left: bool = False):
    """The posed mesh (``palm.export.mesh``; ``left``: the left hand, as the viewport shows it); with
    ``prior`` and ``resolution``, re-baked exactly at that grid first (the viewport's resolution or
    finer). Returns ``(path, vertex count)``."""
    if prior is not None and subject is not None and resolution > 0:
        emit(Progress(0, 2, f"baking the mesh at {resolution}^3"))
        avatar = bake_prior(prior, subject, int(resolution), exact=True, cancel=cancel)
        check_cancel(cancel)
    emit(Progress(1, 2, "writing"))
    export_mesh(path, avatar, hand, pose, betas, left)
    return str(path), len(avatar.vertices)
