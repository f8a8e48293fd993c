"""CPU raster renders (2K PNG with alpha), the rasteriser itself, and turntables."""

from __future__ import annotations

import imageio.v2 as imageio_v2
import imageio.v3 as iio
import numpy as np
import pytest

from palm.errors import PalmError
from palm.export import default_lobes, export_turntable, framing_camera, posed_avatar, raster_render, rasterize
from palm.imageio import write_image
from palm.jobs import Progress


def test_rasterize_covers_a_split_square_exactly_once():
    h, w = 37, 53
    square = np.array([[0, 0], [w, 0], [w, h], [0, h]], float)
    tris = square[[[0, 1, 2], [0, 2, 3]]]
    pix, tri, bary = rasterize(tris, h, w)
    assert len(pix) == h * w and len(np.unique(pix)) == h * w  # no cracks on the diagonal
    np.testing.assert_allclose(bary.sum(1), 1, atol=1e-6)
    # barycentric interpolation of the corner coordinates gives back the pixel centre
    centres = np.einsum("nk,nkc->nc", bary, tris[tri])
    np.testing.assert_allclose(centres, np.stack([pix % w + 0.5, pix // w + 0.5], 1), atol=1e-4)


def test_rasterize_keeps_the_nearest_fragment_in_either_order():
    near = [[2, 2], [30, 2], [2, 30]]
    far = [[0, 0], [32, 0], [0, 32]]
    for order in ([0, 1], [1, 0]):
        xy = np.array([near, far], float)[order]
        depth = np.array([[1.0] * 3, [2.0] * 3])[order]
        pix, tri, _ = rasterize(xy, 32, 32, depth=depth)
        near_idx = order.index(0)
        inside_near = (pix % 32 > 3) & (pix // 32 > 3) & (pix % 32 + pix // 32 < 28)
        assert (tri[inside_near] == near_idx).all()
        assert (tri[~inside_near] != near_idx).any()


def test_raster_render_2k_png_has_alpha_where_the_hand_is(tmp_path, toy_avatar, toy_hand, bent_pose):
    res = 2048
    shown = posed_avatar(toy_avatar, bent_pose, toy_hand)
    camera = framing_camera(shown.vertices, res, azimuth_deg=30)
    image = raster_render(toy_avatar, bent_pose, toy_hand, camera, default_lobes())
    assert image.shape == (res, res, 4) and image.dtype == np.float32
    write_image(tmp_path / "hand.png", image)
    png = iio.imread(tmp_path / "hand.png")
    assert png.shape == (res, res, 4) and png.dtype == np.uint8
    alpha = png[..., 3]
    assert set(np.unique(alpha)) == {0, 255}
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
    ours = raster_render(toy_avatar, bent_pose, toy_hand, camera, default_lobes())[..., 3] > 0
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
    lobes = default_lobes()
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
