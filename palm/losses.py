"""Every term of PALM-Net's total loss (spec section 7), each a small pure function.

``L = L_rf + w_pbr L_pbr + w_segm L_segm + w_normal L_normal + w_eik L_eik + w_lpips L_LPIPS
+ w_lap L_LAP + w_latent L_latent``; :class:`LossSchedule` says which terms are active and with
what weight at a given step (prior training or personalisation), and :func:`total_loss` sums them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor

from palm.config import LossWeights


def rgb_l1(pred_srgb: Tensor, target_srgb: Tensor, opacity: Tensor) -> Tensor:
    """L_rf / L_pbr: mean L1 (mean over channels) over rays that hit something.

    Args:
        pred_srgb: (N, 3) composited sRGB colour in [0, 1].
        target_srgb: (N, 3) target sRGB colour (background already composited in).
        opacity: (N,) accumulated opacity A; rays with A > 0 count.
    """
    hit = opacity > 0
    if not bool(hit.any()):
        return pred_srgb.sum() * 0.0
    return (pred_srgb[hit] - target_srgb[hit]).abs().mean()


def segmentation_bce(opacity: Tensor, mask: Tensor) -> Tensor:
    """L_segm: binary cross-entropy of the clamped opacity against the mask, over all rays.

    Args:
        opacity: (N,) accumulated opacity.
        mask: (N,) float or bool, 1 on the hand.
    """
    a = opacity.clamp(1e-3, 1 - 1e-3)
    return F.binary_cross_entropy(a, mask.to(a.dtype))


def normal_l1(pred_normal_cam: Tensor, target_normal01: Tensor, mask: Tensor) -> Tensor:
    """L_normal: L1 (summed over xyz) between re-normalised [0,1]-encoded normals on the foreground.

    Follows the release: the predicted camera-space normal (OpenCV axes) is flipped to OpenGL axes
    by (1, -1, -1), encoded as (n + 1) / 2, and both encodings are re-normalised to unit length.

    Args:
        pred_normal_cam: (N, 3) accumulated normal in OpenCV camera axes.
        target_normal01: (N, 3) target normal map values RGB/255; all-zero = missing.
        mask: (N,) foreground.
    """
    flip = pred_normal_cam.new_tensor([1.0, -1.0, -1.0])
    pred01 = (pred_normal_cam * flip + 1) / 2
    valid = mask.bool() & (target_normal01.abs().sum(-1) > 0)
    if not bool(valid.any()):
        return pred_normal_cam.sum() * 0.0
    p = F.normalize(pred01[valid], dim=-1)
    t = F.normalize(target_normal01[valid], dim=-1)
    return (p - t).abs().sum(-1).mean()


def eikonal(gradients: Tensor) -> Tensor:
    """L_eik: mean of (|grad s| - 1)^2 over primary samples. ``gradients``: (S, 3)."""
    if gradients.numel() == 0:
        return gradients.sum() * 0.0
    return ((gradients.norm(dim=-1) - 1) ** 2).mean()


def laplacian(curvature: Tensor) -> Tensor:
    """L_LAP: mean |kappa| over primary samples (kappa = angle between nearby normals / pi)."""
    if curvature.numel() == 0:
        return curvature.sum() * 0.0
    return curvature.abs().mean()


def latent(code: Tensor) -> Tensor:
    """L_latent of one code: mean over the batch of ``||z||^2`` (shape and appearance are separate
    terms, with their own schedules). ``code``: (B, D)."""
    return (code**2).sum(-1).mean()


#: Smallest side AlexNet's LPIPS accepts (its first pooling stages shrink 32 px to 1 px).
LPIPS_MIN_SIDE = 32


def patch_lpips(pred_patch: Tensor, target_patch: Tensor, lpips_fn: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
    """L_LPIPS on the 32x32 patch, both bilinearly upsampled x2 (spec section 7).

    Patches smaller than ``LPIPS_MIN_SIDE / 2`` (the small presets') are upsampled to
    ``LPIPS_MIN_SIDE`` pixels instead, the least AlexNet can take.

    Args:
        pred_patch, target_patch: (P, P, 3) sRGB in [0, 1].
        lpips_fn: differentiable LPIPS on (B, 3, H, W) images in [0, 1].
    """
    a = pred_patch.permute(2, 0, 1)[None]
    b = target_patch.permute(2, 0, 1)[None]
    size = (max(a.shape[-2] * 2, LPIPS_MIN_SIDE), max(a.shape[-1] * 2, LPIPS_MIN_SIDE))
    a = F.interpolate(a, size=size, mode="bilinear", align_corners=False)
    b = F.interpolate(b, size=size, mode="bilinear", align_corners=False)
    return lpips_fn(a, b).mean()


def sdf_pretrain(sdf_pred: Tensor, sdf_gt: Tensor, clamp: float = 0.02, weight: float = 1e4) -> Tensor:
    """Geometry pretraining: ``weight * mean(clamp((s_pred - s_gt)^2, 0, clamp^2))`` (spec section 7)."""
    return weight * ((sdf_pred - sdf_gt) ** 2).clamp(0, clamp**2).mean()


@dataclass(frozen=True)
class LossSchedule:
    """Which terms are on, with which weight, at a step (Supp. Table 1 and the release's milestones).

    >>> s = LossSchedule(LossWeights(), mode="prior", total_steps=24000, pbr_start=12001, normal_start=6001)
    >>> s.weights(0)["pbr"], s.weights(12001)["pbr"]
    (0.0, 0.2)
    """

    weights_cfg: LossWeights
    mode: str = "prior"
    """'prior' or 'personalize'."""
    total_steps: int = 24000
    pbr_start: int = 12001
    normal_start: int = 6001
    lpips_start: int = 5

    def weights(self, step: int) -> dict[str, float]:
        w = self.weights_cfg
        if self.mode == "personalize":
            return {
                "rf": w.rf,
                "pbr": w.pbr if step > self.pbr_start else 0.0,
                "segm": w.segm,
                "normal": 0.0,
                "eikonal": 0.0,
                "lpips": w.lpips,
                "lap": w.lap,
                "latent_shape": w.latent,
                "latent_appearance": w.latent,
                "sdf_anchor": 0.0,
            }
        frac = min(max(step / max(self.total_steps, 1), 0.0), 1.0)
        normal_w = w.normal_start + (w.normal_end - w.normal_start) * frac
        late = step > self.normal_start
        return {
            "rf": w.rf,
            "pbr": w.pbr if step >= self.pbr_start else 0.0,
            "segm": w.segm,
            "normal": normal_w if late else 0.0,
            "eikonal": w.eikonal,
            "lpips": w.lpips if step > self.lpips_start else 0.0,
            "lap": w.lap if late else 0.0,
            "latent_shape": w.latent if late else 0.0,
            "latent_appearance": w.latent,
            "sdf_anchor": w.sdf_anchor,
        }


def total_loss(terms: dict[str, Tensor], weights: dict[str, float]) -> tuple[Tensor, dict[str, float]]:
    """Weighted sum of the terms that have a non-zero weight; also returns the scalars for logging."""
    total = None
    log: dict[str, float] = {}
    for name, value in terms.items():
        w = weights.get(name, 0.0)
        if w == 0.0 or value is None:
            continue
        log[name] = float(value.detach())
        total = w * value if total is None else total + w * value
    if total is None:
        raise ValueError("no active loss term")
    log["total"] = float(total.detach())
    return total, log
