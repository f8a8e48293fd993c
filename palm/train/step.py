"""One optimisation step's rays, shared by prior training and personalisation (spec sections 4, 7, 8, 9).

A step is: pixels -> rays -> render -> loss terms.

* :func:`draw_pixels` draws a training image's pixels with the edge sampler plus one LPIPS patch
  (:func:`palm.train.sampling.sample_pixels`);
* :func:`render_pixels` turns them into rays, renders them and gathers their targets;
* :func:`loss_terms` gives the terms of spec section 7 for rendered rays (several images'
  rays may be concatenated first with :func:`concat_rays`).

Pixel convention (``docs/architecture.md``): a pixel is an integer index ``(u, v)`` (column,
row); its centre ``(u + 0.5, v + 0.5)`` is taken in exactly one place,
:func:`palm.render.rays.pixel_rays`. The target colour of a ray is the value stored at pixel
``(u, v)``, so ray and target always describe the same pixel.

The optimiser plumbing both loops share is here too: :func:`make_adam`, :func:`warmup_factor` and
:func:`clip_gradients` (their settings: :class:`palm.config.AdamConfig`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from palm import losses as L
from palm.config import AdamConfig
from palm.render.color import linear_to_srgb
from palm.render.rays import Camera, pixel_rays
from palm.train.sampling import edge_map, gather_pixels, sample_pixels


@dataclass
class StepView:
    """One training image, ready for ray sampling.

    Arrays stay on the CPU (only the rays' values move to the render device, the camera's).

    Attributes:
        image: (H, W, 3) float32 sRGB in [0, 1].
        mask: (H, W) bool hand mask.
        edge: (H, W) bool :func:`palm.train.sampling.edge_map` of ``mask``.
        camera: the image's camera, on the render device.
        normal: (H, W, 3) float32 normal map in [-1, 1] (OpenGL camera axes, all-zero = missing)
            or None.
    """

    image: Tensor
    mask: Tensor
    edge: Tensor
    camera: Camera
    normal: Tensor | None = None

    @classmethod
    def of(cls, image: Any, mask: Any, camera: Camera, device: torch.device | str,
           normal: Any = None) -> StepView:
        """A view of numpy/torch arrays: ``image (H, W, 3)``, ``mask (H, W)`` (None: all hand)."""
        img = torch.as_tensor(np.asarray(image, dtype=np.float32))
        m = (torch.ones(img.shape[:2], dtype=torch.bool) if mask is None
             else torch.as_tensor(np.asarray(mask, dtype=bool)))
        n = None if normal is None else torch.as_tensor(np.asarray(normal, dtype=np.float32))
        return cls(image=img, mask=m, edge=edge_map(m), camera=camera.to(device), normal=n)


def draw_pixels(
    view: StepView,
    n_pixels: int,
    patch_size: int,
    patch_choices: tuple[tuple[int, int], ...],
    generator: torch.Generator | None,
    keep_patch: bool = True,
) -> Tensor:
    """A training image's pixels: edge-sampled singles, then (``keep_patch``) the LPIPS patch.

    The patch is drawn also when it is not kept, so that the random stream does not depend on
    which draws keep theirs.

    Returns:
        (R, 2) int64 pixel indices ``(u, v)``; with the patch, its ``patch_size**2`` pixels are
        last, row-major.
    """
    pixels, _ = sample_pixels(view.mask, n_pixels, patch_size, patch_choices, generator, edge=view.edge)
    return pixels if keep_patch or patch_size <= 0 else pixels[: -patch_size * patch_size]


@dataclass
class StepRays:
    """Rendered rays with their targets (R rays, S samples along them).

    Attributes:
        rgb_rf: (R, 3) radiance-field colour, sRGB, background composited.
        rgb_pbr: (R, 3) PBR colour, sRGB, or None (PBR off).
        opacity: (R,) accumulated opacity.
        target: (R, 3) target sRGB: ``I M + sRGB(bg) (1 - M)``.
        mask: (R,) float hand mask at the rays' pixels.
        normal_cam: (R, 3) rendered normal in OpenCV camera axes, or None.
        normal_target: (R, 3) target normal encoded ``(n + 1) / 2`` (all-zero = missing), or None.
        gradients: (S, 3) SDF gradients (eikonal), or None.
        curvature: (S,) curvature (Laplacian term), or None.
    """

    rgb_rf: Tensor
    rgb_pbr: Tensor | None
    opacity: Tensor
    target: Tensor
    mask: Tensor
    normal_cam: Tensor | None = None
    normal_target: Tensor | None = None
    gradients: Tensor | None = None
    curvature: Tensor | None = None


def render_pixels(model, prep, view: StepView, pixels: Tensor, light: Tensor, background: Tensor,
                  options) -> StepRays:
    """Render the rays through ``pixels`` of ``view`` and gather their targets.

    Args:
        model: :class:`palm.model.PalmNet`.
        prep: ``model.prepare(frame)`` of the view's hand.
        view: the image.
        pixels: (R, 2) int64 ``(u, v)`` from :func:`draw_pixels`.
        light: (K, 7) SG environment.
        background: (3,) linear background colour.
        options: :class:`palm.model.RenderOptions`.
    """
    device = view.camera.K.device
    origins, dirs = pixel_rays(view.camera, pixels.to(device))
    out = model.render_rays(origins, dirs, prep, light, background, options)
    m = gather_pixels(view.mask[..., None], pixels)[:, 0].to(device=device, dtype=torch.float32)
    rgb = gather_pixels(view.image, pixels).to(device)
    target = rgb * m[:, None] + linear_to_srgb(background)[None] * (1 - m[:, None])
    normal_cam = normal_target = None
    if view.normal is not None:
        n_gt = gather_pixels(view.normal, pixels).to(device)
        normal_target = torch.where(n_gt.abs().sum(-1, keepdim=True) > 0, (n_gt + 1) / 2, torch.zeros_like(n_gt))
        normal_cam = out.normal @ view.camera.Rt[:3, :3].T
    return StepRays(rgb_rf=out.rgb_rf, rgb_pbr=out.rgb_pbr, opacity=out.opacity, target=target, mask=m,
                    normal_cam=normal_cam, normal_target=normal_target, gradients=out.gradients,
                    curvature=out.curvature)


def concat_rays(parts: Sequence[StepRays]) -> StepRays:
    """Rays of several renders as one batch (in order; a field missing from any part is None)."""

    def cat(name: str) -> Tensor | None:
        values = [getattr(p, name) for p in parts]
        return None if any(v is None for v in values) else torch.cat(values)

    return StepRays(**{name: cat(name) for name in StepRays.__dataclass_fields__})  # type: ignore[arg-type]


def loss_terms(
    rays: StepRays,
    weights: dict[str, float],
    codes: tuple[Tensor, Tensor],
    patch_size: int = 0,
    lpips_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
) -> dict[str, Tensor]:
    """The loss terms (spec section 7) of rendered rays; only terms with a non-zero weight.

    Args:
        rays: rendered rays; with ``patch_size > 0`` the last ``patch_size**2`` rays are the LPIPS
            patch, row-major.
        weights: the schedule's weights (:meth:`palm.losses.LossSchedule.weights`).
        codes: ``(z_s, z_a)`` shape and appearance codes, ``(32,)`` or ``(1, 32)``.
        patch_size: side of the LPIPS patch at the end of the rays (0: none).
        lpips_fn: LPIPS on ``(B, 3, H, W)`` in [0, 1] (default :func:`default_lpips`).

    Returns:
        ``{name: scalar}`` for :func:`palm.losses.total_loss`.
    """
    on = lambda name: weights.get(name, 0.0) != 0.0
    z_s, z_a = codes
    terms: dict[str, Tensor] = {
        "rf": L.rgb_l1(rays.rgb_rf, rays.target, rays.opacity),
        "segm": L.segmentation_bce(rays.opacity, rays.mask),
    }
    if on("latent_shape"):
        terms["latent_shape"] = L.latent(z_s.reshape(1, -1))
    if on("latent_appearance"):
        terms["latent_appearance"] = L.latent(z_a.reshape(1, -1))
    if on("pbr") and rays.rgb_pbr is not None:
        terms["pbr"] = L.rgb_l1(rays.rgb_pbr, rays.target, rays.opacity)
    if on("eikonal") and rays.gradients is not None:
        terms["eikonal"] = L.eikonal(rays.gradients)
    if on("lap") and rays.curvature is not None:
        terms["lap"] = L.laplacian(rays.curvature)
    if on("normal") and rays.normal_cam is not None and rays.normal_target is not None:
        terms["normal"] = L.normal_l1(rays.normal_cam, rays.normal_target, rays.mask)
    if on("lpips") and patch_size > 0:
        n = patch_size * patch_size
        if rays.rgb_rf.shape[0] < n:
            raise ValueError(f"{rays.rgb_rf.shape[0]} rays cannot hold a {patch_size}x{patch_size} LPIPS patch")
        fn = lpips_fn or default_lpips(rays.rgb_rf.device)
        terms["lpips"] = L.patch_lpips(rays.rgb_rf[-n:].reshape(patch_size, patch_size, 3),
                                       rays.target[-n:].reshape(patch_size, patch_size, 3), fn)
    return terms


def default_lpips(device: torch.device | str) -> Callable[[Tensor, Tensor], Tensor]:
    """LPIPS-Alex (:mod:`palm.lpips`, frozen) on ``(B, 3, H, W)`` in [0, 1] -> ``(B,)``."""
    from palm.lpips import load_lpips

    net = load_lpips("alex").to(device)
    return lambda a, b: net(a * 2 - 1, b * 2 - 1)


# ---------------------------------------------------------------------------------------------
# Optimiser plumbing
# ---------------------------------------------------------------------------------------------


def make_adam(groups: list[dict[str, Any]], adam: AdamConfig) -> torch.optim.Adam:
    """Adam over parameter groups (each with ``lr``; its ``base_lr`` is set to it when missing)."""
    for g in groups:
        g.setdefault("base_lr", g["lr"])
    return torch.optim.Adam(groups, betas=adam.betas, eps=adam.eps)


def warmup_factor(t: int, warmup_steps: int, start_factor: float) -> float:
    """Linear warm-up: ``start_factor`` at step ``t = 0`` to 1 at ``t = warmup_steps`` and after."""
    return start_factor + (1.0 - start_factor) * min(t / max(warmup_steps, 1), 1.0)


def clip_gradients(params: Sequence[Tensor], max_norm: float) -> None:
    """Clip the global gradient norm of ``params`` (those with a gradient) to ``max_norm``.

    Raises:
        FloatingPointError: a NaN or infinite gradient (the step must not be taken).
    """
    params = [p for p in params if p.grad is not None]
    if not all(bool(torch.isfinite(p.grad).all()) for p in params):
        raise FloatingPointError("non-finite gradient")
    if params:
        torch.nn.utils.clip_grad_norm_(params, max_norm)
