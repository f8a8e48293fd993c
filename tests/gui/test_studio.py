"""The studio under a virtual X server, driven in-process (one shared application)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from app import tags
from palm.errors import PalmError
from palm.jobs import Progress, check_cancel

pytestmark = pytest.mark.gui


def _render(studio) -> np.ndarray:
    studio.render_dirty = True
    studio.step_frames(2)
    return studio.viewport_image().copy()


def test_viewport_shows_a_hand_in_the_middle(studio, changed_fraction):
    with_hand = _render(studio)
    studio.renderer.draw_avatar = False
    try:
        background = _render(studio)
    finally:
        studio.renderer.draw_avatar = True
    h, w = with_hand.shape[:2]
    assert with_hand.shape == (studio.vp_size[1], studio.vp_size[0], 4)
    centre = (slice(h // 4, 3 * h // 4), slice(w // 4, 3 * w // 4))
    assert changed_fraction(with_hand[centre], background[centre]) > 0.05
    border = np.concatenate([with_hand[:4].reshape(-1, 4), with_hand[-4:].reshape(-1, 4)])
    border_bg = np.concatenate([background[:4].reshape(-1, 4), background[-4:].reshape(-1, 4)])
    assert changed_fraction(border, border_bg) < 0.05  # the framed hand leaves the edges free


def test_posing_changes_the_image_but_not_the_mesh(studio, changed_fraction):
    c = studio.controller
    before, vertices = _render(studio), c.avatar.vertices.copy()
    old = c.state.pose.pose.copy()
    try:
        for joint in (1, 2, 4, 5):  # bend index and middle fingers
            c.set_pose_value(joint, 2, 1.2)
        after = _render(studio)
    finally:
        c.set_pose(old)
    assert changed_fraction(before, after) > 0.005
    assert c.avatar.vertices is not None and np.array_equal(c.avatar.vertices, vertices)


def test_pose_slider_callback_moves_the_bones(studio, settle):
    import dearpygui.dearpygui as dpg

    c = studio.controller
    bones_before = c.bones.copy()
    slider = tags.POSE_SLIDER.format(joint=0, comp=1)
    dpg.get_item_callback(slider)(slider, 0.8, dpg.get_item_user_data(slider))
    try:
        settle(studio)
        assert not np.allclose(c.bones, bones_before)
    finally:
        c.set_pose_value(0, 1, 0.0)
        settle(studio)


def test_shape_control_changes_the_image(studio, settle, changed_fraction):
    c = studio.controller
    before = _render(studio)
    try:
        c.set_code("shape", 0, 3.0 * (c.prior.shape_std[0] if c.prior else 1.0))
        settle(studio, lambda: not c.runner.active(), timeout_s=30)
        after = _render(studio)
    finally:
        c.reset_codes()
        settle(studio, lambda: not c.runner.active(), timeout_s=30)
    assert changed_fraction(before, after) > 0.002


def test_switching_environment_changes_colours(studio, settle):
    c = studio.controller
    light = c.state.light
    old = light.name
    light.fitted["test-warm"] = np.array([[0, 1, 0, 2.0, 3.0, 1.2, 0.3], [0, -1, 0, 2.0, 1.0, 0.4, 0.1]], np.float32)
    light.fitted["test-cool"] = np.array([[0, 1, 0, 2.0, 0.3, 1.0, 3.0], [0, -1, 0, 2.0, 0.1, 0.3, 1.0]], np.float32)
    try:
        c.set_environment("test-warm")
        warm = _render(studio)[..., :3].reshape(-1, 3).mean(0)
        c.set_environment("test-cool")
        cool = _render(studio)[..., :3].reshape(-1, 3).mean(0)
    finally:
        del light.fitted["test-warm"], light.fitted["test-cool"]
        c.set_environment(old)
        settle(studio)
    assert warm[0] > warm[2] + 20 and cool[2] > cool[0] + 20


def test_environment_presets_differ(studio):
    c = studio.controller
    if len(c.env_names) < 2:
        pytest.skip("fewer than two environment presets installed")
    old = c.state.light.name
    means = []
    try:
        for name in c.env_names[:2]:
            c.set_environment(name)
            means.append(_render(studio)[..., :3].reshape(-1, 3).mean(0))
    finally:
        c.set_environment(old)
    assert np.abs(means[0] - means[1]).max() > 3


def _slow_job(emit, cancel, steps=400):
    for i in range(steps):
        check_cancel(cancel)
        emit(Progress(i, steps, "sleeping"))
        time.sleep(0.02)
    return "done"


def test_cancel_button_stops_a_job_and_app_stays_responsive(studio, settle, changed_fraction):
    import dearpygui.dearpygui as dpg

    c = studio.controller
    job = c.start_job("slow test job", _slow_job)
    assert settle(studio, lambda: c.runner.jobs[job].progress is not None, timeout_s=5)
    assert dpg.get_value(tags.STATUS_JOB).startswith("slow test job")
    assert 0.0 <= dpg.get_value(tags.STATUS_PROGRESS) < 1.0
    dpg.get_item_callback(tags.STATUS_CANCEL)()  # the status bar's Cancel button
    assert settle(studio, lambda: c.runner.jobs[job].done, timeout_s=5)
    assert any("slow test job: cancelled" in line for line in c.state.log)
    frames = c.state.frames
    before = _render(studio)
    c.set_pose_value(0, 2, 0.7)
    try:
        after = _render(studio)
    finally:
        c.set_pose_value(0, 2, 0.0)
    assert c.state.frames > frames and changed_fraction(before, after) > 0.005
    assert dpg.get_value(tags.STATUS_JOB) == "idle"


def _failing_job(emit, cancel):
    emit(Progress(1, 3, "about to fail"))
    raise PalmError("some/input.json", "deliberately broken")


def test_failing_job_is_logged_and_app_stays_usable(studio, settle):
    import dearpygui.dearpygui as dpg

    c = studio.controller
    job = c.start_job("failing test job", _failing_job)
    assert settle(studio, lambda: c.runner.jobs[job].done, timeout_s=5)
    studio.step_frames(2)
    failed = [line for line in c.state.log if "failing test job: FAILED" in line]
    assert failed and "deliberately broken" in failed[-1] and "Traceback" in failed[-1]
    assert dpg.is_item_shown(tags.ERROR_POPUP)
    assert "deliberately broken" in dpg.get_value(tags.ERROR_TEXT)
    dpg.configure_item(tags.ERROR_POPUP, show=False)
    assert _render(studio).shape[0] == studio.vp_size[1]


def test_pause_blocks_between_steps(studio, settle):
    c = studio.controller
    job = c.start_job("pausable job", _slow_job, 60)
    try:
        assert settle(studio, lambda: c.runner.jobs[job].progress is not None, timeout_s=5)
        c.runner.pause(job)
        studio.step_frames(3)
        step = c.runner.jobs[job].progress.step
        time.sleep(0.3)
        studio.step_frames(3)
        assert c.runner.jobs[job].progress.step <= step + 1
        c.runner.resume(job)
        assert settle(studio, lambda: c.runner.jobs[job].progress.step > step + 3, timeout_s=5)
    finally:
        c.runner.cancel(job)
        settle(studio, lambda: c.runner.jobs[job].done, timeout_s=5)


def test_camera_orbit_changes_the_view(studio, changed_fraction):
    before = _render(studio)
    az = studio.camera.azimuth
    studio.camera.orbit(120, 0)
    studio._moved()
    try:
        after = _render(studio)
    finally:
        studio.camera.azimuth = az
        studio._moved()
    assert changed_fraction(before, after) > 0.01
