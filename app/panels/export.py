"""Export: a render (resolution, raster or neural, transparent background), a turntable (frames),
the posed mesh (at the viewport's grid resolution or finer) and the environment.

Every export checks its path first (``app.tasks.check_export``: the CLI's output policy, never an
input), writes atomically (the engine's writers) and confirms the saved path through
``Controller.notify`` (the status line, and the line at the bottom of this panel).
"""

from __future__ import annotations

import math

import dearpygui.dearpygui as dpg
import numpy as np

from app import actions, neural, tasks
from app.camera import OrbitCamera

WIDTH = "palm/export/width"
HEIGHT = "palm/export/height"
RENDERER = "palm/export/renderer"
TRANSPARENT = "palm/export/transparent"
FRAMES = "palm/export/frames"
MESH_RES = "palm/export/mesh_res"
NOTICE = "palm/export/notice"
RENDERERS = ("raster", "neural")
MAX_SIDE = 4096


def build(studio) -> None:
    c = studio.controller
    w, h = studio.vp_size
    dpg.add_text("Render", color=(180, 220, 180))
    with dpg.group(horizontal=True):
        dpg.add_input_int(label="x", tag=WIDTH, default_value=int(w), width=90, min_value=16, max_value=MAX_SIDE,
                          min_clamped=True, max_clamped=True, step=0)
        dpg.add_input_int(label="pixels", tag=HEIGHT, default_value=int(h), width=90, min_value=16,
                          max_value=MAX_SIDE, min_clamped=True, max_clamped=True, step=0)
    with dpg.group(horizontal=True):
        dpg.add_combo(RENDERERS, label="renderer", tag=RENDERER, default_value="raster", width=100)
        dpg.add_checkbox(label="transparent background", tag=TRANSPARENT)
    dpg.add_button(label="Save render (PNG/EXR)...", width=260, callback=lambda: studio.file_dialog(
        "Save render", list(tasks.IMAGE_EXTENSIONS), lambda p: studio.intent(save_render, studio, p), save=True,
        default="render.png"))
    dpg.add_separator()
    dpg.add_text("Turntable", color=(180, 220, 180))
    dpg.add_input_int(label="frames", tag=FRAMES, default_value=36, width=90, min_value=1, max_value=720,
                      min_clamped=True, max_clamped=True)
    dpg.add_button(label="Export turntable (MP4/GIF)...", width=260, callback=lambda: studio.file_dialog(
        "Turntable", list(tasks.VIDEO_EXTENSIONS), lambda p: studio.intent(save_turntable, studio, p), save=True,
        default="turntable.mp4"))
    dpg.add_separator()
    dpg.add_text("Mesh", color=(180, 220, 180))
    dpg.add_input_int(label="grid resolution", tag=MESH_RES, width=90, step=16, enabled=c.prior is not None,
                      default_value=max(actions.FINE_RES, *c.bake_resolutions), min_value=16, max_value=256,
                      min_clamped=True, max_clamped=True)
    dpg.add_button(label="Export mesh (GLB/OBJ/PLY)...", width=260, callback=lambda: studio.file_dialog(
        "Export mesh", list(tasks.MESH_EXTENSIONS), lambda p: studio.intent(save_mesh, studio, p),
        save=True, default="hand.glb"))
    dpg.add_separator()
    dpg.add_button(label="Export environment...", width=260, callback=lambda: studio.file_dialog(
        "Export environment", list(tasks.ENV_EXTENSIONS), lambda p: studio.intent(c.export_environment, p),
        save=True, default="environment.json"))
    dpg.add_separator()
    dpg.add_text("", tag=NOTICE, wrap=400, color=(150, 220, 150))


def options() -> dict:
    return {"size": (int(dpg.get_value(WIDTH)), int(dpg.get_value(HEIGHT))), "renderer": dpg.get_value(RENDERER),
            "transparent": bool(dpg.get_value(TRANSPARENT)), "frames": int(dpg.get_value(FRAMES)),
            "mesh_resolution": int(dpg.get_value(MESH_RES))}


def render_raster(studio, size: tuple[int, int], camera=None, transparent: bool = False) -> np.ndarray:
    """The viewport's renderer drawn at ``size`` (W, H) -> linear straight-alpha RGBA (H, W, 4)
    (transparent: the hand matted from renders over black and over white)."""
    from palm.render.color import srgb_to_linear

    r, camera = studio.renderer, camera or studio.camera
    old_size, old_show, old_flat = tuple(r.size), r.show_environment, r.flat_color
    try:
        r.resize(*size)
        if not transparent:
            img = r.render(camera)
            rgba = np.ones((*img.shape[:2], 4), np.float32)
            rgba[..., :3] = srgb_to_linear(img[..., :3].astype(np.float32) / 255.0)
            return rgba
        r.show_environment = False
        r.flat_color = (0.0, 0.0, 0.0)
        black = r.render(camera)
        r.flat_color = (1.0, 1.0, 1.0)
        return tasks.matte(black, r.render(camera))
    finally:
        r.show_environment, r.flat_color = old_show, old_flat
        r.resize(*old_size)
        studio.ctx.screen.use()
        studio.render_dirty = True


def neural_view(studio, size: tuple[int, int]) -> neural.NeuralView:
    """The viewport's camera at ``size`` with its background (what a neural render is composited on)."""
    w, h = size
    r, cam = studio.renderer, studio.camera
    r.draw_avatar = False
    try:
        background = render_raster(studio, size)
    finally:
        r.draw_avatar = True
    from palm.render.color import linear_to_srgb

    bg = (np.clip(linear_to_srgb(background[..., :3]), 0, 1) * 255 + 0.5).astype(np.uint8)
    bg = np.concatenate([bg, np.full((h, w, 1), 255, np.uint8)], -1)
    return neural.NeuralView(cam.intrinsics(w, h), cam.world_to_camera(), w, h, bg,
                              float(2.0 ** studio.controller.state.light.exposure))


def save_render(studio, path: str, opts: dict | None = None) -> None:
    """Save the current view at the chosen size: raster now, neural in a job (confirmed when written)."""
    c, opts = studio.controller, opts or options()
    if opts["renderer"] == "neural":
        c.export_neural(path, neural_view(studio, opts["size"]), opts["transparent"])
        c.log(f"neural render of {opts['size'][0]}x{opts['size'][1]} started: {path} when done")
        return
    path = tasks.check_export(path, tasks.IMAGE_EXTENSIONS, c.input_paths())
    image = render_raster(studio, opts["size"], transparent=opts["transparent"])
    tasks.write_render(path, image, opts["transparent"])
    c.notify(f"render {image.shape[1]}x{image.shape[0]} saved to {path}", str(path))


def save_turntable(studio, path: str, opts: dict | None = None) -> None:
    """A turntable of ``frames`` raster views at the chosen size about the viewport's camera."""
    c, opts = studio.controller, opts or options()
    path = tasks.check_export(path, tasks.VIDEO_EXTENSIONS, c.input_paths())
    cam0 = studio.camera
    camera = OrbitCamera(**{k: getattr(cam0, k) for k in ("target", "distance", "elevation", "fov_y")})

    def render_at(azimuth_deg: float) -> np.ndarray:
        camera.azimuth = cam0.azimuth + math.radians(azimuth_deg)
        return render_raster(studio, opts["size"], camera)

    actions.export_turntable(str(path), render_at, opts["frames"])
    c.notify(f"turntable ({opts['frames']} frames) saved to {path}", str(path))


def save_mesh(studio, path: str, opts: dict | None = None) -> None:
    opts = opts or options()
    studio.controller.export_mesh(path, opts["mesh_resolution"])


def refresh(studio) -> None:
    notice = studio.controller.notice
    if dpg.get_value(NOTICE) != notice["text"]:
        dpg.set_value(NOTICE, notice["text"])
