"""The studio's shell under Xvfb with real input (XTEST): menus, shortcuts, resizing, idle frames,
recent files, the photo view and a golden image of a preset pose."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

from app import tags

pytestmark = pytest.mark.gui
GOLDEN = Path(__file__).parent / "golden"


@pytest.fixture(scope="module")
def xin(studio):
    from app.studio import TITLE
    from app.xinput import XInput

    try:
        inp = XInput(TITLE, os.getpid())
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"no XTEST input: {exc}")
    yield inp
    inp.close()


def _until(studio, predicate, timeout_s=10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        studio.step_frames(1)
        if predicate():
            return True
        time.sleep(0.01)
    return False


def _menu_open(menu) -> bool:
    """An open menu reports the size of its popup (a closed one: 0 x 0)."""
    import dearpygui.dearpygui as dpg

    return dpg.get_item_state(menu).get("rect_size", [0, 0])[0] > 0


def _close_menus(studio, xin):
    xin.key("Escape")
    studio.step_frames(2)
    xin.click(900, 700)  # a click on the viewport closes any open menu
    studio.step_frames(3)


def test_file_menu_opens_with_a_mouse_click(studio, xin):
    import dearpygui.dearpygui as dpg

    studio.step_frames(2)
    assert not _menu_open(tags.MENU_FILE)
    x, y = dpg.get_item_state(tags.MENU_FILE)["pos"]  # "File": the menu bar's first entry
    try:
        xin.click(x + 12, y + 8)
        assert _until(studio, lambda: _menu_open(tags.MENU_FILE), 5)
        assert _until(studio, lambda: dpg.get_item_state(tags.MENU_FILE)["rect_size"][1] > 60, 5)  # items listed
    finally:
        _close_menus(studio, xin)
    assert not _menu_open(tags.MENU_FILE)


def test_help_menu_opens_with_the_keyboard(studio, xin):
    """Alt moves keyboard focus to the menu bar (Dear ImGui's keyboard navigation); arrows and Enter
    open Help; its "Keyboard shortcuts" item opens the shortcut list."""
    import dearpygui.dearpygui as dpg

    xin.click(900, 700)
    studio.step_frames(3)

    def tap(name):  # press, a few frames, release: as a person types
        xin.press(name)
        studio.step_frames(3)
        xin.press(name, down=False)
        studio.step_frames(3)

    try:
        tap("Alt_L")
        for _ in range(2):  # File -> View -> Help
            tap("Right")
        tap("Return")
        assert _until(studio, lambda: _menu_open(tags.MENU_HELP), 5), "Help menu did not open from the keyboard"
        tap("Return")  # its first item: Keyboard shortcuts
        assert _until(studio, lambda: dpg.is_item_shown(tags.HELP_WINDOW), 5)
    finally:
        dpg.configure_item(tags.HELP_WINDOW, show=False)
        _close_menus(studio, xin)


def test_ctrl_o_opens_the_photo_dialog(studio, xin):
    import dearpygui.dearpygui as dpg

    xin.move(900, 400)
    studio.step_frames(2)
    try:
        xin.key("o", "Control_L")
        assert _until(studio, lambda: dpg.does_item_exist(tags.FILE_DIALOG), 5)
        assert "photo" in dpg.get_item_label(tags.FILE_DIALOG).lower()
    finally:
        if dpg.does_item_exist(tags.FILE_DIALOG):
            dpg.delete_item(tags.FILE_DIALOG)
        studio.step_frames(2)
    xin.key("o")  # without Ctrl: nothing
    studio.step_frames(4)
    assert not dpg.does_item_exist(tags.FILE_DIALOG)


def test_f_frames_the_hand(studio, xin):
    (x0, y0), (w, h) = __import__("dearpygui.dearpygui").dearpygui.get_item_state(tags.VIEWPORT_IMAGE)["rect_min"], \
        studio.vp_size
    xin.move(x0 + w // 2, y0 + h // 2)
    studio.step_frames(2)
    studio.camera.target = studio.camera.target + np.array([0.3, 0.0, 0.0])
    studio._moved()
    studio.step_frames(2)
    xin.key("f")
    assert _until(studio, lambda: np.linalg.norm(studio.camera.target - studio._posed_points().mean(0)) < 0.05, 5)
    studio.reset_camera()
    studio.step_frames(2)


def test_idle_frames_do_not_redraw_the_viewport(studio):
    studio.step_frames(3)
    studio.wait_idle(120)  # jobs done and any coarse frame replaced
    renders = studio.renderer.renders
    redrawn = [studio.frame() for _ in range(10)]
    assert not any(redrawn) and studio.renderer.renders == renders
    studio.controller.set_pose_value(0, 2, 0.3)
    try:
        # one coarse frame follows the change at once, one full frame once input has rested
        assert studio.frame() and studio.renderer.renders == renders + 1 and studio.coarse > 1
        assert studio.wait_idle(30) and studio.coarse == 1 and studio.renderer.renders == renders + 2
        assert not any(studio.frame() for _ in range(5))
    finally:
        studio.controller.set_pose_value(0, 2, 0.0)
        studio.step_frames(2)


def _image_fills_child():
    import dearpygui.dearpygui as dpg

    from app.studio import PAD

    cx, cy = dpg.get_item_pos(tags.VIEWPORT_CHILD)
    cw, ch = dpg.get_item_rect_size(tags.VIEWPORT_CHILD)
    ix, iy = dpg.get_item_state(tags.VIEWPORT_IMAGE)["rect_min"]
    iw, ih = dpg.get_item_rect_size(tags.VIEWPORT_IMAGE)
    return abs(ix + iw - (cx + cw - PAD)) <= 2 and abs(iy + ih - (cy + ch - PAD)) <= 2


def test_resizing_the_window_resizes_the_viewport(studio, xin):
    before = tuple(studio.vp_size)
    assert _image_fills_child()
    width, height = studio.dpg.get_viewport_client_width(), studio.dpg.get_viewport_client_height()
    try:
        xin.window.configure(width=1024, height=640)  # what a window manager does on a user's drag
        xin.d.sync()
        assert _until(studio, lambda: studio.dpg.get_viewport_client_width() == 1024, 10)
        assert _until(studio, lambda: tuple(studio.vp_size) != before and _image_fills_child(), 10)
        studio.step_frames(3)
        small = tuple(studio.vp_size)
        assert small[0] < before[0] and small[1] < before[1] and min(small) > 300
        assert studio.renderer.size == small
        assert studio.viewport_image().shape[:2] == (small[1], small[0])
    finally:
        xin.window.configure(width=width, height=height)
        xin.d.sync()
        _until(studio, lambda: tuple(studio.vp_size) == before, 10)
    assert tuple(studio.vp_size) == before


def test_recent_files_are_written_atomically(tmp_path):
    from app.shell import RecentFiles

    path = tmp_path / "cfg" / "recent.json"
    recent = RecentFiles(path, limit=3)
    for name in ("a.jpg", "b.jpg", "a.jpg", "c", "d"):
        recent.add(str(tmp_path / name), "avatar" if name in ("c", "d") else "photo")
    data = json.loads(path.read_text())
    assert [Path(e["path"]).name for e in data["recent"]] == ["d", "c", "a.jpg"]
    assert [p.name for p in path.parent.iterdir()] == ["recent.json"]  # no temporary left behind
    assert RecentFiles(path).entries == recent.entries


def test_saved_results_reach_the_status_line_and_a_toast(studio, tmp_path):
    import dearpygui.dearpygui as dpg

    out = tmp_path / "render.png"
    studio.intent(studio.export_render, str(out))
    studio.step_frames(2)
    assert out.is_file()
    assert str(out) in dpg.get_value(tags.STATUS_SAVED)
    assert dpg.is_item_shown(tags.TOAST) and str(out) in studio.shell.toasts[-1]


def test_tabs_fit_the_panel_column(studio):
    import dearpygui.dearpygui as dpg

    from app.studio import TABS

    width = dpg.get_item_rect_size(tags.PANEL_CHILD)[0]
    # Dear PyGui's default font: 7 px per character, tab padding and spacing 12 px
    assert sum(7 * len(label) + 12 for _, label in TABS) < width - 16


def test_photo_view_reproduces_the_photo_camera(studio):
    from app.camera import PhotoCamera, fit_intrinsics

    K = np.array([[300.0, 0, 128], [0, 300.0, 128], [0, 0, 1]])
    rt = np.eye(4)
    rt[2, 3] = 0.5
    photo = PhotoCamera.from_avatar({"K": K, "Rt": rt, "width": 256, "height": 256}, transl=[0.0, 0.0, 0.0])
    old = studio.photo_camera
    studio.photo_camera = photo
    try:
        studio.photo_view()
        studio.step_frames(2)
        w, h = studio.vp_size
        assert np.allclose(studio.camera.world_to_camera(), rt)
        assert np.allclose(studio.camera.intrinsics(w, h), fit_intrinsics(K, 256, 256, w, h))
        studio.camera.orbit(5, 0)  # a drag leaves the photo view, from where it was
        assert studio.camera.photo is None
    finally:
        studio.photo_camera = old
        studio.reset_camera()
        studio.step_frames(2)


def test_golden_preset_pose(studio):
    """The ``fist`` preset at 320x240 from the start-up view matches the stored image (tolerant)."""
    c = studio.controller
    if c.prior is None or not c.state.subject.bake_resolution:
        pytest.skip("the default prior is not installed")
    from palm.assets import DEFAULT_ENV

    old_pose, old_size = c.state.pose.pose.copy(), tuple(studio.vp_size)
    # a known state whatever the earlier tests left: default light, the prior's mean subject
    c.reset_light()
    c.set_environment(DEFAULT_ENV)
    s = c.state.subject
    if s.compare or np.any(s.shape) or np.any(s.appearance):
        s.compare = False
        s.shape[:], s.appearance[:] = 0.0, 0.0
        c.bump("codes")
        c.request_bake()
    assert studio.wait_idle(300)
    try:
        c.apply_preset("fist")
        studio.step_frames(1)
        studio.renderer.resize(320, 240)
        studio.vp_size = (320, 240)
        studio.reset_camera()
        studio._update_renderer()
        image = studio.renderer.render(studio.camera)[..., :3]
        studio.ctx.screen.use()
    finally:
        studio.vp_size = old_size
        studio.renderer.resize(*old_size)
        c.set_pose(old_pose)
        studio.reset_camera()
        studio.step_frames(2)
    _match_golden(np.ascontiguousarray(image), "fist_320x240.png")


def _refined_avatar(prior, folder: Path, left: bool = False) -> Path:
    """An avatar folder as personalisation writes it: the prior's mean subject in the relaxed pose,
    seen by a 200 px photo camera, lit by a two-lobe fitted light, with a baked ``mesh.safetensors``
    (``left``: the photo's hand is a left one, fitted as the right hand of the mirrored photo)."""
    import torch

    from palm.avatar import Avatar, save_avatar
    from palm.bake import bake_from_prior, save_baked
    from palm.hand import load_pose
    from palm.render.views import framing_camera, present_upright

    hand = prior.model.hand
    pose = present_upright(load_pose("relaxed"))
    with torch.no_grad():
        posed = hand(torch.as_tensor(pose)[None], torch.zeros(1, hand.n_betas))
    cam = framing_camera(posed.vertices[0].numpy(), 200, 25.0, 10.0, joints=posed.joints[0].numpy())
    zeros = torch.zeros(prior.pca_shape.n_components)
    z_s, z_a = prior.codes_from_coeffs(zeros, zeros)
    light = torch.tensor([[0.3, 1.0, 0.6, 2.0, 2.5, 2.2, 2.0], [0.0, -1.0, 0.0, 1.0, 0.4, 0.4, 0.4]])
    save_avatar(folder, Avatar(zeros, zeros, z_s, z_a, light, pose, np.zeros(hand.n_betas), np.zeros(3),
                               cam.to("cpu").to_dict(), prior.content_hash, left=left))
    save_baked(folder / "mesh.safetensors", bake_from_prior(prior, resolution=48))
    return folder


def _avatar_views(studio, folder: Path, envs: list) -> list[np.ndarray]:
    """Open the avatar at ``folder`` and render its photo view at 200x200 without the background,
    once per environment in ``envs`` (None: the avatar's own fitted light). (200, 200, 4) uint8 each."""
    c = studio.controller
    old_pose, old_env, old_size = c.state.pose.pose.copy(), c.state.light.name, tuple(studio.vp_size)
    views = []
    try:
        c.load_avatar(str(folder))
        assert studio.wait_idle(120)
        studio.renderer.resize(200, 200)
        studio.vp_size = (200, 200)
        studio.photo_view()
        studio.renderer.draw_background = False
        for env in envs:
            if env is not None:
                c.set_environment(env)
            studio._update_renderer()
            views.append(studio.renderer.render(studio.camera).copy())
        studio.ctx.screen.use()
    finally:
        studio.renderer.draw_background = True
        studio.vp_size = old_size
        studio.renderer.resize(*old_size)
        c.set_compare(False)
        c.state.subject.avatar_path, c.state.subject.personal_mesh = "", None
        c.set_environment(old_env)
        c.set_pose(old_pose)
        studio.reset_camera()
        studio.wait_idle(120)
    return views


def _match_golden(image: np.ndarray, name: str, max_mean_levels: float = 6.0) -> None:
    """Compare ``image`` (H, W, C) uint8 with ``golden/name``; a missing golden is written and skips."""
    import imageio.v3 as iio

    golden = GOLDEN / name
    if not golden.is_file():
        GOLDEN.mkdir(exist_ok=True)
        iio.imwrite(golden, image)
        pytest.skip(f"golden image written: {golden}")
    expected = iio.imread(golden)
    assert expected.shape == image.shape, (expected.shape, image.shape)
    diff = np.abs(image.astype(float) - expected.astype(float))
    assert diff.mean() < max_mean_levels, f"{name}: mean abs diff {diff.mean():.2f} levels"


def test_golden_avatar_photo_view_and_relit(studio, tmp_path):
    """A refined avatar in its photo's view, under its own fitted light and relit by the ``sunset``
    and ``night`` presets, matches the stored images; relighting changes the hand's colours."""
    c = studio.controller
    if c.prior is None:
        pytest.skip("the default prior is not installed")
    folder = _refined_avatar(c.prior.prior, tmp_path / "avatar")
    own, sunset, night = _avatar_views(studio, folder, [None, "sunset", "night"])
    hand = (own[..., 3] > 127) & (sunset[..., 3] > 127)
    assert hand.sum() > 2000
    assert np.array_equal(own[..., 3] > 127, sunset[..., 3] > 127)  # the light moves no geometry
    own_c, sunset_c, night_c = (v[..., :3][hand].astype(float).mean(0) for v in (own, sunset, night))
    assert np.abs(own_c - sunset_c).max() > 10 and night_c.mean() < sunset_c.mean(), (own_c, sunset_c, night_c)
    _match_golden(own, "avatar_photo_view_200.png")
    _match_golden(sunset, "avatar_sunset_200.png")
    _match_golden(night, "avatar_night_200.png")


@pytest.mark.parametrize("left", [False, True], ids=["right", "left"])
def test_photo_view_of_a_refined_avatar_matches_palm_render(studio, tmp_path, left):
    """Opening an avatar with a refined mesh shows that mesh in its photo's view with the photo's
    framing: the viewport's silhouette is the one ``palm render --avatar`` (the engine's raster
    renderer, same mesh, camera and light) draws, and their colours agree roughly (the viewport
    pre-integrates the light and casts no shadows). A left hand too: the studio draws the mirrored
    hand and the engine flips its render of the fitted right hand; both show the photo's hand."""
    from palm.scene import load_scene, render_scene

    c = studio.controller
    if c.prior is None:
        pytest.skip("the default prior is not installed")
    folder = _refined_avatar(c.prior.prior, tmp_path / "avatar", left)
    engine = render_scene(load_scene(prior=c.prior.path, avatar=str(folder))).numpy()
    (view,) = _avatar_views(studio, folder, [None])
    ours, theirs = view[..., 3] > 127, engine[..., 3] > 0.5
    assert theirs.sum() > 2000
    assert (ours & theirs).sum() / (ours | theirs).sum() > 0.95
    from palm.render.color import linear_to_srgb

    both = ours & theirs
    colour_gl = view[..., :3][both].mean(0) / 255.0
    colour_engine = linear_to_srgb(np.clip(engine[..., :3][both], 0, 1)).mean(0)
    assert np.abs(colour_gl - colour_engine).max() < 0.12, (colour_gl, colour_engine)
