"""The panels under Xvfb with real pointer input (XTest): PCA sliders in sigma, pose sliders held at
the joint limits, the export dialog, labelled loss plots, progress and notifications."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from app import tags

pytestmark = pytest.mark.gui


# -- real input ------------------------------------------------------------------------------------


class Pointer:
    """The X pointer driven through the XTEST extension (as a user's mouse would)."""

    def __init__(self, studio):
        from Xlib import display

        self.studio, self.d = studio, display.Display()
        if not self.d.has_extension("XTEST"):
            pytest.skip("the X server has no XTEST extension")

    def move(self, x: float, y: float) -> None:
        from Xlib import X
        from Xlib.ext import xtest

        xtest.fake_input(self.d, X.MotionNotify, x=int(x), y=int(y))
        self.d.sync()
        self._frames()

    def button(self, down: bool) -> None:
        from Xlib import X
        from Xlib.ext import xtest

        xtest.fake_input(self.d, X.ButtonPress if down else X.ButtonRelease, 1)
        self.d.sync()
        self._frames()

    def _frames(self, n: int = 3) -> None:
        for _ in range(n):
            time.sleep(0.01)
            self.studio.step_frames(1)

    def item_centre(self, tag) -> tuple[float, float, float]:
        """Screen position of an item's centre and its width."""
        import dearpygui.dearpygui as dpg

        (x, y), (w, h) = dpg.get_item_rect_min(tag), dpg.get_item_rect_size(tag)
        vx, vy = dpg.get_viewport_pos()
        return vx + x + w / 2, vy + y + h / 2, w

    def drag(self, tag, dx: float) -> None:
        """Press on the slider's left part (not its label), move by ``dx`` pixels, release."""
        import dearpygui.dearpygui as dpg

        _, y, _ = self.item_centre(tag)
        x = dpg.get_viewport_pos()[0] + dpg.get_item_rect_min(tag)[0] + 20
        self.move(x, y)
        self.button(True)
        for k in range(1, 9):
            self.move(x + dx * k / 8, y)
        self.button(False)

    def close(self) -> None:
        self.d.close()


def show_tab(studio, word: str) -> None:
    import dearpygui.dearpygui as dpg

    for tab in dpg.get_item_children(tags.TABS, 1) or []:
        if word in str(dpg.get_item_alias(tab) or dpg.get_item_label(tab)).lower():
            dpg.set_value(tags.TABS, tab)
    studio.step_frames(3)


@pytest.fixture
def pointer(studio):
    p = Pointer(studio)
    yield p
    p.close()


def wait(studio, predicate, timeout_s: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        studio.step_frames(1)
        time.sleep(0.02)
    return True


# -- PCA sliders -------------------------------------------------------------------------------------


def test_pca_sliders_span_three_sigma_of_every_component(studio):
    import dearpygui.dearpygui as dpg

    c = studio.controller
    if c.prior is None:
        pytest.skip("no prior installed")
    for which, fmt in (("shape", tags.SHAPE_SLIDER), ("appearance", tags.APPEARANCE_SLIDER)):
        n = len(c.prior.std(which))
        assert n == int(getattr(c.prior.prior, f"pca_{which}").n_components)  # every component
        for i in range(n):
            cfg = dpg.get_item_configuration(fmt.format(i=i))
            assert (cfg["min_value"], cfg["max_value"]) == (-3.0, 3.0)
            assert cfg["label"].startswith(f"{which} {i + 1} (") and "%)" in cfg["label"]


def test_dragging_a_pca_slider_sets_sigma_units(studio, pointer):
    c = studio.controller
    if c.prior is None:
        pytest.skip("no prior installed")
    show_tab(studio, "shape")
    tag = tags.SHAPE_SLIDER.format(i=0)
    try:
        pointer.drag(tag, 600)  # past the right end
        sd = float(c.prior.std("shape")[0])
        assert c.state.subject.shape[0] == pytest.approx(3.0 * sd, rel=1e-4)
        assert c.code_sigmas("shape")[0] == pytest.approx(3.0, abs=1e-4)
        held = c.current_subject().shape[0]  # what is baked: inside the training subjects' range
        assert held <= 3.0 * sd + 1e-6
        if c.prior.shape_range is not None:
            assert held == pytest.approx(min(3.0 * sd, float(c.prior.shape_range[0, 1])), rel=1e-4)
    finally:
        c.reset_codes()
        wait(studio, lambda: not any(j.kind == "bake" for j in c.runner.active()))


def test_avatar_coefficients_are_shown_inside_the_sliders(studio, standin_prior, standin_avatar):
    import dearpygui.dearpygui as dpg

    from app.panels import subject

    c = studio.controller
    old = c.prior.path if c.prior is not None else None
    try:
        c.use_prior(standin_prior)
        c.load_avatar(standin_avatar)
        studio.step_frames(3)
        note = dpg.get_value(subject.RANGE_NOTE)
        for which, fmt in (("shape", tags.SHAPE_SLIDER), ("appearance", tags.APPEARANCE_SLIDER)):
            sig = c.code_sigmas(which)
            for i, v in enumerate(sig):
                cfg = dpg.get_item_configuration(fmt.format(i=i))
                assert cfg["min_value"] <= v <= cfg["max_value"]
                assert dpg.get_value(fmt.format(i=i)) == pytest.approx(float(v), abs=1e-4)
                if abs(v) > 3.0:  # widened: said, not silent
                    assert f"{which} {i + 1} at" in note and dpg.is_item_shown(subject.RANGE_NOTE)
                else:
                    assert (cfg["min_value"], cfg["max_value"]) == (-3.0, 3.0)
    finally:
        if old:
            c.use_prior(old)
        wait(studio, lambda: not any(j.kind == "bake" for j in c.runner.active()), 120)


# -- pose sliders ------------------------------------------------------------------------------------


def test_pose_slider_stops_at_the_joint_limit(studio, pointer):
    import dearpygui.dearpygui as dpg

    from app.controller import joint_limits
    from palm.hand.poses import pose_within_limits

    c = studio.controller
    show_tab(studio, "pose")
    old = c.state.pose.pose.copy()
    joint = 2  # index middle joint (PIP): 0..110 degrees of flexion
    tag = tags.POSE_SLIDER.format(joint=joint, comp=0)
    lo, hi = joint_limits()[joint, 0]
    try:
        assert dpg.get_item_configuration(tag)["max_value"] == pytest.approx(math.degrees(hi), abs=1e-3)
        pointer.drag(tag, 600)
        assert c.pose_angles()[joint, 0] == pytest.approx(hi, abs=1e-3)
        pointer.drag(tag, -600)
        assert c.pose_angles()[joint, 0] == pytest.approx(lo, abs=1e-3)  # no backward bending
        assert pose_within_limits(c.state.pose.pose, frames=c.joint_frames()).all()
        c.set_pose_value(14, 2, -2.5)  # thumb bent far backwards through the axis-angle path
        assert pose_within_limits(c.state.pose.pose, frames=c.joint_frames())[14]
    finally:
        c.set_pose(old)
        studio.step_frames(2)


def test_presets_use_the_command_line_names(studio):
    import dearpygui.dearpygui as dpg

    from palm.hand import POSE_PRESETS

    c = studio.controller
    assert tuple(dpg.get_item_configuration(tags.POSE_PRESET)["items"]) == tuple(POSE_PRESETS)
    old = c.state.pose.pose.copy()
    try:
        name = "fist" if "fist" in POSE_PRESETS else POSE_PRESETS[0]
        dpg.get_item_callback(tags.POSE_PRESET)(tags.POSE_PRESET, name)
        studio.step_frames(2)
        assert c.state.pose.preset == name and dpg.get_value(tags.POSE_PRESET) == name
    finally:
        c.set_pose(old)


def test_wrist_flex_keeps_the_hand_in_view(studio, changed_fraction):
    c = studio.controller
    old = c.state.pose.pose.copy()
    r = studio.renderer

    def frame():
        studio.render_dirty = True
        studio.step_frames(2)
        return studio.viewport_image().copy()

    try:
        r.draw_avatar = False
        background = frame()
        r.draw_avatar = True
        for degrees in (-500.0, 500.0):  # the sliders' ends, whatever is asked
            c.set_pose(old)
            for k in range(3):
                c.set_joint_angle(0, k, degrees)
            hand = np.abs(frame()[..., :3].astype(int) - background[..., :3].astype(int)).max(-1) > 8
            assert hand.mean() > 0.01  # the hand is still in the picture
    finally:
        r.draw_avatar = True
        c.set_pose(old)
        studio.step_frames(2)


# -- export --------------------------------------------------------------------------------------------


def test_export_render_at_the_chosen_resolution_confirms_the_path(studio, tmp_path, photo_path):
    import dearpygui.dearpygui as dpg

    from app.panels import export
    from palm.errors import PalmError

    c = studio.controller
    show_tab(studio, "export")
    dpg.set_value(export.WIDTH, 320)
    dpg.set_value(export.HEIGHT, 200)
    dpg.set_value(export.TRANSPARENT, True)
    out = tmp_path / "render.png"
    studio.intent(export.save_render, studio, str(out))
    studio.step_frames(2)
    assert out.is_file()
    from PIL import Image

    img = np.asarray(Image.open(out))
    assert img.shape == (200, 320, 4)
    assert img[..., 3].min() == 0 and img[..., 3].max() == 255  # transparent around an opaque hand
    assert c.notice["path"] == str(out) and str(out) in dpg.get_value(export.NOTICE)
    dpg.set_value(export.TRANSPARENT, False)
    pose_file = tmp_path / "pose.json"  # an opened file is an input: no export may replace it
    c.set_left(True)
    c.save_pose_file(str(pose_file))
    c.set_left(False)
    c.load_pose_file(str(pose_file))
    assert c.state.pose.left  # the file keeps the hand's side
    c.set_left(False)
    with pytest.raises(PalmError, match="input"):
        c.save_pose_file(str(pose_file))
    with pytest.raises(PalmError, match="unsupported"):
        export.save_render(studio, str(tmp_path / "render.jpg"))


def test_mesh_export_is_at_least_as_fine_as_the_viewport(studio, tmp_path):
    c = studio.controller
    out = tmp_path / "hand.ply"
    shown = len(c.avatar.vertices)
    c.export_mesh(str(out), 0 if c.prior is None else max(c.bake_resolutions))
    assert wait(studio, lambda: c.notice["path"] == str(out), 180)
    assert out.is_file()
    n = int(c.notice["text"].split("(")[1].split()[0])
    assert n >= shown


# -- plots, progress, notices, photo --------------------------------------------------------------------


def test_loss_plot_has_labelled_series_and_a_legend(studio):
    import dearpygui.dearpygui as dpg

    from app.panels import personalize

    c = studio.controller
    photo = c.state.photo
    photo.steps, photo.losses = [1, 2, 3], {"rgb": [1.0, 0.5, 0.2], "mask": [0.3, 0.2, 0.1]}
    try:
        studio.step_frames(2)
        series = dpg.get_item_children(tags.PHOTO_PLOT_Y, 1)
        assert sorted(dpg.get_item_label(s) for s in series) == ["mask", "rgb"]
        kinds = [dpg.get_item_type(k) for slot in dpg.get_item_children(personalize.PLOT).values() for k in slot]
        assert any("Legend" in k for k in kinds)
    finally:
        photo.steps, photo.losses = [], {}


def test_environment_switch_shows_a_spinner(studio):
    import dearpygui.dearpygui as dpg

    from app.panels import lighting

    c = studio.controller
    old = c.state.light.name
    other = next(n for n in c.env_names if n != old)
    try:
        c.select_environment(other)
        studio.step_frames(1)
        assert c.env_loading == other and dpg.is_item_shown(lighting.ENV_BUSY)
        assert wait(studio, lambda: c.state.light.name == other, 120)
        studio.step_frames(1)
        assert not dpg.is_item_shown(lighting.ENV_BUSY)
    finally:
        c.set_environment(old)
        studio.step_frames(1)


def test_reset_light(studio):
    c = studio.controller
    c.set_rotation(40.0)
    c.set_exposure(1.5)
    c.reset_light()
    studio.step_frames(1)
    assert c.state.light.rotation == 0.0 and c.state.light.exposure == 0.0


def test_opening_a_photo_brings_the_personalise_tab(studio, photo_path):
    import dearpygui.dearpygui as dpg

    c = studio.controller
    show_tab(studio, "pose")
    try:
        c.open_photo(photo_path)
        studio.step_frames(2)
        label = str(dpg.get_item_alias(dpg.get_value(tags.TABS)) or dpg.get_item_label(dpg.get_value(tags.TABS)))
        assert "personali" in label.lower()
    finally:
        c.cancel_kind("preprocess")
        wait(studio, lambda: not any(j.kind == "preprocess" for j in c.runner.active()))
        c.reject_photo()
