"""Raster renders (2K PNG with alpha) and turntables (the rasteriser itself: tests/render/test_raster.py)."""

from __future__ import annotations

import imageio.v2 as imageio_v2
import imageio.v3 as iio
import numpy as np
import pytest

from palm.bake import posed_avatar
from palm.errors import PalmError
from palm.export.preview import export_turntable, raster_render, raster_view
from palm.imageio import write_image
from palm.jobs import Progress
from palm.render.environment import display_light
from palm.render.views import framing_camera


def test_raster_render_2k_png_has_alpha_where_the_hand_is(tmp_path, toy_avatar, toy_hand, bent_pose, three_lobes):
    res = 2048
    shown = posed_avatar(toy_avatar, bent_pose, toy_hand)
    camera = framing_camera(shown.vertices, res, azimuth_deg=30)
    image = raster_render(toy_avatar, bent_pose, toy_hand, camera, three_lobes)
    assert image.shape == (res, res, 4) and image.dtype == np.float32
    write_image(tmp_path / "hand.png", image)
    png = iio.imread(tmp_path / "hand.png")
    assert png.shape == (res, res, 4) and png.dtype == np.uint8
    alpha = png[..., 3]
    # 2x2 samples per pixel: coverage in quarters, the fractional ones only along the outline
    assert set(np.unique(alpha)) <= {0, 64, 128, 191, 255}
    assert ((alpha > 0) & (alpha < 255)).mean() < 0.05 * (alpha == 255).mean()
    assert 0.02 < (alpha == 255).mean() < 0.9
    assert alpha[0, 0] == alpha[0, -1] == alpha[-1, 0] == alpha[-1, -1] == 0
    # every face that projects to a sizeable triangle covers the pixel at its centroid
    K, Rt = camera.K.double().numpy(), camera.Rt.double().numpy()
    cam = shown.vertices @ Rt[:3, :3].T + Rt[:3, 3]
    xy = (cam @ K.T)[:, :2] / (cam @ K.T)[:, 2:]
    tri = xy[shown.faces]
    area = 0.5 * np.abs(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]))
    centre = tri[area > 200].mean(1).astype(int)
    assert len(centre) > 20
    assert (alpha[centre[:, 1], centre[:, 0]] == 255).all()
    # the hand is lit: colour where alpha, black background elsewhere
    assert png[alpha == 255, :3].mean() > 20
    assert (png[alpha == 0, :3] == 0).all()


def test_raster_mask_matches_the_reference_rasteriser(toy_avatar, toy_hand, bent_pose):
    torch = pytest.importorskip("torch")
    raster = pytest.importorskip("palm.render.raster")
    shown = posed_avatar(toy_avatar, bent_pose, toy_hand)
    camera = framing_camera(shown.vertices, 96, azimuth_deg=-40)
    ours = raster_render(toy_avatar, bent_pose, toy_hand, camera, display_light()[0], supersample=1)[..., 3] > 0
    ref = (
        raster.rasterize_pinhole(
            torch.as_tensor(shown.vertices), torch.as_tensor(shown.faces).long(), camera.K, camera.Rt, 96, 96
        )
        .mask[0]
        .numpy()
    )
    assert (ours != ref).mean() < 0.002


@pytest.mark.parametrize("ext", ["mp4", "gif"])
def test_turntable_has_the_requested_frame_count(tmp_path, toy_avatar, toy_hand, ext):
    shown = posed_avatar(toy_avatar, None, toy_hand)
    lobes = display_light()[0]
    angles, events = [], []

    def render(azimuth):
        angles.append(azimuth)
        return raster_render(toy_avatar, None, toy_hand, framing_camera(shown.vertices, 48, azimuth), lobes)

    frames = 9
    path = export_turntable(tmp_path / f"turn.{ext}", render, frames, fps=12, emit=events.append)
    np.testing.assert_allclose(angles, np.arange(frames) * 40.0)
    progress = [e for e in events if isinstance(e, Progress)]
    assert [e.step for e in progress] == list(range(1, frames + 1)) and progress[-1].total == frames
    if ext == "mp4":
        reader = imageio_v2.get_reader(path)
        assert reader.count_frames() == frames
        first = reader.get_data(0)
        reader.close()
    else:
        video = iio.imread(path, index=None)
        assert video.shape[0] == frames
        first = video[0]
    assert first.shape[:2] == (48, 48)
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]


def test_turntable_rejects_bad_arguments_before_rendering(tmp_path):
    calls = []
    with pytest.raises(PalmError, match="unsupported output format"):
        export_turntable(tmp_path / "turn.avi", calls.append, 3)
    with pytest.raises(PalmError, match="at least 1 frame"):
        export_turntable(tmp_path / "turn.gif", calls.append, 0)
    assert calls == [] and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("upright", [False, True])
@pytest.mark.parametrize("left", [False, True])
def test_framing_shows_the_palm_fingers_up(upright, left):
    """Azimuth 0 looks at the palm: a right hand seen from its palm, fingers up, has its thumb on the
    image's right (a left hand on the left), whatever the global orientation (flat MANO frame, palm
    -y, or presented upright, palm +z, as every renderer shows it)."""
    import torch

    from palm.hand import load_hand, load_pose
    from palm.render.views import present_upright

    hand = load_hand("open")
    pose = load_pose("relaxed")
    pose = present_upright(pose) if upright else pose
    out = hand(torch.as_tensor(pose, dtype=torch.float32)[None], left=left)
    vertices, joints = out.vertices[0].numpy(), out.joints[0].numpy()
    camera = framing_camera(vertices, 64, elevation_deg=0.0, joints=joints, left=left)
    K, Rt = camera.K.double().numpy(), camera.Rt.double().numpy()
    cam = joints @ Rt[:3, :3].T + Rt[:3, 3]
    xy = (cam @ K.T)[:, :2] / cam[:, 2:]
    thumb, pinky, wrist, middle = xy[15], xy[9], xy[0], xy[6]
    assert (thumb[0] > pinky[0]) != left
    assert middle[1] < wrist[1] - 20  # fingers point up
    eye = -Rt[:3, :3].T @ Rt[:3, 3]
    towards_camera = (eye - vertices.mean(0)) / np.linalg.norm(eye - vertices.mean(0))
    palm_normal = np.array([0.0, 0.0, 1.0]) if upright else np.array([0.0, -1.0, 0.0])  # MANO: palm -y
    assert towards_camera @ palm_normal > 0.95


@pytest.mark.parametrize("left", [False, True])
def test_posed_avatar_keeps_normals_outward(toy_avatar, toy_hand, bent_pose, left):
    """Posing (and mirroring, for a left hand) keeps the skinned normals on the outside of the
    triangle winding: recomputing them from the posed faces agrees."""
    from palm.bake import vertex_normals

    shown = posed_avatar(toy_avatar, bent_pose, toy_hand, left=left)
    recomputed = vertex_normals(shown.vertices, shown.faces)
    assert ((recomputed * shown.normals).sum(1) > 0.99).mean() > 0.99
    assert (shown.vertices[:, 0].mean() < 0) == left  # the toy's fingers point +x; mirrored: -x


def test_raster_view_of_a_left_hand_is_the_mirror_image(toy_avatar, toy_hand, bent_pose, three_lobes):
    """``palm export render --avatar`` of a left-hand avatar: the right hand's mirror image, framed
    palm to the camera the same way (so its silhouette is the right one's, flipped)."""
    right = raster_view(toy_avatar, bent_pose, toy_hand, three_lobes, 64)[..., 3] > 0.5
    left = raster_view(toy_avatar, bent_pose, toy_hand, three_lobes, 64, left=True)[..., 3] > 0.5
    assert right.sum() > 200
    flipped = right[:, ::-1]
    assert (left & flipped).sum() / (left | flipped).sum() > 0.97
    assert (left & right).sum() / (left | right).sum() < 0.9
