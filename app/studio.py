"""palm-studio: the Dear PyGui application (one frame loop on the main thread) and its entry point.

``Studio`` owns the Dear PyGui context, the moderngl renderer (on Dear PyGui's own GL context,
created after the viewport is shown) and the frame loop. Each frame: run widget callbacks, take
dropped files, apply job events, follow the mouse, re-render the viewport when something changed,
refresh panels and the status bar, draw. Jobs run on worker threads (:mod:`app.jobs`) and never
touch Dear PyGui. The GUI only draws: widgets send intents to the :class:`app.controller.Controller`
and show its state, redrawing what its revision counters say changed (:meth:`Studio.changed`).
Tests drive it in-process with :meth:`Studio.step_frames`.
"""

from __future__ import annotations

import math
import os
import queue
import sys
import time
from pathlib import Path

import numpy as np

from app import actions, neural, tags
from app.camera import OrbitCamera, PhotoCamera, photo_rect
from app.controller import Controller
from app.views import DEFAULT_AZIMUTH, DEFAULT_ELEVATION, CameraViews, _fit, _over_photo
from palm.errors import PalmError

TITLE = "palm-studio"
LEFT_WIDTH = 450
STATUS_HEIGHT = 34
TOOLBAR_HEIGHT = 30
MENU_HEIGHT = 22
PAD = 8
"""Dear PyGui's default window padding (the viewport image fills its child window inside it)."""
REST_BEFORE_NEURAL_S = 0.6
IDLE_FRAME_S = 1.0 / 60.0
"""The interactive loop sleeps the rest of this period after a frame in which nothing changed."""
COARSE_FACTOR = 4
"""Viewport frames drawn while input is moving are this many times smaller per side (a sixteenth of
the pixels: on llvmpipe the frame that answers a key or a drag then costs ~10 ms instead of ~40)."""
BACKGROUND = (37, 37, 38)
"""The window's background (Dear PyGui's default window and child colour) as the GL clear colour of
the whole window: the primary window and its child windows then draw no background of their own,
two full-window fills less per frame through llvmpipe (~4 ms of ~20 at 1280x800); same picture."""
REFINE_AFTER_S = 0.2
"""Input quiet for this long: the coarse frame is redrawn at full size."""
#: (tag key, tab label): labels short enough that all seven fit the panel column.
#: Diagnostics (doctor report and log) is a window: View > Diagnostics.
TABS = (("Pose", "Pose"), ("Shape", "Shape"), ("Lighting", "Light"), ("Personalise", "Personalise"),
        ("Training", "Train"), ("Export", "Export"))


class Studio(CameraViews):
    """The application. Create, then ``run()`` (interactive) or ``step_frames(n)`` (tests, screenshots).

    Args:
        size: window size (width, height) in pixels.
        prior: prior folder (default ``assets/priors/default``).
        env: environment preset name or file.
        pose: pose preset name or pose JSON.
        avatar: personalised avatar folder.
        photo: a photo queued for personalisation.
        dnd: listen for XDND file drops (X11).
        bake_resolutions: (coarse, refine) grid resolutions of the prior's re-bakes (tests use small ones).
    """

    def __init__(self, size=(1280, 800), prior=None, env=None, pose=None, avatar=None, photo=None, dnd=True,
                 bake_resolutions=None, recent_path=None):
        import dearpygui.dearpygui as dpg

        self.dpg = dpg
        self.size = (int(size[0]), int(size[1]))
        self.controller = c = Controller(prior, **({"bake_resolutions": bake_resolutions} if bake_resolutions else {}))
        if avatar:
            c.load_avatar(str(avatar))
        if env:
            if Path(env).suffix.lower() in (".exr", ".hdr"):
                lobes, info = actions.load_environment(env)  # fitted now: the screenshot shows it
                c.add_environment(str(info.get("name", Path(env).stem)), lobes)
            else:
                c.set_environment(env)
        if pose:
            if Path(pose).suffix == ".json" and Path(pose).exists():
                c.load_pose_file(pose)
            else:
                c.apply_preset(pose)
        self.camera = OrbitCamera(azimuth=DEFAULT_AZIMUTH, elevation=DEFAULT_ELEVATION)
        self._drawn: dict[str, int] = {}
        self.shown_photo = None
        self.shown_log = -1
        self.drops: queue.Queue[str] = queue.Queue()
        self.last_image: np.ndarray | None = None
        self.render_dirty = True
        self.coarse = 1
        """Size divisor of the last viewport image (> 1: a coarse frame drawn while input moved)."""
        self._mouse_prev: tuple[float, float] | None = None
        self._wheel = 0.0
        self._last_motion = time.monotonic()
        self._shown_errors = 0
        self._closed = False
        self.vp_size = (max(self.size[0] - LEFT_WIDTH - 4 * PAD, 64),
                        max(self.size[1] - MENU_HEIGHT - STATUS_HEIGHT - TOOLBAR_HEIGHT - 3 * PAD, 64))
        self.vp_texture = tags.VIEWPORT_TEXTURE
        self.coarse_texture = tags.VIEWPORT_TEXTURE + "/coarse"
        """A texture of the coarse frame's size: a coarse frame is uploaded small and scaled by the GUI."""
        self._texture_serial = 0
        self.photo_camera: PhotoCamera | None = None
        self._photo_image: np.ndarray | None = None
        self._avatar_seen = ""
        self.overlay = False
        self._user_camera = False
        self._resized = False
        from app.shell import RecentFiles, Shell

        self.shell = Shell(self, RecentFiles(recent_path) if recent_path else None)

        dpg.create_context()
        dpg.configure_app(manual_callback_management=True, keyboard_navigation=True)
        dpg.create_viewport(title=TITLE, width=self.size[0], height=self.size[1], min_width=640, min_height=480)
        dpg.set_viewport_resize_callback(lambda sender, data: self._on_resize())
        dpg.set_viewport_clear_color((*BACKGROUND, 255))
        self._build()
        dpg.setup_dearpygui()
        dpg.show_viewport()
        dpg.render_dearpygui_frame()
        import moderngl

        from app.gl_renderer import AvatarRenderer

        self.ctx = moderngl.create_context()  # Dear PyGui's GL context, current on this thread
        self.renderer = AvatarRenderer(self.ctx, *self.vp_size)
        self.ctx.screen.use()
        self._follow_avatar()
        if self.photo_camera is None:
            self.reset_camera()
        self.dnd = None
        if dnd and sys.platform.startswith("linux") and os.environ.get("DISPLAY"):
            from app.dnd_x11 import XdndListener

            try:
                self.dnd = XdndListener(TITLE, self.drops.put)
                self.dnd.start()
            except Exception as exc:  # noqa: BLE001 - drag-and-drop is a convenience
                c.log(f"drag-and-drop unavailable: {exc}")
                self.dnd = None
        if photo:
            c.open_photo(str(photo))

    # -- construction --------------------------------------------------------------------------

    def _build(self) -> None:
        dpg = self.dpg
        from app.panels import diagnostics, export, lighting, personalize, pose, subject, training

        panels = {"Pose": pose, "Shape": subject, "Lighting": lighting, "Personalise": personalize,
                  "Training": training, "Export": export, "Diagnostics": diagnostics}
        self.panels = list(panels.values())
        vw, vh = self.vp_size
        with dpg.texture_registry(tag=tags.TEXTURES):
            dpg.add_dynamic_texture(vw, vh, np.zeros(vw * vh * 4, np.float32), tag=self.vp_texture)
            self._add_coarse_texture(vw, vh)
            w, h = personalize.OVERLAY
            dpg.add_dynamic_texture(w, h, np.zeros(w * h * 4, np.float32), tag=tags.PHOTO_TEXTURE)
        with dpg.handler_registry(tag=tags.WHEEL_HANDLER):
            dpg.add_mouse_wheel_handler(callback=self._on_wheel)
            self.shell.build_handlers()
        with dpg.window(tag=tags.PRIMARY, no_scrollbar=True, menubar=True, no_background=True):
            self.shell.build_menu()
            with dpg.group(horizontal=True):
                with dpg.child_window(width=LEFT_WIDTH, height=-STATUS_HEIGHT, tag=tags.PANEL_CHILD):
                    with dpg.tab_bar(tag=tags.TABS):
                        for key, label in TABS:
                            with dpg.tab(label=label, tag=tags.TAB.format(label=key)):
                                panels[key].build(self)
                with dpg.child_window(height=-STATUS_HEIGHT, no_scrollbar=True, tag=tags.VIEWPORT_CHILD):
                    with dpg.group(horizontal=True, tag=tags.VIEWPORT_TOOLBAR):
                        dpg.add_checkbox(label="environment", tag=tags.SHOW_ENV, default_value=True,
                                         callback=lambda s, a: self.controller.set_show_background(a))
                        c = self.controller
                        dpg.add_checkbox(label="neural", tag=tags.NEURAL, enabled=c.state.neural_available,
                                         callback=lambda s, a: self._set_neural(a))
                        if not c.state.neural_available:
                            with dpg.tooltip(tags.NEURAL, tag=tags.NEURAL_TIP):
                                dpg.add_text(c.state.neural_note)
                        dpg.add_button(label="Frame", callback=lambda: self.frame_hand())
                        dpg.add_button(label="Reset camera", callback=lambda: self.reset_camera())
                        dpg.add_text("", tag=tags.VIEWPORT_INFO)
                    dpg.add_image(self.vp_texture, tag=tags.VIEWPORT_IMAGE)
            with dpg.group(horizontal=True):
                dpg.add_text("idle", tag=tags.STATUS_JOB)
                dpg.add_progress_bar(tag=tags.STATUS_PROGRESS, width=220, default_value=0.0)
                dpg.add_text("", tag=tags.STATUS_ETA)
                dpg.add_button(label="Cancel", tag=tags.STATUS_CANCEL, callback=lambda: self.controller.cancel_jobs())
                dpg.add_button(label="Pause", tag=tags.STATUS_PAUSE, callback=lambda: self.controller.toggle_pause())
                dpg.add_text("", tag=tags.STATUS_FPS)
                dpg.add_text("", tag=tags.STATUS_SAVED, color=(160, 200, 160))
        with dpg.window(label="Error", modal=True, show=False, tag=tags.ERROR_POPUP, width=520, no_close=False):
            dpg.add_text("", tag=tags.ERROR_TEXT, wrap=500)
            dpg.add_button(label="OK", callback=lambda: dpg.configure_item(tags.ERROR_POPUP, show=False))
        self.shell.build_windows()
        with dpg.window(label="Diagnostics", show=False, tag=tags.DIAGNOSTICS_WINDOW, width=640, height=480):
            panels["Diagnostics"].build(self)
        dpg.set_primary_window(tags.PRIMARY, True)
        with dpg.theme() as no_child_fill, dpg.theme_component(dpg.mvAll):
            dpg.add_theme_color(dpg.mvThemeCol_ChildBg, (0, 0, 0, 0))  # the clear colour shows through
        dpg.bind_item_theme(tags.PRIMARY, no_child_fill)

    def show_tab(self, key: str) -> None:
        """Bring the panel tab ``key`` (e.g. ``"Personalise"``) to the front."""
        self.dpg.set_value(tags.TABS, tags.TAB.format(label=key))

    # -- intents used by panels ------------------------------------------------------------------

    def intent(self, fn, *args):
        """Run a user intent; errors go to the log and an error dialog, never out of the frame loop."""
        return self.controller.guarded(fn, *args)

    def changed(self, part: str) -> bool:
        """Whether the controller's ``part`` changed since this view last drew it (see
        :attr:`app.controller.Controller.revision`); answering True records it as drawn."""
        revision = self.controller.revision[part]
        if self._drawn.get(part) == revision:
            return False
        self._drawn[part] = revision
        return True

    def file_dialog(self, title, extensions, on_path, save=False, default="", directory=False) -> None:
        dpg = self.dpg

        def chosen(sender, app_data):
            dpg.delete_item(sender)
            path = (app_data or {}).get("file_path_name", "")
            if path:
                on_path(path)

        if dpg.does_item_exist(tags.FILE_DIALOG):
            dpg.delete_item(tags.FILE_DIALOG)
        vw, vh = dpg.get_viewport_client_width(), dpg.get_viewport_client_height()
        with dpg.file_dialog(label=title, directory_selector=directory, show=True, modal=True, tag=tags.FILE_DIALOG,
                             width=min(720, vw - 40), height=min(460, vh - 60),
                             default_filename=Path(default).stem if default else "", callback=chosen,
                             cancel_callback=lambda s, a: dpg.delete_item(s)):
            for ext in extensions or []:
                dpg.add_file_extension(ext)

    def update_plot(self, y_axis: str, x_axis: str, steps: list[int], losses: dict[str, list[float]]) -> None:
        dpg = self.dpg
        key = (y_axis, len(steps))
        if getattr(self, "_plot_keys", {}).get(y_axis) == key:
            return
        self.__dict__.setdefault("_plot_keys", {})[y_axis] = key
        dpg.delete_item(y_axis, children_only=True)
        for name, values in list(losses.items())[:6]:
            n = min(len(values), len(steps))
            dpg.add_line_series(list(map(float, steps[-n:])), values[-n:], label=name, parent=y_axis)
        if steps:
            dpg.fit_axis_data(x_axis)
            dpg.fit_axis_data(y_axis)

    def export_render(self, path: str) -> None:
        if self.last_image is None:
            raise PalmError(path, "nothing rendered yet")
        actions.export_image(path, self.viewport_image())
        self.controller.log(f"render saved to {path}")

    def export_mesh(self, path: str) -> None:
        c = self.controller
        actions.export_mesh(path, c.avatar, c.hand, c.state.pose.pose, c.rig_betas(), c.state.pose.left)
        c.log(f"mesh exported to {path}")

    def export_turntable(self, path: str) -> None:
        from palm.render.color import srgb_to_linear

        c = self.controller
        camera = OrbitCamera(**{k: getattr(self.camera, k) for k in ("target", "distance", "elevation", "fov_y")})

        def render_at(azimuth_deg: float) -> np.ndarray:
            camera.azimuth = self.camera.azimuth + math.radians(azimuth_deg)
            image = self.renderer.render(camera)
            self.ctx.screen.use()
            rgba = np.ones(image.shape, np.float32)
            rgba[..., :3] = srgb_to_linear(image[..., :3].astype(np.float32) / 255.0)
            return rgba

        actions.export_turntable(path, render_at)
        c.log(f"turntable exported to {path}")

    # -- viewport --------------------------------------------------------------------------------

    # -- viewport size ---------------------------------------------------------------------------

    def _on_resize(self) -> None:
        self._resized = True

    def _fit_viewport(self) -> None:
        """Make the viewport image fill its child window (measured after a frame was laid out)."""
        dpg = self.dpg
        image = dpg.get_item_state(tags.VIEWPORT_IMAGE)
        if not image.get("rect_min"):
            return
        cx, cy = dpg.get_item_pos(tags.VIEWPORT_CHILD)
        cw, ch = dpg.get_item_rect_size(tags.VIEWPORT_CHILD)
        ix, iy = image["rect_min"]
        w = max(int(cx + cw - PAD - ix), 64)
        h = max(int(cy + ch - PAD - iy), 64)
        if (w, h) != tuple(self.vp_size):
            self.resize_viewport(w, h)

    def resize_viewport(self, width: int, height: int) -> None:
        """A new texture and framebuffer at ``width`` x ``height``; the image shows it from the next frame."""
        dpg = self.dpg
        self.vp_size = (int(width), int(height))
        self._texture_serial += 1
        old, self.vp_texture = self.vp_texture, f"{tags.VIEWPORT_TEXTURE}/{self._texture_serial}"
        dpg.add_dynamic_texture(width, height, np.zeros(width * height * 4, np.float32), tag=self.vp_texture,
                                parent=tags.TEXTURES)
        dpg.configure_item(tags.VIEWPORT_IMAGE, texture_tag=self.vp_texture, width=width, height=height)
        dpg.delete_item(old)
        old, self.coarse_texture = self.coarse_texture, f"{tags.VIEWPORT_TEXTURE}/coarse/{self._texture_serial}"
        self._add_coarse_texture(width, height)
        dpg.delete_item(old)
        self.renderer.resize(width, height)
        self.render_dirty = True
        self.controller.discard_neural()
        if not self._user_camera and self.camera.photo is None:
            self.reset_camera()

    # The viewport's textures are dynamic (uploaded when set), not raw: Dear PyGui uploads a raw
    # texture on every frame, ~3 ms per idle frame at 790x692 on llvmpipe.

    def _add_coarse_texture(self, width: int, height: int) -> None:
        w, h = max(1, width // COARSE_FACTOR), max(1, height // COARSE_FACTOR)
        self.dpg.add_dynamic_texture(w, h, np.zeros(w * h * 4, np.float32), tag=self.coarse_texture,
                                     parent=tags.TEXTURES)

    def _show_texture(self, texture: str, image: np.ndarray) -> None:
        """Upload ``image`` (h, w, 4) uint8 to ``texture`` and show it in the viewport image."""
        self.dpg.set_value(texture, (image.astype(np.float32) * (1.0 / 255.0)).reshape(-1))
        if self.dpg.get_item_configuration(tags.VIEWPORT_IMAGE)["texture_tag"] != texture:
            self.dpg.configure_item(tags.VIEWPORT_IMAGE, texture_tag=texture)

    def _moved(self) -> None:
        self.render_dirty = True
        self._last_motion = time.monotonic()
        self.controller.discard_neural()

    def _on_wheel(self, sender, app_data) -> None:
        self._wheel += float(app_data)

    def _set_neural(self, on: bool) -> None:
        self.controller.set_neural_mode(on)
        self._moved()

    def _mouse(self) -> None:
        dpg = self.dpg
        hovered = dpg.is_item_hovered(tags.VIEWPORT_IMAGE)
        pos = dpg.get_mouse_pos(local=False)
        left, right = dpg.is_mouse_button_down(dpg.mvMouseButton_Left), dpg.is_mouse_button_down(dpg.mvMouseButton_Right)
        middle = dpg.is_mouse_button_down(dpg.mvMouseButton_Middle)
        if (left or right or middle) and (hovered or self._mouse_prev is not None):
            if self._mouse_prev is not None:
                dx, dy = pos[0] - self._mouse_prev[0], pos[1] - self._mouse_prev[1]
                if dx or dy:
                    if left:
                        self.camera.orbit(dx, dy)
                    else:
                        self.camera.pan(dx, dy, self.vp_size[1])
                    self._user_camera = True
                    self._moved()
            self._mouse_prev = (pos[0], pos[1])
        else:
            self._mouse_prev = None
        if self._wheel:
            if hovered:
                self.camera.zoom(self._wheel)
                self._user_camera = True
                self._moved()
            self._wheel = 0.0

    def _update_renderer(self) -> None:
        c, r = self.controller, self.renderer
        self._follow_avatar()
        if self.changed("avatar"):
            r.set_avatar(c.avatar)
            if not self._user_camera and self.camera.photo is None:
                self.reset_camera()  # the prior's bake replaced the rig: frame it as at start-up
            self._moved()
        if self.changed("pose"):
            r.set_bones(c.current_bones())
            self._moved()
        if c.state.light.lobes is not None and self.changed("light"):
            light = c.state.light
            r.set_environment(light.lobes, light.rotation, light.exposure)
            r.show_environment = light.show_background
            self._moved()

    def _maybe_neural(self) -> None:
        """In neural mode, once the camera has rested, start the progressive volume render."""
        c = self.controller
        if not (c.state.neural_mode and c.state.neural_available) or c.neural_job is not None:
            return
        if c.neural_image is None and time.monotonic() - self._last_motion > REST_BEFORE_NEURAL_S:
            w, h = self.vp_size
            r = self.renderer
            r.draw_avatar = False
            try:
                background = r.render(self.camera)
            finally:
                r.draw_avatar = True
                self.ctx.screen.use()
            c.start_neural(neural.NeuralView(self.camera.intrinsics(w, h), self.camera.world_to_camera(), w, h,
                                              background.copy(), float(2.0**c.state.light.exposure)))

    def _draw_viewport(self, full: bool = False) -> None:
        c = self.controller
        if self.changed("neural") and c.neural_image is not None:
            img = _fit(np.asarray(c.neural_image, np.float32), self.vp_size)
            self.last_image = (img * 255).astype(np.uint8)
            self._show_texture(self.vp_texture, self.last_image)
            return
        if not self.render_dirty:
            return
        t0 = time.perf_counter()
        backdrop = self._photo_backdrop() if self.overlay and self.camera.photo is not None else None
        self.renderer.draw_background = backdrop is None
        # while the user moves things, draw coarse frames; the full image follows once input rests
        moving = not full and time.monotonic() - self._last_motion < REFINE_AFTER_S
        self.coarse = COARSE_FACTOR if moving else 1
        small = self.coarse > 1 and backdrop is None  # uploaded as drawn, scaled up by the GUI
        try:
            image = self.renderer.render(self.camera, self.coarse, expand=not small)
        finally:
            self.renderer.draw_background = True
            self.ctx.screen.use()
        if backdrop is not None:
            image = _over_photo(image, backdrop, photo_rect(self.camera.photo, *self.vp_size))
        c.viewport_drawn(1000 * (time.perf_counter() - t0))
        if small:
            self._show_texture(self.coarse_texture, image)
        else:
            self.last_image = image
            self._show_texture(self.vp_texture, image)
        self.render_dirty = False

    def _status(self) -> None:
        dpg, c = self.dpg, self.controller
        active = [j for j in c.runner.active() if j.kind != "neural" or len(c.runner.active()) == 1]
        if active:
            job = active[-1]
            msg = job.progress.message if job.progress else ""
            more = f" (+{len(active) - 1})" if len(active) > 1 else ""
            dpg.set_value(tags.STATUS_JOB, f"{job.name}{more}{' [paused]' if job.paused else ''} {msg}")
            dpg.set_value(tags.STATUS_PROGRESS, job.fraction())
            eta = job.eta_s()
            dpg.set_value(tags.STATUS_ETA, "" if eta is None else f"ETA {int(eta) // 60}:{int(eta) % 60:02d}")
            dpg.configure_item(tags.STATUS_PAUSE, label="Resume" if job.paused else "Pause")
        else:
            dpg.set_value(tags.STATUS_JOB, "idle")
            dpg.set_value(tags.STATUS_PROGRESS, 0.0)
            dpg.set_value(tags.STATUS_ETA, "")
        dpg.configure_item(tags.STATUS_CANCEL, enabled=bool(active))
        dpg.configure_item(tags.NEURAL, enabled=c.state.neural_available)
        dpg.configure_item(tags.STATUS_PAUSE, enabled=bool(active))
        st = c.state
        dpg.set_value(tags.STATUS_FPS, f"frame {st.frame_ms:5.1f} ms")
        dpg.set_value(tags.VIEWPORT_INFO, f"viewport {st.render_ms:5.1f} ms  {self.vp_size[0]}x{self.vp_size[1]}  "
                      f"{self.renderer.n_lobes} SG lobes  env: {st.light.name}")
        if len(c.errors) > self._shown_errors:
            self._shown_errors = len(c.errors)
            dpg.set_value(tags.ERROR_TEXT, c.errors[-1][:2000])
            dpg.configure_item(tags.ERROR_POPUP, show=True)

    # -- frame loop ------------------------------------------------------------------------------

    def frame(self) -> bool:
        """One frame: callbacks, drops, job events, input, render, panels, draw. True when the 3D
        viewport was redrawn (an idle frame redraws nothing but the widgets)."""
        dpg, c = self.dpg, self.controller
        t0 = time.perf_counter()
        dpg.run_callbacks(dpg.get_callback_queue())
        while True:
            try:
                path = self.drops.get_nowait()
            except queue.Empty:
                break
            c.receive_drop(path)
        c.handle_events()
        self._mouse()
        if self.coarse > 1 and time.monotonic() - self._last_motion >= REFINE_AFTER_S:
            self.render_dirty = True  # input has rested: replace the coarse frame
        self._update_renderer()
        self._maybe_neural()
        drawn = self.renderer.renders
        self._draw_viewport()
        for panel in self.panels:
            panel.refresh(self)
        self.shell.refresh()
        self._status()
        dpg.render_dearpygui_frame()
        self._fit_viewport()
        self._resized = False
        c.frame_drawn(1000 * (time.perf_counter() - t0))
        return self.renderer.renders != drawn

    def step_frames(self, n: int = 1) -> None:
        for _ in range(n):
            self.frame()

    def busy(self) -> bool:
        """Whether anything is pending: a job running (the neural view's progressive render aside),
        a drop not taken, job events not applied, or a viewport image not drawn."""
        c = self.controller
        jobs = [j for j in c.runner.active() if j.kind != "neural"]
        return bool(jobs) or not self.drops.empty() or self.render_dirty or self.coarse > 1

    def run(self) -> None:
        """The interactive loop: an idle frame (nothing redrawn, no job) sleeps out the rest of
        :data:`IDLE_FRAME_S` instead of spinning."""
        while self.dpg.is_dearpygui_running():
            t0 = time.perf_counter()
            redrawn = self.frame()
            if not redrawn and not self.controller.runner.active():
                rest = IDLE_FRAME_S - (time.perf_counter() - t0)
                if rest > 0:
                    time.sleep(rest)
        self.close()

    def viewport_image(self) -> np.ndarray:
        """The last viewport image (H, W, 4) uint8 sRGB, row 0 = top, at full size (renders first if needed)."""
        if self.last_image is None or self.render_dirty or self.coarse > 1:
            self.render_dirty = True
            self._update_renderer()
            self._draw_viewport(full=True)
        return self.last_image

    def wait_for_bake(self, timeout_s: float = 90.0) -> bool:
        """Step frames until the prior's first bake has landed (the coarse one; the refine may go on)."""
        c = self.controller
        deadline = time.monotonic() + timeout_s
        while c.prior is not None and c.state.subject.bake_resolution == 0:
            if time.monotonic() > deadline or not any(j.kind == "bake" for j in c.runner.active()):
                c.handle_events()
                if c.state.subject.bake_resolution == 0:
                    return False
            self.frame()
            time.sleep(0.02)
        return True

    def wait_idle(self, timeout_s: float = 900.0) -> bool:
        """Step frames until every job has finished and its results are shown (:meth:`busy` is
        False for a few frames in a row); False when ``timeout_s`` ran out first."""
        deadline = time.monotonic() + timeout_s
        quiet = 0
        while quiet < 3:
            if time.monotonic() > deadline:
                return False
            self.frame()
            quiet = 0 if self.busy() else quiet + 1
            if quiet == 0:
                time.sleep(0.02)
        return True

    def screenshot(self, path: str | os.PathLike, warmup_frames: int = 6, timeout_s: float = 20.0,
                   jobs_timeout_s: float = 900.0) -> None:
        """Save the whole window as PNG (atomically) once every pending bake and job has finished
        (:meth:`wait_idle`; a log line when ``jobs_timeout_s`` expires) and ``warmup_frames`` more
        frames have been drawn."""
        import imageio.v3 as iio

        from palm.io import atomic_write, check_output_path

        check_output_path(path, (".png",))
        if not self.wait_idle(jobs_timeout_s):
            names = ", ".join(j.name for j in self.controller.runner.active()) or "viewport"
            line = f"screenshot: still busy after {jobs_timeout_s:.0f} s ({names}): it shows what is there"
            self.controller.log(line)
            print(f"warning: {line}", file=sys.stderr)
        self.step_frames(warmup_frames)
        self.wait_idle(min(jobs_timeout_s, 30.0))  # the warm-up frames may have resized the viewport
        box: dict = {}

        def grabbed(sender, buffer):
            box["image"] = np.array(buffer, dtype=np.float32, copy=True)
            box["shape"] = (int(buffer.get_height()), int(buffer.get_width()))

        self.dpg.output_frame_buffer(callback=grabbed)
        deadline = time.monotonic() + timeout_s
        while "image" not in box and time.monotonic() < deadline:
            self.frame()
        if "image" not in box:
            raise PalmError(path, "the window could not be captured")
        h, w = box["shape"]
        rgba = box["image"].reshape(h, w, 4)
        with atomic_write(path) as tmp:
            iio.imwrite(tmp, (np.clip(rgba[..., :3], 0, 1) * 255 + 0.5).astype(np.uint8), extension=".png")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(path, 0o666 & ~umask)  # a document, not a secret (the temporary file was 0600)

    def close(self) -> None:
        """Explicit shutdown: cancel and join jobs, stop drag-and-drop, release GL, destroy the context."""
        if self._closed:
            return
        self._closed = True
        self.controller.shutdown()
        if self.dnd is not None:
            self.dnd.stop()
        self.renderer.release()
        from app.programs import forget

        forget(self.ctx)
        self.dpg.destroy_context()


def entry() -> None:
    """Console-script entry point ``palm-studio`` (see :mod:`app.cli`)."""
    from app.cli import entry as cli_entry

    cli_entry()


def main(argv: list[str] | None = None) -> int:
    from app.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    entry()
