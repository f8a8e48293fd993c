"""The studio's engine wiring with a (stand-in) prior: PCA re-bakes, avatars, the neural view."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
RES = (20, 28)  # small grids: coarse, refine


def test_baker_matches_bake_from_prior(standin_prior):
    """The cached exact baker equals the engine's bake; the interpolating one has the same mesh."""
    from palm.bake import RIG_FILL, bake_from_prior, closed_outward
    from palm.prior import load_prior
    from palm.rebake import PriorBaker

    prior = load_prior(standin_prior)
    shape, appearance = np.array([2.0, -1.0, 0, 0, 0], np.float32), np.array([1.0, 0.5, 0, 0, 0], np.float32)
    ref = bake_from_prior(prior, shape, appearance, RES[0], rig_fill=RIG_FILL)
    exact = PriorBaker(prior, RES[0], exact=True)
    exact.bake()  # builds the caches with another code first
    got = exact.bake(shape, appearance)
    np.testing.assert_allclose(got.vertices, ref.vertices, atol=1e-6)
    np.testing.assert_array_equal(got.faces, ref.faces)
    np.testing.assert_allclose(got.albedo, ref.albedo, atol=1e-5)
    np.testing.assert_allclose(got.skin_weights, ref.skin_weights, atol=1e-5)
    coarse = PriorBaker(prior, RES[0], exact=False).bake(shape, appearance)
    np.testing.assert_allclose(coarse.vertices, ref.vertices, atol=1e-6)
    # the bakers' closedness flag (from the box border) agrees with the mesh's own edges and volume
    # (the stand-in's blob is cut by the box: False; the real prior's bake is closed, test_shader_parity)
    assert ref.closed == got.closed == coarse.closed == closed_outward(ref.vertices, ref.faces)
    assert np.abs(coarse.albedo - ref.albedo).mean() < 0.02


def test_pca_slider_moves_the_baked_mesh(xvfb, standin_prior, wait_jobs):
    from app.controller import Controller

    c = Controller(standin_prior, bake_resolutions=RES)
    try:
        assert c.prior is not None and c.state.subject.can_rebake
        assert wait_jobs(c) and c.state.subject.bake_resolution == RES[1]
        before = c.avatar.vertices.copy()
        c.set_code("shape", 0, 2.5 * float(c.prior.shape_std[0]))
        assert wait_jobs(c)
        after, albedo_before = c.avatar.vertices, c.avatar.albedo.copy()
        assert after.shape != before.shape or np.abs(after - before).max() > 1e-4
        c.set_code("appearance", 0, 2.5 * float(c.prior.appearance_std[0]))
        assert wait_jobs(c)
        assert np.array_equal(c.avatar.vertices, after)  # appearance moves colours, not the mesh
        assert np.abs(c.avatar.albedo - albedo_before).max() > 1e-5
        c.random_codes()
        assert np.any(c.state.subject.shape != 0) and wait_jobs(c)
    finally:
        c.shutdown()


def test_avatar_opens_with_its_codes_light_and_pose(xvfb, standin_prior, standin_avatar, wait_jobs):
    from app import actions
    from app.controller import Controller
    from palm.avatar import load_avatar
    from palm.errors import PalmError

    c = Controller(standin_prior, bake_resolutions=RES)
    try:
        wait_jobs(c)
        mean_mesh = c.avatar.vertices.copy()
        c.load_avatar(standin_avatar)
        saved = load_avatar(standin_avatar)
        s = c.state.subject
        assert s.compare and np.allclose(s.personal_shape_code, saved.shape_code.numpy())
        assert c.state.light.name == actions.AVATAR_ENV
        assert np.allclose(c.state.light.lobes, saved.light.numpy())
        assert np.allclose(c.state.pose.pose, saved.pose)
        assert wait_jobs(c)
        assert c.avatar.vertices.shape != mean_mesh.shape or np.abs(c.avatar.vertices - mean_mesh).max() > 1e-4
        c.set_compare(False)  # back to the slider values
        assert wait_jobs(c) and not c.state.subject.compare
        with pytest.raises(PalmError, match="prior"):
            actions.load_avatar_file(standin_avatar, None)
    finally:
        c.shutdown()


def test_neural_render_job_produces_an_image(standin_prior):
    """The progressive neural job renders the prior with the viewport's camera over its background."""
    from app import actions, neural
    from app.camera import OrbitCamera
    from palm.hand import load_pose
    from palm.jobs import Preview, Progress

    prior, _ = actions.load_prior(standin_prior)
    w, h = 40, 32
    camera = OrbitCamera(elevation=0.5)
    bake = actions.bake_prior(prior, actions.Subject(np.zeros(5, np.float32), np.zeros(5, np.float32)), RES[0])
    camera.frame(bake.vertices)
    background = np.zeros((h, w, 4), np.uint8)
    background[..., 2] = 200  # blue: the hand must cover part of it
    view = neural.NeuralView(camera.intrinsics(w, h), camera.world_to_camera(), w, h, background)
    lobes = np.array([[0.0, 1.0, 0.0, 2.0, 2.0, 2.0, 2.0]], np.float32)
    events = []
    subject = actions.Subject(np.zeros(5, np.float32), np.zeros(5, np.float32))
    image = neural.job_neural_render(events.append, None, prior, subject, load_pose("flat"), lobes, view,
                                      sizes=(12, 24))
    previews = [e for e in events if isinstance(e, Preview)]
    assert len(previews) == 2 and any(isinstance(e, Progress) for e in events)
    assert image.shape == (h, w, 4) and np.isfinite(image).all()
    covered = np.abs(image[..., 2] - 200 / 255).max(axis=None)
    assert covered > 0.05  # the render drew something over the background
    assert (np.abs(image[..., :3] - background[..., :3] / 255.0).max(-1) < 1e-3).any()  # and left some of it


@pytest.mark.gui
def test_screenshot_opens_an_avatar(xvfb, tmp_path, standin_prior, standin_avatar):
    out = tmp_path / "avatar.png"
    proc = subprocess.run([sys.executable, "-m", "app.studio", "--screenshot", str(out), "--size", "800x600",
                           "--prior", standin_prior, "--avatar", standin_avatar], cwd=ROOT,
                          env=dict(os.environ, DISPLAY=xvfb), capture_output=True, text=True, timeout=240, check=False)
    assert proc.returncode == 0, proc.stderr
    import imageio.v3 as iio

    assert iio.imread(out).shape[:2] == (600, 800)
    assert "warning" not in proc.stderr


def test_missing_prior_folder_is_an_error(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "app.studio", "--screenshot", str(tmp_path / "x.png"),
                           "--prior", str(tmp_path / "nope")], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2 and "prior not found" in proc.stderr


def test_viewport_follows_personalisation_snapshots(xvfb, standin_prior, wait_jobs):
    """Snapshot events of a personalisation job set the personalised subject and light, and re-bake
    the viewport from their codes at most every FOLLOW_EVERY_S seconds."""
    from app import actions
    from app.controller import Controller
    from palm.prior import load_prior

    c = Controller(standin_prior, bake_resolutions=RES)
    try:
        wait_jobs(c)
        z_s, z_a = load_prior(standin_prior).codes_from_coeffs([1.5, 0, 0, 0, 0], [0, 1.0, 0, 0, 0])
        light = np.array([[1.0, 0.0, 0.0, 4.0, 2.0, 1.0, 0.5]], np.float32)
        data = {"shape_coeffs": np.array([1.5, 0, 0, 0, 0], np.float32),
                "appearance_coeffs": np.array([0, 1.0, 0, 0, 0], np.float32),
                "shape_code": z_s.numpy(), "appearance_code": z_a.numpy(), "light": light}
        started = len(c.state.events_seen)
        c._snapshot("personalize", data)
        c._snapshot("personalize", data)  # at once again: no second bake
        assert c.state.events_seen[started:] == ["bake"]
        s = c.state.subject
        assert s.compare and np.allclose(s.personal_shape_code, z_s.numpy())
        assert np.allclose(c.state.light.fitted[actions.AVATAR_ENV], light)
        assert actions.AVATAR_ENV in c.environment_names()
        assert wait_jobs(c) and c.state.subject.bake_resolution == RES[0]
    finally:
        c.shutdown()


def test_missing_environment_presets_are_a_clear_error(monkeypatch):
    from app import actions
    from palm.errors import PalmError
    from palm.render import environment as envmap

    assert actions.env_presets()  # the shipped presets
    thumb = actions.env_thumbnail(actions.env_presets()[0])
    assert thumb.shape == (48, 96, 4) and thumb[..., :3].std() > 0.01
    monkeypatch.setattr(envmap, "list_presets", list)
    with pytest.raises(PalmError, match="environment presets"):
        actions.env_presets()


def test_avatar_with_a_refined_mesh_shows_that_mesh(xvfb, standin_prior, standin_avatar, wait_jobs, tmp_path):
    """An avatar folder with mesh.safetensors (the photo-detail stage) is shown as that mesh while
    comparing, not re-baked from the prior; the sliders' subject is baked again without it."""
    import shutil

    from app.controller import Controller
    from palm.bake import bake_from_prior, save_baked
    from palm.prior import load_prior

    folder = tmp_path / "refined"
    shutil.copytree(standin_avatar, folder)
    refined = bake_from_prior(load_prior(standin_prior), resolution=20)
    refined.albedo[:] = (0.9, 0.1, 0.1)  # unmistakable
    save_baked(folder / "mesh.safetensors", refined)
    c = Controller(standin_prior, bake_resolutions=RES)
    try:
        wait_jobs(c)
        c.load_avatar(str(folder))
        assert wait_jobs(c)
        assert c.avatar.vertices.shape == refined.vertices.shape
        assert np.allclose(c.avatar.albedo, (0.9, 0.1, 0.1))
        c.set_compare(False)
        assert wait_jobs(c)
        assert not np.allclose(c.avatar.albedo, (0.9, 0.1, 0.1))
    finally:
        c.shutdown()


def test_neural_view_of_a_left_hand_is_the_mirrored_hand_the_viewport_draws(shipped):
    """With "left hand" on, the viewport draws the mirror image of the right hand in the pose; the
    neural job must show the same hand (the fields know right hands only), not the right hand."""
    from app import actions, neural
    from app.camera import OrbitCamera
    from palm.bake import bake_from_prior
    from palm.hand import load_pose
    from palm.hand.lbs import bone_transforms, skin_vertices
    from palm.render.views import present_upright

    prior, _ = actions.load_prior(None)  # the shipped one, as ``shipped``
    w, h = 48, 40
    pose = present_upright(load_pose("point"))
    mesh = bake_from_prior(shipped, resolution=40)
    posed, _ = skin_vertices(mesh.vertices, mesh.normals, mesh.skin_weights,
                             bone_transforms(shipped.model.hand, pose, None, joints=mesh.joints))
    posed = posed * [-1.0, 1.0, 1.0]  # the right hand's mirror image
    camera = OrbitCamera(azimuth=0.6, elevation=0.3)
    camera.frame(posed, w / h)
    K, rt = camera.intrinsics(w, h), camera.world_to_camera()
    background = np.zeros((h, w, 4), np.uint8)
    background[..., 2] = 200  # blue
    view = neural.NeuralView(K, rt, w, h, background)
    lobes = np.array([[0.0, 1.0, 0.0, 2.0, 2.0, 2.0, 2.0]], np.float32)
    subject = actions.Subject(np.zeros(5, np.float32), np.zeros(5, np.float32))
    image = neural.job_neural_render(lambda e: None, None, prior, subject, pose, lobes, view, (w,), True)
    neural = np.abs(image[..., 2] - 200 / 255) > 0.1  # the hand over the blue background
    cam = posed @ rt[:3, :3].T + rt[:3, 3]
    uv = cam @ K.T
    u, v = (uv[:, 0] / uv[:, 2]).astype(int), (uv[:, 1] / uv[:, 2]).astype(int)
    keep = (u >= 0) & (u < w) & (v >= 0) & (v < h)
    drawn = np.zeros((h, w), bool)
    drawn[v[keep], u[keep]] = True  # the posed left mesh's vertices: dense at this size

    def iou(a, b):
        return (a & b).sum() / max((a | b).sum(), 1)

    assert drawn.sum() > 150
    assert iou(neural, drawn) > 0.7 and iou(neural, drawn) > iou(neural, drawn[:, ::-1]) + 0.15, \
        (iou(neural, drawn), iou(neural, drawn[:, ::-1]))


def test_a_left_hand_is_the_mirror_image_of_the_right_hand_in_the_same_pose(standin_prior):
    """The studio's "left hand" shows the pose's posture mirrored (a left fist is a fist): the
    controller's bones for a left hand pose the mesh into the right hand's mirror image."""
    from app.controller import Controller
    from palm.bake import bake_from_hand
    from palm.hand.lbs import skin_vertices

    c = Controller(standin_prior, bake_resolutions=RES)
    try:
        mesh = bake_from_hand(c.hand)
        c.apply_preset("fist")
        right, _ = skin_vertices(mesh.vertices, mesh.normals, mesh.skin_weights, c.current_bones())
        c.set_left(True)
        left, _ = skin_vertices(mesh.vertices, mesh.normals, mesh.skin_weights, c.current_bones())
        assert np.allclose(left, right * [-1.0, 1.0, 1.0], atol=1e-5)
        assert np.abs(left - right).max() > 0.05  # and it is not the right hand
    finally:
        c.shutdown()
