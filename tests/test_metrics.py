"""Masked PSNR / SSIM / LPIPS against reference formulas and scikit-image."""

from __future__ import annotations

import itertools
import math
import pickle

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter
from skimage.metrics import structural_similarity

from palm.assets import SHARED
from palm.errors import PalmError
from palm.imageio import read_image
from palm.lpips import convert_jax_checkpoint, lpips_loss
from palm.metrics import lpips_masked, mask_bbox, psnr_masked, ssim, ssim_masked, white_background

PHOTO = str(SHARED / "data/photos/opencv_doc/handSrc.jpg")


@pytest.fixture(scope="module")
def pair():
    rng = np.random.default_rng(3)
    gt = rng.random((48, 64, 3)).astype(np.float32)
    pred = np.clip(gt + 0.08 * rng.standard_normal(gt.shape), 0, 1).astype(np.float32)
    mask = np.zeros((48, 64), bool)
    mask[8:40, 12:50] = True
    mask[20:26, 20:30] = False
    return pred, gt, mask


def test_psnr_matches_direct_formula(pair):
    pred, gt, mask = pair
    p64, g64 = pred.astype(np.float64), gt.astype(np.float64)
    mse = np.mean([(p64[y, x, c] - g64[y, x, c]) ** 2 for y, x in zip(*np.nonzero(mask)) for c in range(3)])
    assert psnr_masked(pred, gt, mask) == pytest.approx(10 * math.log10(1 / mse), rel=1e-9)
    # background pixels do not count
    noisy_bg = pred.copy()
    noisy_bg[~mask] = 0.0
    assert psnr_masked(noisy_bg, gt, mask) == pytest.approx(psnr_masked(pred, gt, mask), rel=1e-12)
    assert psnr_masked(gt, gt, mask) == math.inf


@pytest.mark.parametrize("gaussian", [False, True])
def test_ssim_equals_scikit_image(pair, gaussian):
    pred, gt, _ = pair
    ref = structural_similarity(pred, gt, channel_axis=-1, data_range=1, gaussian_weights=gaussian, sigma=1.5)
    assert ssim(pred, gt, gaussian=gaussian) == pytest.approx(ref, abs=1e-4)


def test_ssim_masked_is_scikit_image_on_white_bbox_crop(pair):
    pred, gt, mask = pair
    y0, y1, x0, x1 = mask_bbox(mask)
    assert (y0, y1, x0, x1) == (8, 40, 12, 50)
    g = white_background(gt, mask)
    ref = structural_similarity(pred[y0:y1, x0:x1], g[y0:y1, x0:x1], channel_axis=-1, data_range=1)
    assert ssim_masked(pred, gt, mask) == pytest.approx(ref, abs=1e-4)
    assert ssim_masked(gt, gt, mask) < 1.0  # gt's background is whitened, pred's is not
    assert ssim_masked(white_background(gt, mask), gt, mask) == pytest.approx(1.0, abs=1e-9)


def test_white_background(pair):
    _, gt, mask = pair
    w = white_background(gt, mask)
    assert np.all(w[~mask] == 1.0) and np.array_equal(w[mask], gt[mask])


@pytest.fixture(scope="module")
def photo_crop():
    return read_image(PHOTO)[120:216, 300:428]  # 96x128 crop of fingers and background


def test_lpips_zero_for_identical_and_grows_with_blur(photo_crop):
    mask = np.ones(photo_crop.shape[:2], bool)
    assert lpips_masked(photo_crop, photo_crop, mask) == pytest.approx(0.0, abs=1e-7)
    dists = [lpips_masked(gaussian_filter(photo_crop, (s, s, 0)), photo_crop, mask) for s in (0.5, 1.0, 2.0, 4.0)]
    assert all(b > a for a, b in itertools.pairwise(dists)), dists
    assert dists[0] > 0


def test_lpips_loss_is_differentiable(photo_crop):
    target = torch.from_numpy(photo_crop[:64, :64]).permute(2, 0, 1)[None]
    pred = (target + 0.1 * torch.randn_like(target)).clamp(0, 1).requires_grad_(True)
    loss = lpips_loss(pred, target)
    loss.backward()
    assert loss.item() > 0 and torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0


def test_lpips_checkpoint_reader_refuses_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    bad = tmp_path / "evil.ckpt"
    bad.write_bytes(pickle.dumps({"x": Evil()}))
    with pytest.raises(PalmError, match="refusing|not an lpips"):
        convert_jax_checkpoint(bad)
