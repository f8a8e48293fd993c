"""The avatar folder: save/load round trip and the errors of a bad folder."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from palm.avatar import Avatar, load_avatar, save_avatar
from palm.errors import PalmError


def _avatar(seed: int = 0) -> Avatar:
    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    K = [[120.0, 0.0, 32.0], [0.0, 121.0, 30.5], [0.0, 0.0, 1.0]]
    Rt = np.eye(4)
    Rt[:3, :3] = np.diag([1.0, -1.0, -1.0])
    Rt[2, 3] = 0.45
    return Avatar(
        shape_coeffs=torch.randn(5, generator=g), appearance_coeffs=torch.randn(5, generator=g),
        shape_code=torch.randn(32, generator=g), appearance_code=torch.randn(32, generator=g),
        light=torch.randn(8, 7, generator=g), pose=rng.normal(size=(16, 3)).astype(np.float32),
        betas=rng.normal(size=10).astype(np.float32), transl=rng.normal(size=3).astype(np.float32),
        camera={"K": K, "Rt": Rt.tolist(), "height": 60, "width": 64}, prior_hash="0123456789abcdef",
        left=True, photo="hand.jpg", extra={"work_camera": {"K": K, "Rt": Rt.tolist(), "height": 30, "width": 32},
                                            "preset": "fast"},
    )


def test_round_trip(tmp_path):
    a = _avatar()
    report = {"psnr_masked": 25.0, "ssim_masked": 0.9, "lpips_masked": 0.1, "steps": 3, "seconds": 1.0,
              "preset": "fast"}
    save_avatar(tmp_path / "av", a, report=report)
    assert sorted(p.name for p in (tmp_path / "av").iterdir()) == ["avatar.json", "avatar.safetensors", "report.json"]
    b = load_avatar(tmp_path / "av", prior_hash="0123456789abcdef")
    for name in ("shape_coeffs", "appearance_coeffs", "shape_code", "appearance_code", "light"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert np.allclose(a.pose, b.pose) and b.pose.shape == (16, 3)
    assert np.allclose(a.betas, b.betas) and np.allclose(a.transl, b.transl)
    assert b.left is True and b.photo == "hand.jpg" and b.prior_hash == a.prior_hash
    assert b.extra["preset"] == "fast" and b.extra["work_camera"]["width"] == 32
    cam = b.camera_obj()
    assert (cam.height, cam.width) == (60, 64)
    assert torch.allclose(cam.K, torch.tensor(a.camera["K"], dtype=torch.float32))
    assert json.loads((tmp_path / "av" / "report.json").read_text())["psnr_masked"] == 25.0
    # saving again replaces the folder
    save_avatar(tmp_path / "av", _avatar(1))
    c = load_avatar(tmp_path / "av")
    assert not torch.equal(c.shape_code, a.shape_code)


def test_refuses_another_priors_avatar(tmp_path):
    save_avatar(tmp_path / "av", _avatar())
    with pytest.raises(PalmError, match="made for prior"):
        load_avatar(tmp_path / "av", prior_hash="ffffffffffffffff")


def test_bad_folders_name_the_file(tmp_path):
    with pytest.raises(PalmError, match="not found"):
        load_avatar(tmp_path / "missing")
    save_avatar(tmp_path / "av", _avatar())
    meta = json.loads((tmp_path / "av" / "avatar.json").read_text())
    meta["pose"] = [[0.0, 0.0, 0.0]] * 15
    (tmp_path / "av" / "avatar.json").write_text(json.dumps(meta))
    with pytest.raises(PalmError, match="16x3"):
        load_avatar(tmp_path / "av")
    meta["format"] = "something-else"
    (tmp_path / "av" / "avatar.json").write_text(json.dumps(meta))
    with pytest.raises(PalmError, match="not a palm-studio avatar"):
        load_avatar(tmp_path / "av")
    save_avatar(tmp_path / "av2", _avatar())
    (tmp_path / "av2" / "avatar.safetensors").write_bytes(b"garbage")
    with pytest.raises(PalmError) as err:
        load_avatar(tmp_path / "av2")
    assert "avatar.safetensors" in str(err.value)


@pytest.mark.parametrize("gain", ["warm", [1.0, 2.0], [1.0, 1.0, -1.0], [1.0, 1.0, 1e9], [1.0, None, 1.0]])
def test_a_bad_albedo_gain_is_refused_with_the_file_named(tmp_path, gain):
    a = _avatar()
    a.extra["albedo_gain"] = [0.9, 0.6, 0.45]
    save_avatar(tmp_path / "av", a)
    assert load_avatar(tmp_path / "av").extra["albedo_gain"] == [0.9, 0.6, 0.45]
    meta = json.loads((tmp_path / "av" / "avatar.json").read_text())
    meta["albedo_gain"] = gain
    (tmp_path / "av" / "avatar.json").write_text(json.dumps(meta))
    with pytest.raises(PalmError, match="albedo_gain") as err:
        load_avatar(tmp_path / "av")
    assert "avatar.json" in str(err.value)


@pytest.mark.parametrize("left", [False, True])
def test_preview_shows_the_photo_orientation(tmp_path, left):
    """A left hand is fitted on the mirrored photo: its preview is flipped back, as the photo."""
    import dataclasses

    import imageio.v3 as iio

    from palm.train.personalize import write_avatar_folder

    photo = np.zeros((8, 10, 3), np.float32)
    photo[:, :3] = 1.0  # the (fitted, possibly mirrored) crop is white on its left
    write_avatar_folder(tmp_path / "av", dataclasses.replace(_avatar(), left=left), {}, photo, photo * 0.5)
    preview = iio.imread(tmp_path / "av" / "preview.png").astype(float)
    assert preview.shape[:2] == (8, 20)
    white = preview[:, :10, 0].mean(0) > 127
    assert white[7:].all() and not white[:7].any() if left else white[:3].all() and not white[3:].any()
    half = preview[:, 10:, 0].mean(0) > 60  # the render beside it, flipped the same way
    assert half[7:].all() and not half[:7].any() if left else half[:3].all() and not half[3:].any()
