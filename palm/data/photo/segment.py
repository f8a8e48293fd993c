"""Hand segmentation: U^2-Net-p saliency refined with the silhouette of the fitted hand.

The silhouette is drawn by the project's one rasteriser (:mod:`palm.render.raster`): a pixel is
hand when its centre lies in a projected triangle (edges included).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from palm.assets import MODELS
from palm.data.photo.fit import HandFit, fitted_keypoints_2d, fitted_vertices_2d
from palm.errors import PalmError
from palm.render.raster import rasterize

U2NETP = MODELS / "u2netp" / "u2netp.onnx"
SEGMENTER_SIZE = 320

#: Mask refinement radii, in units of the wrist-to-middle-MCP length: saliency is kept within
#: ``GROW`` of the fitted silhouette, and the silhouette eroded by ``SHRINK`` is always hand.
GROW = 0.12
SHRINK = 0.06


def silhouette_mask(points_2d: np.ndarray, faces: np.ndarray, height: int, width: int) -> np.ndarray:
    """Pixels whose centre lies in a projected triangle (edges included), by :mod:`palm.render.raster`.

    Args:
        points_2d: ``(V, 2)`` continuous pixel coordinates (pixel ``(u, v)`` has its centre at
            ``(u + 0.5, v + 0.5)``).
        faces: ``(F, 3)`` vertex indices.
        height, width: output size in pixels.

    Returns:
        ``(height, width)`` bool.
    """
    xy = torch.as_tensor(np.asarray(points_2d, dtype=np.float64))
    screen = torch.cat([xy, torch.ones_like(xy[:, :1])], dim=-1)[None]  # (1, V, 3), flat depth
    faces_t = torch.as_tensor(np.asarray(faces, dtype=np.int64))
    frags = rasterize(screen, faces_t, int(height), int(width), perspective=False)
    return frags.mask[0].numpy()


def fitted_silhouette(fit: HandFit, hand: Any, height: int, width: int) -> np.ndarray:
    """``(height, width)`` bool silhouette of the fitted hand mesh (working frame)."""
    return silhouette_mask(fitted_vertices_2d(fit, hand), np.asarray(hand.faces), height, width)


@lru_cache(maxsize=1)
def _u2netp_session():
    import onnxruntime as ort

    if not U2NETP.is_file():
        raise PalmError(U2NETP, "segmentation model file missing from assets/models")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    opts.log_severity_level = 3
    return ort.InferenceSession(str(U2NETP), sess_options=opts, providers=["CPUExecutionProvider"])


def saliency_u2netp(image: np.ndarray) -> np.ndarray:
    """U^2-Net-p foreground probability.

    Args:
        image: ``(H, W, 3)`` float32 sRGB in ``[0, 1]``.

    Returns:
        ``(H, W)`` float32 in ``[0, 1]``: the mean of the min-max normalised maps (as rembg
        normalises) of the image and of its mirror image (the network is not mirror-symmetric).
    """
    h, w = image.shape[:2]
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None]
    x = F.interpolate(x, size=(SEGMENTER_SIZE, SEGMENTER_SIZE), mode="bilinear", antialias=True, align_corners=False)
    x = x / max(float(x.max()), 1e-6)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    x = ((x - mean) / std).numpy().astype(np.float32)
    sess = _u2netp_session()
    maps = []
    for flip in (False, True):  # U^2-Net-p is not mirror-symmetric: average the photo and its mirror
        xi = np.ascontiguousarray(x[..., ::-1]) if flip else x
        pred = sess.run([sess.get_outputs()[0].name], {sess.get_inputs()[0].name: xi})[0][0, 0]
        pred = (pred - pred.min()) / max(float(pred.max() - pred.min()), 1e-6)
        maps.append(pred[:, ::-1] if flip else pred)
    pred = np.ascontiguousarray((maps[0] + maps[1]) / 2, dtype=np.float32)
    up = F.interpolate(torch.from_numpy(pred)[None, None], size=(h, w), mode="bilinear", align_corners=False)
    return up[0, 0].clamp(0, 1).numpy()


def segment_hand(
    image: np.ndarray,
    fit: HandFit | None = None,
    hand: Any = None,
    keypoints_2d: np.ndarray | None = None,
    threshold: float = 0.5,
) -> np.ndarray:
    """Hand mask from U^2-Net-p, refined with the fitted silhouette.

    Without a fit: the saliency threshold, restricted to the connected components that contain a
    landmark (when ``keypoints_2d`` is given). With a fit (silhouette ``S`` of the fitted mesh, hand
    size ``L`` = wrist-to-middle-MCP distance in pixels): the components overlapping ``S``,
    intersected with ``S`` dilated by ``GROW * L`` (cuts the forearm and background blobs), united
    with ``S`` eroded by ``SHRINK * L`` (fills holes the saliency leaves inside the hand), in the
    spirit of the paper's training-mask rule (spec 10.1); then background that this took in
    along the outline is carved by colour (:func:`refine_by_colour`).

    Args:
        image: ``(H, W, 3)`` float32 in ``[0, 1]`` (working frame).
        fit: hand fit in the same frame; ``hand``: the model it was fitted with.
        keypoints_2d: ``(21, 2)`` landmarks (same frame), optional.
        threshold: saliency threshold.

    Returns:
        ``(H, W)`` bool.
    """
    from scipy import ndimage

    h, w = image.shape[:2]
    mask = saliency_u2netp(image) > threshold
    labels, n = ndimage.label(mask)
    if fit is not None:
        if hand is None:
            from palm.hand import load_hand

            hand = load_hand(fit.hand_name if fit.hand_name in ("open",) else "open")
        sil = fitted_silhouette(fit, hand, h, w)
        kp = fit.keypoints_2d if fit.keypoints_2d is not None else fitted_keypoints_2d(fit, hand)
        size = float(np.linalg.norm(kp[9] - kp[0]))
        if sil.any():
            keep = np.unique(labels[sil & mask])
            mask = np.isin(labels, keep[keep > 0])
            outside = ndimage.distance_transform_edt(~sil)  # pixels to the silhouette
            inside = ndimage.distance_transform_edt(sil)  # pixels to the background
            mask = (mask & (outside <= GROW * size)) | (inside > SHRINK * size)
            return refine_by_colour(image, ndimage.binary_fill_holes(mask), size)
    elif keypoints_2d is not None and n > 0:
        pts = np.round(np.asarray(keypoints_2d) - 0.5).astype(int)
        inside = (pts[:, 0] >= 0) & (pts[:, 0] < w) & (pts[:, 1] >= 0) & (pts[:, 1] < h)
        keep = np.unique(labels[pts[inside, 1], pts[inside, 0]])
        if (keep > 0).any():
            mask = np.isin(labels, keep[keep > 0])
    return ndimage.binary_fill_holes(mask) if mask.any() else mask


#: Colour refinement of the mask's rim (:func:`refine_by_colour`), lengths in units of the
#: wrist-to-middle-MCP length: the rim that may be carved, and the smallest carved region kept.
COLOUR_BAND = 0.12
COLOUR_MIN_REGION = 0.02
COLOUR_MIN_WIDTH = 0.015
COLOUR_MARGIN = 2.0  # nats: a rim pixel is carved only when background is this much likelier


def fit_colour_mixture(colours: np.ndarray, k: int = 5, iters: int = 12, seed: int = 0,
                       max_samples: int = 20000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A Gaussian mixture of colours, by k-means then one Gaussian per cluster.

    Args:
        colours: (N, 3) float.

    Returns:
        ``(weights (k,), means (k, 3), precision Cholesky factors (k, 3, 3))`` (empty clusters dropped).
    """
    rng = np.random.default_rng(seed)
    x = colours if len(colours) <= max_samples else colours[rng.choice(len(colours), max_samples, replace=False)]
    x = x.astype(np.float64)
    k = max(1, min(k, len(x)))
    centres = x[rng.choice(len(x), k, replace=False)]
    for _ in range(iters):
        label = ((x[:, None] - centres[None]) ** 2).sum(-1).argmin(1)
        centres = np.stack([x[label == j].mean(0) if (label == j).any() else centres[j] for j in range(k)])
    label = ((x[:, None] - centres[None]) ** 2).sum(-1).argmin(1)
    weights, means, chols = [], [], []
    for j in range(k):
        members = x[label == j]
        if len(members) < 4:
            continue
        cov = np.cov(members.T) + np.eye(3) * 1e-4  # floor: 1 % of the range, JPEG noise
        weights.append(len(members) / len(x))
        means.append(members.mean(0))
        chols.append(np.linalg.cholesky(np.linalg.inv(cov)))
    return np.asarray(weights), np.stack(means), np.stack(chols)


def mixture_log_likelihood(colours: np.ndarray, mixture: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
    """(N, 3) colours -> (N,) log density under :func:`fit_colour_mixture`'s mixture."""
    weights, means, chols = mixture
    x = colours.astype(np.float64)
    terms = []
    for w, mu, L in zip(weights, means, chols):
        z = (x - mu) @ L  # L L^T = precision, so |z|^2 is the Mahalanobis distance
        log_det = np.log(np.diag(L)).sum()
        terms.append(np.log(w) + log_det - 0.5 * (z**2).sum(-1) - 1.5 * np.log(2 * np.pi))
    return np.logaddexp.reduce(np.stack(terms), axis=0)


def _disk(radius: int) -> np.ndarray:
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    return xx**2 + yy**2 <= radius**2 + 0.5


def refine_by_colour(image: np.ndarray, mask: np.ndarray, size: float) -> np.ndarray:
    """Carve background that the mask took in along its rim (gaps between fingers, a bright wall).

    A low-resolution saliency mask closes narrow gaps: between fingers that nearly touch and in
    the web of the thumb it takes in a wedge of background, which the photo-detail stage would
    then paint onto the avatar. Colour tells them apart: a mixture of Gaussians is fitted to the
    hand's sure pixels (deeper than the rim) and one to the background near the hand; a rim pixel
    whose (slightly blurred) log-likelihood ratio favours the background by ``COLOUR_MARGIN``
    nats is carved, provided its carved region touches the outside and is not a speck. Where the
    colours do not separate (a skin-coloured background) nothing is carved.

    Args:
        image: (H, W, 3) float in [0, 1]. mask: (H, W) bool. size: the hand's length unit in
            pixels (wrist to middle MCP).

    Returns:
        (H, W) bool, a subset of ``mask``.
    """
    from scipy import ndimage

    if not mask.any() or mask.all():
        return mask
    band = max(3.0, COLOUR_BAND * size)
    inside = ndimage.distance_transform_edt(mask)
    outside = ndimage.distance_transform_edt(~mask)
    sure_fg = inside > band
    near_bg = (outside > 2) & (outside < 3 * band)
    rim = mask & ~sure_fg
    if sure_fg.sum() < 50 or near_bg.sum() < 50 or not rim.any():
        return mask
    colours = np.asarray(image, np.float64)[..., :3]
    fg = fit_colour_mixture(colours[sure_fg])
    bg = fit_colour_mixture(colours[near_bg])
    ratio = np.where(mask, 20.0, -20.0)  # sure hand and outside, for the blur
    ratio[rim] = np.clip(mixture_log_likelihood(colours[rim], fg) - mixture_log_likelihood(colours[rim], bg), -20, 20)
    ratio = ndimage.gaussian_filter(ratio, sigma=1.0)
    carve = rim & (ratio < -COLOUR_MARGIN)
    # Thin strips along the outline (a shaded edge, anti-aliasing) stay: only regions at least
    # COLOUR_MIN_WIDTH across are carved.
    width = max(1, round(COLOUR_MIN_WIDTH * size / 2))
    carve = ndimage.binary_opening(carve, structure=_disk(width)) & carve
    labels, n = ndimage.label(carve)
    if n == 0:
        return mask
    touches = np.unique(labels[ndimage.binary_dilation(~mask) & carve])
    areas = np.bincount(labels.ravel(), minlength=n + 1)
    keep = [j for j in touches[touches > 0] if areas[j] >= (COLOUR_MIN_REGION * size) ** 2]
    if not keep:
        return mask
    out = mask & ~np.isin(labels, keep)
    labels, n = ndimage.label(out)
    if n > 1:  # the hand is what holds the sure pixels
        main = np.unique(labels[sure_fg & out])
        out = np.isin(labels, main[main > 0])
    return out
