"""Single-image (or few-image) personalisation of the PALM-Net prior (spec section 9).

Every network of the prior stays frozen. Optimised, from the prior's mean subject:

* shape and appearance PCA coefficients ``c_s, c_a`` (zero-initialised; codes ``z = PCA decode(c)``,
  see :class:`palm.fields.latent.PCASpace`). A prior without PCA spaces has its 32-d codes
  optimised directly, starting from the mean of its training subjects' codes;
* the SG environment (initialised with the neutral grey :func:`palm.render.sg.sg_init`; it only
  receives gradients once the PBR loss is on);
* a pose correction per image (``delta pose (16, 3)``, ``delta transl (3,)``) and one shared
  ``delta betas``; gradients reach the bone transforms through the implicit-function gradient of
  the canonicalisation (``RenderOptions(training=True)``).

Schedule (``PersonalizeConfig``): shape coefficients frozen after ``shape_freeze_step``, PBR loss
and light from ``pbr_start_step``, linear warm-up over ``warmup_steps``, Adam ``(0.9, 0.99)``,
``eps 1e-15``, global gradient clip 0.5. Each step renders ``images_per_step`` images (drawn from
the inputs; one photo is repeated), each with its own edge-sampled pixels and LPIPS patch
(:func:`palm.train.sampling.sample_pixels`); one random linear background colour per step, target
``I M + sRGB(bg) (1 - M)``. LPIPS (AlexNet, :mod:`palm.lpips`) is applied to the last image's patch.
The Laplacian (curvature) term only acts on the shape code, so it is evaluated while the shape is
being optimised and skipped after ``shape_freeze_step`` (its gradient there would only reach the
pose correction through the pose code, at a negligible learning rate).

Images are processed at a working resolution: a square crop around the hand mask, resized so
that its side is at most ``work_res`` pixels. The avatar keeps the photo's full camera (for
``palm render --avatar``) and the working camera (``extra["work_camera"]``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from palm.avatar import Avatar, save_avatar
from palm.config import PersonalizeConfig
from palm.errors import PalmError
from palm.jobs import ETA, Emit, Log, Preview, Progress, Snapshot, check_cancel, null_emit

#: Adam settings shared with prior training (spec section 8).
ADAM_BETAS = (0.9, 0.99)
ADAM_EPS = 1e-15
GRAD_CLIP = 0.5
WARMUP_START_FACTOR = 0.01
#: Default working resolution (side of the square hand crop), pixels.
WORK_RES = 128
#: Side of the preview renders, pixels.
PREVIEW_RES = 48
#: Crop around the mask's bounding box: side = CROP_SCALE * its longer side.
CROP_SCALE = 1.25


# ---------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------


@dataclass
class PersonalizeView:
    """One image to personalise on, in the working frame (right hand).

    Attributes:
        image: (H, W, 3) float32 sRGB in [0, 1].
        mask: (H, W) bool hand mask.
        camera: :class:`palm.render.rays.Camera` of ``image``.
        pose: (16, 3) axis-angle (flat-hand mean).
        betas: (n_betas,) shape of the hand rig.
        transl: (3,) metres.
        name: where it came from (photo file name, sample id).
        left: the photo shows a left hand (``image`` is the mirrored photo).
        full_camera: the camera of the whole (uncropped, unscaled) photo, when this view is a crop.
    """

    image: np.ndarray
    mask: np.ndarray
    camera: Any
    pose: np.ndarray
    betas: np.ndarray
    transl: np.ndarray
    name: str = ""
    left: bool = False
    full_camera: Any = None


def _fit_betas(betas: np.ndarray, n_betas: int) -> np.ndarray:
    b = np.zeros(n_betas, np.float32)
    b[: min(n_betas, len(betas))] = np.asarray(betas, np.float32)[:n_betas]
    return b


def view_from_input(item: Any, n_betas: int) -> PersonalizeView:
    """A :class:`PersonalizeView` of a :class:`palm.data.photo.pipeline.PhotoResult`, a
    :class:`palm.data.types.FrameSample` or a view.

    Raises:
        PalmError: a sample without mask or hand registration.
    """
    import torch

    from palm.render.rays import Camera

    if isinstance(item, PersonalizeView):
        return item
    if hasattr(item, "fit") and hasattr(item, "mask"):  # PhotoResult
        fit = item.fit
        h, w = item.image.shape[:2]
        cam = Camera(torch.as_tensor(np.asarray(fit.K), dtype=torch.float32),
                     torch.as_tensor(np.asarray(fit.Rt), dtype=torch.float32), int(h), int(w))
        return PersonalizeView(
            image=np.asarray(item.image, np.float32), mask=np.asarray(item.mask, bool), camera=cam,
            pose=np.asarray(fit.pose, np.float32).reshape(16, 3), betas=_fit_betas(fit.betas, n_betas),
            transl=np.asarray(fit.transl, np.float32).reshape(3), name=Path(getattr(item, "path", "") or "").name,
            left=bool(item.left),
        )
    if hasattr(item, "camera") and hasattr(item, "hand"):  # FrameSample
        name = f"{item.subject}/{item.frame}/{item.view}"
        if item.mask is None:
            raise PalmError(name, "personalisation needs a hand mask for every image")
        if item.hand is None:
            raise PalmError(name, "personalisation needs hand parameters for every image")
        return PersonalizeView(
            image=np.asarray(item.image, np.float32), mask=np.asarray(item.mask, bool),
            camera=item.camera.to_camera(torch.float32), pose=np.asarray(item.hand.pose, np.float32).reshape(16, 3),
            betas=_fit_betas(item.hand.betas, n_betas), transl=np.asarray(item.hand.transl, np.float32).reshape(3),
            name=name,
        )
    raise TypeError(f"cannot personalise on a {type(item).__name__}")


def crop_view(view: PersonalizeView, work_res: int | None = WORK_RES, scale: float = CROP_SCALE) -> PersonalizeView:
    """Square crop around the mask (side ``scale`` x its bounding box), resized to at most ``work_res``.

    The camera follows exactly: the crop shifts the principal point and the resize scales ``K``'s
    first two rows (pixel-centre convention). ``full_camera`` keeps the original camera.

    Raises:
        PalmError: an empty mask.
    """
    from palm.render.rays import Camera

    mask = np.asarray(view.mask, bool)
    if not mask.any():
        raise PalmError(view.name or "mask", "the hand mask is empty")
    h, w = mask.shape
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    cy, cx = (rows[0] + rows[-1] + 1) / 2, (cols[0] + cols[-1] + 1) / 2
    side = math.ceil(scale * max(rows[-1] + 1 - rows[0], cols[-1] + 1 - cols[0]))
    sh, sw = min(side, h), min(side, w)
    y0 = int(min(max(round(cy - sh / 2), 0), h - sh))
    x0 = int(min(max(round(cx - sw / 2), 0), w - sw))
    image = view.image[y0:y0 + sh, x0:x0 + sw]
    crop_mask = mask[y0:y0 + sh, x0:x0 + sw]
    factor = 1.0 if work_res is None else min(1.0, work_res / max(sh, sw))
    K = view.camera.K.clone()
    K[0, 2] -= x0
    K[1, 2] -= y0
    if factor < 1.0:
        nh, nw = max(1, round(sh * factor)), max(1, round(sw * factor))
        fy, fx = nh / sh, nw / sw
        t = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None]
        image = F.interpolate(t, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
        image = image[0].permute(1, 2, 0).clamp(0, 1).numpy()
        m = torch.from_numpy(crop_mask.astype(np.float32))[None, None]
        crop_mask = F.interpolate(m, size=(nh, nw), mode="area")[0, 0].numpy() > 0.5
        K[0] = K[0] * fx
        K[1] = K[1] * fy
        K[2] = torch.tensor([0.0, 0.0, 1.0])
        sh, sw = nh, nw
    cam = Camera(K, view.camera.Rt.clone(), int(sh), int(sw))
    return PersonalizeView(
        image=np.ascontiguousarray(image, np.float32), mask=np.ascontiguousarray(crop_mask), camera=cam,
        pose=view.pose, betas=view.betas, transl=view.transl, name=view.name, left=view.left,
        full_camera=view.full_camera if view.full_camera is not None else view.camera,
    )


# ---------------------------------------------------------------------------------------------
# The optimised state
# ---------------------------------------------------------------------------------------------


class PersonalState(nn.Module):
    """Everything personalisation optimises.

    Args:
        prior: :class:`palm.prior.Prior`.
        n_frames: number of input images (one pose correction each).
        light_init: (K, 7) initial SG environment.
    """

    def __init__(self, prior, n_frames: int, light_init: Tensor):
        super().__init__()
        model = prior.model
        dev = light_init.device
        object.__setattr__(self, "pca", {k: prior.pca.get(k) for k in ("shape", "appearance")})
        self.uses_pca = all(v is not None for v in self.pca.values())
        if self.uses_pca:
            self.shape_coeffs = nn.Parameter(torch.zeros(self.pca["shape"].n_components, device=dev))
            self.appearance_coeffs = nn.Parameter(torch.zeros(self.pca["appearance"].n_components, device=dev))
            self.pca = {k: _space_to(v, dev) for k, v in self.pca.items()}
        else:
            z_s, z_a = prior.codes_from_coeffs()
            self.shape_code_param = nn.Parameter(z_s.detach().clone().to(dev))
            self.appearance_code_param = nn.Parameter(z_a.detach().clone().to(dev))
        self.light = nn.Parameter(light_init.detach().clone())
        n_betas = int(model.hand.n_betas)
        self.delta_pose = nn.Parameter(torch.zeros(n_frames, 16, 3, device=dev))
        self.delta_transl = nn.Parameter(torch.zeros(n_frames, 3, device=dev))
        self.delta_betas = nn.Parameter(torch.zeros(n_betas, device=dev))

    def shape_params(self) -> list[nn.Parameter]:
        return [self.shape_coeffs] if self.uses_pca else [self.shape_code_param]

    def appearance_params(self) -> list[nn.Parameter]:
        return [self.appearance_coeffs] if self.uses_pca else [self.appearance_code_param]

    def pose_params(self) -> list[nn.Parameter]:
        return [self.delta_pose, self.delta_transl, self.delta_betas]

    def codes(self) -> tuple[Tensor, Tensor]:
        """Decoded ``(z_s (32,), z_a (32,))`` (differentiable)."""
        if self.uses_pca:
            return (self.pca["shape"].decode(self.shape_coeffs[None])[0],
                    self.pca["appearance"].decode(self.appearance_coeffs[None])[0])
        return self.shape_code_param, self.appearance_code_param

    def coeffs(self) -> tuple[Tensor, Tensor]:
        """``(c_s, c_a)``; empty tensors when the prior has no PCA."""
        if self.uses_pca:
            return self.shape_coeffs, self.appearance_coeffs
        empty = self.light.new_zeros(0)
        return empty, empty

    def frame(self, view_index: int, pose: Tensor, betas: Tensor, transl: Tensor):
        """The :class:`palm.model.Frame` of input ``view_index`` with the current corrections."""
        from palm.model import Frame

        z_s, z_a = self.codes()
        return Frame(shape_code=z_s, appearance_code=z_a, pose=pose + self.delta_pose[view_index],
                     betas=betas + self.delta_betas, transl=transl + self.delta_transl[view_index])


def _space_to(space, device):
    from palm.fields.latent import PCASpace

    return PCASpace(space.mean.to(device), space.basis.to(device), space.explained_variance.to(device),
                    space.explained_variance_ratio.to(device), space.add_mean)


# ---------------------------------------------------------------------------------------------
# Rendering helpers
# ---------------------------------------------------------------------------------------------


#: Seed of the Monte-Carlo light samples of evaluation renders (reproducible scores).
RENDER_SEED = 0


def render_view(model, camera, frame, light: Tensor, pbr: bool = True, background: Tensor | None = None) -> np.ndarray:
    """Full image (no gradients) of ``frame`` seen by ``camera``: ``(H, W, 3)`` sRGB, white background.

    The PBR estimator's random light-sample order is drawn from a fixed seed (the global RNG is
    left as it was), so the same inputs give the same image.
    """
    devices = [camera.K.device] if camera.K.device.type == "cuda" else []
    with torch.no_grad(), torch.random.fork_rng(devices=devices):
        torch.manual_seed(RENDER_SEED)
        frame = _detached(frame)
        out = model.render_image(camera, frame, light=light.detach(), background=background, pbr=pbr)
    return (out["rgb_pbr"] if pbr else out["rgb_rf"]).clamp(0, 1).cpu().numpy().astype(np.float32)


def _detached(frame):
    from palm.model import Frame

    return Frame(*(t.detach() for t in (frame.shape_code, frame.appearance_code, frame.pose, frame.betas,
                                        frame.transl)))


def image_metrics(pred: np.ndarray, view: PersonalizeView, lpips: bool = True) -> dict[str, float]:
    """Masked PSNR / SSIM / LPIPS of a white-background render against the view (spec section 11)."""
    from palm.metrics import lpips_masked, psnr_masked, ssim_masked

    out = {"psnr_masked": psnr_masked(pred, view.image, view.mask)}
    try:
        out["ssim_masked"] = ssim_masked(pred, view.image, view.mask)
    except ValueError:  # image smaller than the SSIM window
        out["ssim_masked"] = float("nan")
    if lpips:
        try:
            out["lpips_masked"] = lpips_masked(pred, view.image, view.mask)
        except (ValueError, RuntimeError):  # image too small for AlexNet
            out["lpips_masked"] = float("nan")
    return out


# ---------------------------------------------------------------------------------------------
# Personalisation
# ---------------------------------------------------------------------------------------------


def personalize(
    inputs: Any,
    prior,
    cfg: PersonalizeConfig,
    out_dir: str | Path | None = None,
    emit: Emit = null_emit,
    cancel=None,
    *,
    preset: str = "",
    work_res: int | None = WORK_RES,
    lpips_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
    final_metrics: bool = True,
    preview_res: int = PREVIEW_RES,
) -> Avatar:
    """Personalise ``prior`` to one photo (or a few images) and return the avatar.

    Args:
        inputs: a :class:`palm.data.photo.pipeline.PhotoResult`, a :class:`palm.data.types.FrameSample`,
            a :class:`PersonalizeView`, or a sequence of them (images drawn at random per step).
        prior: :class:`palm.prior.Prior` (its model is used on its own device, frozen).
        cfg: the schedule (``palm.config.PERSONALIZE_PRESETS``).
        out_dir: when given, the avatar folder is written there (``save_avatar`` + ``report.json``).
        emit: receives :class:`Progress` every step, :class:`Preview` and :class:`Snapshot` every
            ``cfg.preview_every`` steps and at the end.
        cancel: a cancel token; when set, :class:`palm.errors.JobCancelled` is raised at the next
            step and nothing is written.
        preset: the preset's name (recorded in the report).
        work_res: side of the working crop (None: the images as given).
        lpips_fn: differentiable LPIPS on ``(B, 3, H, W)`` in [0, 1] (default AlexNet,
            :func:`palm.lpips.lpips_loss`).
        final_metrics: render the final PBR image in the input view and score it.
        preview_res: side of the preview renders.

    Returns:
        The :class:`Avatar`; ``avatar.extra["report"]`` holds what ``report.json`` holds.
    """
    from palm.losses import LossSchedule, latent, patch_lpips, rgb_l1, segmentation_bce, total_loss
    from palm.model import RenderOptions
    from palm.render.color import linear_to_srgb
    from palm.render.rays import pixel_rays
    from palm.render.sg import sg_init
    from palm.train.sampling import edge_map, gather_pixels, sample_pixels

    t_start = time.monotonic()
    model = prior.model
    device = model.light.device
    items = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
    if not items:
        raise PalmError(None, "personalisation needs at least one image")
    n_betas = int(model.hand.n_betas)
    views = [crop_view(view_from_input(it, n_betas), work_res) for it in items]
    for v in views:
        if min(v.image.shape[:2]) < cfg.patch_size:
            raise PalmError(v.name or "image", f"the hand crop ({v.image.shape[1]}x{v.image.shape[0]} px) is smaller "
                                               f"than the {cfg.patch_size}-px LPIPS patch")
    images = [torch.from_numpy(v.image).to(device) for v in views]
    masks = [torch.from_numpy(v.mask) for v in views]
    edges = [edge_map(m) for m in masks]
    cams = [v.camera.to(device) for v in views]
    poses = [torch.as_tensor(v.pose, device=device) for v in views]
    betas0 = torch.as_tensor(views[0].betas, device=device)
    transls = [torch.as_tensor(v.transl, device=device) for v in views]

    gen = torch.Generator().manual_seed(cfg.seed)
    dev_gen = torch.Generator(device=device).manual_seed(cfg.seed + 1)
    light0 = sg_init(model.cfg.light.n_lobes, torch.Generator().manual_seed(cfg.seed)).to(device)
    state = PersonalState(prior, len(views), light0)
    if not state.uses_pca:
        emit(Log("the prior has no PCA spaces: optimising the 32-d codes directly from the mean code", "warning"))

    saved_flags = {name: p.requires_grad for name, p in model.named_parameters()}
    model.requires_grad_(False)
    model.set_step(None, None)
    lpips_fn = lpips_fn or _default_lpips(device)

    groups = [
        {"params": state.shape_params(), "lr": cfg.lr, "name": "shape"},
        {"params": state.appearance_params(), "lr": cfg.lr, "name": "appearance"},
        {"params": [state.light], "lr": cfg.lr_light, "name": "light"},
        {"params": state.pose_params(), "lr": cfg.lr_pose_correction,
         "weight_decay": cfg.weight_decay_pose_correction, "name": "pose"},
    ]
    optim = torch.optim.Adam(groups, betas=ADAM_BETAS, eps=ADAM_EPS)
    warm = max(int(cfg.warmup_steps), 1)
    sched = torch.optim.lr_scheduler.LambdaLR(
        optim, lambda s: WARMUP_START_FACTOR + (1 - WARMUP_START_FACTOR) * min(s / warm, 1.0))
    schedule = LossSchedule(cfg.weights, mode="personalize", total_steps=cfg.max_steps, pbr_start=cfg.pbr_start_step)
    eta = ETA(cfg.max_steps)
    history: list[dict[str, float]] = []
    t_loop = time.monotonic()

    try:
        for step in range(1, cfg.max_steps + 1):
            check_cancel(cancel)
            weights = dict(schedule.weights(step))
            shape_on = step <= cfg.shape_freeze_step
            use_pbr = weights["pbr"] > 0
            use_lap = weights["lap"] > 0 and shape_on
            bg = torch.rand(3, generator=gen).to(device)
            bg_srgb = linear_to_srgb(bg)

            # draw the step's images and their pixels; rays of one input image share one prepare()
            picks = [int(torch.randint(0, len(views), (1,), generator=gen)) for _ in range(cfg.images_per_step)]
            if len(views) == 1:
                picks = [0] * cfg.images_per_step
            per_view: dict[int, list[Tensor]] = {}
            patch_px = None
            for j, vi in enumerate(picks):
                px, _ = sample_pixels(masks[vi], cfg.pixels_per_image, cfg.patch_size, cfg.patch_choices, gen,
                                      edge=edges[vi])
                if j == len(picks) - 1:  # the last image's patch feeds LPIPS: keep it last
                    patch_px = (vi, px[-cfg.patch_size ** 2:])
                    px = px[:-cfg.patch_size ** 2]
                per_view.setdefault(vi, []).append(px)
            order = [vi for vi in per_view if vi != patch_px[0]] + [patch_px[0]]

            preds, preds_pbr, opac, targets, mask_vals = [], [], [], [], []
            lap_terms = []
            # normals depend on the shape code only through the SDF gradient's own graph: keep it
            # (a double backward) while the shape is fitted, drop it afterwards
            options = RenderOptions(training=True, importance=True, pbr=use_pbr, curvature=use_lap,
                                    geometry_grad=shape_on, generator=dev_gen if device.type != "cpu" else gen)
            for vi in order:
                px = torch.cat(per_view[vi] + ([patch_px[1]] if vi == patch_px[0] else []))
                frame = state.frame(vi, poses[vi], betas0, transls[vi])
                prep = model.prepare(frame)
                o, d = pixel_rays(cams[vi], (px - 0.5).to(device))
                out = model.render_rays(o, d, prep, state.light, bg, options)
                m = gather_pixels(masks[vi][..., None].float(), px)[:, 0].to(device)
                rgb_gt = gather_pixels(images[vi], px)
                targets.append(rgb_gt * m[:, None] + bg_srgb[None] * (1 - m[:, None]))
                preds.append(out.rgb_rf)
                preds_pbr.append(out.rgb_pbr)
                opac.append(out.opacity)
                mask_vals.append(m)
                if out.curvature is not None:
                    lap_terms.append(out.curvature)

            pred = torch.cat(preds)
            target = torch.cat(targets)
            opacity = torch.cat(opac)
            mask_all = torch.cat(mask_vals)
            z_s, z_a = state.codes()
            p = cfg.patch_size
            terms = {
                "rf": rgb_l1(pred, target, opacity),
                "segm": segmentation_bce(opacity, mask_all),
                "lpips": patch_lpips(pred[-p * p:].reshape(p, p, 3), target[-p * p:].reshape(p, p, 3), lpips_fn),
                "latent_shape": latent(z_s[None]),
                "latent_appearance": latent(z_a[None]),
            }
            if use_pbr:
                terms["pbr"] = rgb_l1(torch.cat(preds_pbr), target, opacity)
            if lap_terms:
                from palm.losses import laplacian

                terms["lap"] = laplacian(torch.cat(lap_terms))
            loss, log = total_loss(terms, weights)
            optim.zero_grad(set_to_none=True)
            loss.backward()
            if not shape_on:
                for prm in state.shape_params():
                    prm.grad = None
            if not use_pbr:
                state.light.grad = None
            params = [prm for prm in state.parameters() if prm.grad is not None]
            if params:
                torch.nn.utils.clip_grad_norm_(params, GRAD_CLIP)
            optim.step()
            sched.step()

            with torch.no_grad():
                mse = float(((pred - target) ** 2).mean())
            log["psnr"] = 10 * math.log10(1 / max(mse, 1e-10))
            history.append(log)
            emit(Progress(step, cfg.max_steps, "pbr" if use_pbr else "", losses=log, eta_s=eta(step)))
            if cfg.preview_every > 0 and (step % cfg.preview_every == 0) and step < cfg.max_steps:
                _emit_state(emit, step, state, model, views[0], cams[0], poses[0], betas0, transls[0], use_pbr,
                            preview_res)
    finally:
        for name, prm in model.named_parameters():
            prm.requires_grad_(saved_flags.get(name, True))

    check_cancel(cancel)
    seconds_fit = time.monotonic() - t_start
    seconds_loop = time.monotonic() - t_loop
    avatar = _make_avatar(state, prior, views[0], poses[0], betas0, transls[0])
    avatar.extra["preset"] = preset
    report: dict[str, Any] = {
        "preset": preset,
        "steps": cfg.max_steps,
        "seconds": None,
        "seconds_fit": round(seconds_fit, 2),
        "seconds_per_step": round(seconds_loop / max(cfg.max_steps, 1), 4),
        "images": len(views),
        "work_resolution": [int(views[0].image.shape[1]), int(views[0].image.shape[0])],
        "pca": state.uses_pca,
        "final_losses": history[-1] if history else {},
        "prior_hash": prior.content_hash,
        "photo": views[0].name,
    }
    render = None
    if final_metrics:
        frame = state.frame(0, poses[0], betas0, transls[0])
        render = render_view(model, cams[0], frame, state.light, pbr=True)
        report.update({k: (round(v, 4) if math.isfinite(v) else None)
                       for k, v in image_metrics(render, views[0]).items()})
        report["metrics_view"] = "input (working crop), PBR, white background, hand mask"
        emit(Preview(cfg.max_steps, render))
    _emit_state(emit, cfg.max_steps, state, model, views[0], cams[0], poses[0], betas0, transls[0], True, 0)
    report["seconds"] = round(time.monotonic() - t_start, 2)
    check_cancel(cancel)
    if out_dir is not None:
        save_avatar(out_dir, avatar, report=report)
        if render is not None:
            write_side_by_side(Path(out_dir) / "preview.png", views[0].image, render)
    avatar.extra["report"] = report
    return avatar


#: AlexNet's LPIPS needs inputs of at least this many pixels a side.
LPIPS_MIN_SIDE = 32


def _default_lpips(device) -> Callable[[Tensor, Tensor], Tensor]:
    """LPIPS-Alex on ``(B, 3, H, W)`` in [0, 1]; inputs smaller than 32 px are upsampled bilinearly."""
    from palm.lpips import load_lpips

    net = load_lpips("alex").to(device)

    def lpips(a: Tensor, b: Tensor) -> Tensor:
        if min(a.shape[-2:]) < LPIPS_MIN_SIDE:
            f = LPIPS_MIN_SIDE / min(a.shape[-2:])
            size = (math.ceil(a.shape[-2] * f), math.ceil(a.shape[-1] * f))
            a = F.interpolate(a, size=size, mode="bilinear", align_corners=False)
            b = F.interpolate(b, size=size, mode="bilinear", align_corners=False)
        return net(a * 2 - 1, b * 2 - 1)

    return lpips


def _make_avatar(state: PersonalState, prior, view: PersonalizeView, pose: Tensor, betas: Tensor,
                 transl: Tensor) -> Avatar:
    with torch.no_grad():
        z_s, z_a = state.codes()
        c_s, c_a = state.coeffs()
        full = view.full_camera if view.full_camera is not None else view.camera
        return Avatar(
            shape_coeffs=c_s.detach().cpu().clone(), appearance_coeffs=c_a.detach().cpu().clone(),
            shape_code=z_s.detach().cpu().clone(), appearance_code=z_a.detach().cpu().clone(),
            light=state.light.detach().cpu().clone(),
            pose=(pose + state.delta_pose[0]).cpu().numpy().astype(np.float32),
            betas=(betas + state.delta_betas).cpu().numpy().astype(np.float32),
            transl=(transl + state.delta_transl[0]).cpu().numpy().astype(np.float32),
            camera=full.to("cpu").to_dict(), prior_hash=prior.content_hash, left=view.left, photo=view.name,
            extra={"work_camera": view.camera.to("cpu").to_dict(), "pca": bool(state.uses_pca)},
        )


def _emit_state(emit: Emit, step: int, state: PersonalState, model, view: PersonalizeView, cam, pose, betas, transl,
                pbr: bool, preview_res: int) -> None:
    """Snapshot (and, with ``preview_res > 0``, a low-res preview render) of the current avatar."""
    with torch.no_grad():
        z_s, z_a = state.codes()
        c_s, c_a = state.coeffs()
        emit(Snapshot(step, {
            "shape_coeffs": c_s.detach().cpu().numpy().copy(),
            "appearance_coeffs": c_a.detach().cpu().numpy().copy(),
            "shape_code": z_s.detach().cpu().numpy().copy(),
            "appearance_code": z_a.detach().cpu().numpy().copy(),
            "light": state.light.detach().cpu().numpy().copy(),
            "delta_pose": state.delta_pose[0].detach().cpu().numpy().copy(),
            "delta_betas": state.delta_betas.detach().cpu().numpy().copy(),
        }))
    if preview_res > 0:
        factor = min(1.0, preview_res / max(cam.height, cam.width))
        small = cam.scaled(factor) if factor < 1.0 else cam
        frame = state.frame(0, pose, betas, transl)
        emit(Preview(step, render_view(model, small, frame, state.light, pbr=pbr)))


def write_side_by_side(path: str | Path, photo: np.ndarray, render: np.ndarray) -> None:
    """Write ``photo | render`` (both (H, W, 3) sRGB in [0, 1]) as one PNG, atomically."""
    from PIL import Image

    from palm.io import atomic_write

    image = np.concatenate([np.asarray(photo), np.asarray(render)], axis=1)
    with atomic_write(path) as tmp:
        Image.fromarray((np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)).save(tmp, format="PNG")


def loss_history(events: Sequence[Any]) -> list[float]:
    """Total losses of the :class:`Progress` events in ``events`` (test and bench helper)."""
    return [e.losses["total"] for e in events if isinstance(e, Progress) and "total" in e.losses]
