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

Schedule (:class:`palm.config.PersonalizeConfig`): shape coefficients frozen after
``shape_freeze_step``, PBR loss and light from ``pbr_start_step``, linear warm-up over
``warmup_steps``, Adam and gradient clipping of :class:`palm.config.AdamConfig`. Each step renders
``images_per_step`` images (drawn from the inputs; one photo is repeated), each with its own
edge-sampled pixels; the last image keeps its LPIPS patch, which LPIPS (AlexNet) scores. One
random linear background colour per step. The rays, their targets and the loss terms are those of
prior training (:mod:`palm.train.step`). The Laplacian (curvature) term only acts on the shape
code, so it is evaluated while the shape is being optimised and skipped after
``shape_freeze_step``.

Images are processed at a working resolution (``cfg.work_res``): a square crop around the hand
mask (:func:`palm.train.views.crop_view`). The avatar keeps the photo's full camera (for
``palm render --avatar``) and the working camera (``extra["work_camera"]``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from palm.avatar import MESH_FILE, Avatar, save_avatar
from palm.config import PersonalizeConfig
from palm.errors import PalmError
from palm.jobs import ETA, Emit, Log, Preview, Progress, Snapshot, check_cancel, null_emit
from palm.losses import LossSchedule, total_loss
from palm.train.step import (
    StepRays,
    StepView,
    clip_gradients,
    concat_rays,
    default_lpips,
    draw_pixels,
    loss_terms,
    make_adam,
    render_pixels,
    warmup_factor,
)
from palm.train.views import PersonalizeView, crop_view, image_metrics, json_number, render_outputs, view_from_input


class PersonalState(nn.Module):
    """Everything personalisation optimises, and the inputs' hands it corrects.

    Args:
        prior: :class:`palm.prior.Prior`.
        light_init: (K, 7) initial SG environment (its device is the state's).
        poses: per input image, (16, 3) axis-angle.
        betas: (n_betas,) shape shared by the inputs (the first image's).
        transls: per input image, (3,) translation.
    """

    def __init__(self, prior, light_init: Tensor, poses: Sequence[Tensor], betas: Tensor, transls: Sequence[Tensor]):
        super().__init__()
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
        self.register_buffer("poses", torch.stack([torch.as_tensor(p, dtype=torch.float32) for p in poses]).to(dev))
        self.register_buffer("betas", torch.as_tensor(betas, dtype=torch.float32).to(dev))
        self.register_buffer("transls", torch.stack([torch.as_tensor(t, dtype=torch.float32) for t in transls]).to(dev))
        self.delta_pose = nn.Parameter(torch.zeros_like(self.poses))
        self.delta_transl = nn.Parameter(torch.zeros_like(self.transls))
        self.delta_betas = nn.Parameter(torch.zeros_like(self.betas))

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

    def frame(self, view_index: int):
        """The :class:`palm.model.Frame` of input ``view_index`` with the current corrections."""
        from palm.model import Frame

        z_s, z_a = self.codes()
        return Frame(shape_code=z_s, appearance_code=z_a, pose=self.poses[view_index] + self.delta_pose[view_index],
                     betas=self.betas + self.delta_betas,
                     transl=self.transls[view_index] + self.delta_transl[view_index])


def _space_to(space, device):
    from palm.fields.latent import PCASpace

    return PCASpace(space.mean.to(device), space.basis.to(device), space.explained_variance.to(device),
                    space.explained_variance_ratio.to(device), space.add_mean)


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
    work_res: int | None = None,
    lpips_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
    final_metrics: bool = True,
    write_extra: Callable[[Path], None] | None = None,
) -> Avatar:
    """Personalise ``prior`` to one photo (or a few images) and return the avatar.

    Args:
        inputs: a :class:`palm.data.photo.pipeline.PhotoResult`, a :class:`palm.data.types.FrameSample`,
            a :class:`PersonalizeView`, or a sequence of them (images drawn at random per step).
        prior: :class:`palm.prior.Prior` (its model is used on its own device, frozen).
        cfg: the schedule (``palm.config.PERSONALIZE_PRESETS``).
        out_dir: when given, the avatar folder is written there, atomically (``save_avatar`` +
            ``report.json`` + ``preview.png`` + what ``write_extra`` writes); an existing folder is
            replaced (the caller applies the output policy, :func:`palm.io.check_output_dir`).
        emit: receives :class:`Progress` every step, :class:`Preview` and :class:`Snapshot` every
            ``cfg.preview_every`` steps and at the end.
        cancel: a cancel token; when set, :class:`palm.errors.JobCancelled` is raised at the next
            step and nothing is written.
        preset: the preset's name (recorded in the report).
        work_res: overrides ``cfg.work_res`` when given.
        lpips_fn: differentiable LPIPS on ``(B, 3, H, W)`` in [0, 1] (default AlexNet).
        final_metrics: render the final PBR image in the input view and score it.
        write_extra: called with the avatar's temporary folder to add files to it before it is
            moved into place.

    Returns:
        The :class:`Avatar`; ``avatar.extra["report"]`` holds what ``report.json`` holds.
    """
    from palm.render.sg import sg_init

    t_start = time.monotonic()
    model = prior.model
    device = model.light.device
    items = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
    if not items:
        raise PalmError(None, "personalisation needs at least one image")
    n_betas = int(model.hand.n_betas)
    res = cfg.work_res if work_res is None else work_res
    views = [crop_view(view_from_input(it, n_betas), res, cfg.crop_scale) for it in items]
    for v in views:
        if min(v.image.shape[:2]) < cfg.patch_size:
            raise PalmError(v.name or "image", f"the hand crop ({v.image.shape[1]}x{v.image.shape[0]} px) is smaller "
                                               f"than the {cfg.patch_size}-px LPIPS patch")
    step_views = [StepView.of(v.image, v.mask, v.camera, device) for v in views]
    gen = torch.Generator().manual_seed(cfg.seed)
    dev_gen = torch.Generator(device=device).manual_seed(cfg.seed + 1)
    light0 = sg_init(model.cfg.light.n_lobes, torch.Generator().manual_seed(cfg.seed)).to(device)
    state = PersonalState(prior, light0, [v.pose for v in views], views[0].betas, [v.transl for v in views])
    if not state.uses_pca:
        emit(Log("the prior has no PCA spaces: optimising the 32-d codes directly from the mean code", "warning"))

    saved_flags = {name: p.requires_grad for name, p in model.named_parameters()}
    model.requires_grad_(False)
    model.set_step(None, None)
    lpips_fn = lpips_fn or default_lpips(device)
    optim = make_adam([
        {"params": state.shape_params(), "lr": cfg.lr, "name": "shape"},
        {"params": state.appearance_params(), "lr": cfg.lr, "name": "appearance"},
        {"params": [state.light], "lr": cfg.lr_light, "name": "light"},
        {"params": state.pose_params(), "lr": cfg.lr_pose_correction,
         "weight_decay": cfg.weight_decay_pose_correction, "name": "pose"},
    ], cfg.adam)
    schedule = LossSchedule(cfg.weights, mode="personalize", total_steps=cfg.max_steps, pbr_start=cfg.pbr_start_step)
    eta = ETA(cfg.max_steps)
    history: list[dict[str, float]] = []
    t_loop = time.monotonic()
    try:
        for step in range(1, cfg.max_steps + 1):
            check_cancel(cancel)
            weights = dict(schedule.weights(step))
            shape_on = step <= cfg.shape_freeze_step
            if not shape_on:
                weights["lap"] = 0.0  # the curvature term only reaches the (frozen) shape
            bg = torch.rand(3, generator=gen).to(device)
            rays = _render_step(model, state, step_views, cfg, weights, bg, gen, dev_gen, shape_on)
            loss, log = total_loss(loss_terms(rays, weights, state.codes(), cfg.patch_size, lpips_fn), weights)
            optim.zero_grad(set_to_none=True)
            loss.backward()
            if not shape_on:
                for prm in state.shape_params():
                    prm.grad = None
            if weights["pbr"] == 0:
                state.light.grad = None
            for group in optim.param_groups:
                group["lr"] = group["base_lr"] * warmup_factor(step - 1, cfg.warmup_steps, cfg.warmup_start_factor)
            try:
                clip_gradients(list(state.parameters()), cfg.grad_clip)
            except FloatingPointError as exc:
                raise PalmError(views[0].name or None, f"personalisation diverged at step {step} ({exc})") from None
            optim.step()
            with torch.no_grad():
                mse = float(((rays.rgb_rf - rays.target) ** 2).mean())
            log["psnr"] = 10 * math.log10(1 / max(mse, 1e-10))
            history.append(log)
            emit(Progress(step, cfg.max_steps, "pbr" if weights["pbr"] > 0 else "", losses=log, eta_s=eta(step)))
            if cfg.preview_every > 0 and (step % cfg.preview_every == 0) and step < cfg.max_steps:
                _emit_state(emit, step, state, model, views[0], weights["pbr"] > 0, cfg.preview_res)
    finally:
        for name, prm in model.named_parameters():
            prm.requires_grad_(saved_flags.get(name, True))

    check_cancel(cancel)
    avatar = _make_avatar(state, prior, views[0])
    avatar.extra["preset"] = preset
    report: dict[str, Any] = {
        "preset": preset,
        "steps": cfg.max_steps,
        "seconds": None,
        "seconds_fit": round(time.monotonic() - t_start, 2),
        "seconds_per_step": round((time.monotonic() - t_loop) / max(cfg.max_steps, 1), 4),
        "images": len(views),
        "work_resolution": [int(views[0].image.shape[1]), int(views[0].image.shape[0])],
        "pca": state.uses_pca,
        "final_losses": history[-1] if history else {},
        "prior_hash": prior.content_hash,
        "photo": views[0].name,
    }
    render, shown = None, views[0]
    if cfg.detail is not None:
        shown, render = _detail_stage(items[0], n_betas, prior, avatar, cfg, report, emit, cancel, final_metrics)
    elif final_metrics:
        out = render_outputs(model, views[0].camera.to(device), state.frame(0), state.light, pbr=True)
        render = out["rgb"]
        scores = image_metrics(render, views[0], opacity=out["opacity"])
        report.update({k: json_number(v) for k, v in scores.items()})
        report["metrics_view"] = "input (working crop), PBR, white background, hand mask; iou: rendered silhouette"
    if render is not None:
        emit(Preview(cfg.max_steps, render))
    _emit_state(emit, cfg.max_steps, state, model, views[0], True, 0)
    report["seconds"] = round(time.monotonic() - t_start, 2)
    check_cancel(cancel)
    if out_dir is not None:
        mesh = avatar.extra.get("mesh")

        def extra(folder: Path) -> None:
            if mesh is not None:
                from palm.bake import save_baked

                save_baked(folder / MESH_FILE, mesh)
            if write_extra is not None:
                write_extra(folder)

        write_avatar_folder(out_dir, avatar, report, shown.image, render, extra)
    avatar.extra["report"] = report
    return avatar


def _detail_stage(item, n_betas: int, prior, avatar: Avatar, cfg: PersonalizeConfig, report: dict[str, Any],
                  emit: Emit, cancel, final_metrics: bool) -> tuple[PersonalizeView, np.ndarray | None]:
    """The photo-detail stage (:mod:`palm.detail`) on the first input, at ``cfg.detail.res``.

    Puts the refined mesh in ``avatar.extra["mesh"]`` (not serialised in avatar.json), its crop
    camera in ``avatar.extra["detail"]`` and the raster render's input-view metrics in ``report``.

    Returns:
        ``(the detail crop, its render on white (H, W, 3) sRGB or None)``.
    """
    from palm.detail import on_white, refine_avatar, render_mesh
    from palm.hand.lbs import bone_transforms

    view = crop_view(view_from_input(item, n_betas), cfg.detail.res, cfg.crop_scale)
    mesh, light, info = refine_avatar(prior, avatar, view.image, view.mask, view.camera, cfg.detail, emit, cancel,
                                      keypoints=view.keypoints, keypoints_3d=view.keypoints_3d)
    avatar.light = light.to(avatar.light)
    if "pose" in info:  # corrected to the photo's mask (palm.silhouette.fit_pose)
        avatar.pose, avatar.transl = np.asarray(info["pose"], np.float32), np.asarray(info["transl"], np.float32)
    avatar.extra["mesh"] = mesh
    avatar.extra["albedo_gain"] = info["albedo_ratio"]  # the neural renderer's share of the colour correction
    avatar.extra["detail"] = {**info, "camera": view.camera.to("cpu").to_dict()}
    report["detail"] = info
    if not final_metrics:
        return view, None
    bones = bone_transforms(prior.model.hand, avatar.pose, avatar.betas, joints=mesh.joints)
    rgba = render_mesh(mesh, bones, avatar.transl, view.camera, avatar.light)
    render = on_white(rgba)
    scores = image_metrics(render, view, opacity=rgba[..., 3])
    report.update({k: json_number(v) for k, v in scores.items()})
    report["detail_resolution"] = [int(view.image.shape[1]), int(view.image.shape[0])]
    report["metrics_view"] = ("input (crop at the detail resolution), raster PBR of the refined mesh with shadows, "
                              "white background, hand mask; iou: rendered silhouette")
    return view, render


def _render_step(model, state: PersonalState, views: list[StepView], cfg: PersonalizeConfig,
                 weights: dict[str, float], bg: Tensor, gen: torch.Generator, dev_gen: torch.Generator,
                 shape_on: bool) -> StepRays:
    """Draw the step's ``images_per_step`` images and render their rays (:mod:`palm.train.step`).

    Draws of the same input share one ``model.prepare``; the last draw keeps its LPIPS patch and
    its input is rendered last, so the patch ends the returned rays.
    """
    from palm.model import RenderOptions

    n = cfg.images_per_step
    picks = [int(torch.randint(0, len(views), (1,), generator=gen)) for _ in range(n)]
    draws: dict[int, list[Tensor]] = {}
    for j, vi in enumerate(picks):
        draws.setdefault(vi, []).append(draw_pixels(views[vi], cfg.pixels_per_image, cfg.patch_size,
                                                    cfg.patch_choices, gen, keep_patch=j == n - 1))
    order = [vi for vi in draws if vi != picks[-1]] + [picks[-1]]
    # normals depend on the shape code only through the SDF gradient's own graph: keep it (a double
    # backward) while the shape is fitted, drop it afterwards
    options = RenderOptions(training=True, importance=True, pbr=weights["pbr"] > 0, curvature=weights["lap"] > 0,
                            geometry_grad=shape_on, generator=dev_gen if dev_gen.device.type != "cpu" else gen)
    parts = [render_pixels(model, model.prepare(state.frame(vi)), views[vi], torch.cat(draws[vi]), state.light, bg,
                           options) for vi in order]
    return concat_rays(parts)


def _make_avatar(state: PersonalState, prior, view: PersonalizeView) -> Avatar:
    with torch.no_grad():
        z_s, z_a = state.codes()
        c_s, c_a = state.coeffs()
        frame = state.frame(0)
        full = view.full_camera if view.full_camera is not None else view.camera
        return Avatar(
            shape_coeffs=c_s.detach().cpu().clone(), appearance_coeffs=c_a.detach().cpu().clone(),
            shape_code=z_s.detach().cpu().clone(), appearance_code=z_a.detach().cpu().clone(),
            light=state.light.detach().cpu().clone(),
            pose=frame.pose.cpu().numpy().astype(np.float32),
            betas=frame.betas.cpu().numpy().astype(np.float32),
            transl=frame.transl.cpu().numpy().astype(np.float32),
            camera=full.to("cpu").to_dict(), prior_hash=prior.content_hash, left=view.left, photo=view.name,
            extra={"work_camera": view.camera.to("cpu").to_dict(), "pca": bool(state.uses_pca)},
        )


def _emit_state(emit: Emit, step: int, state: PersonalState, model, view: PersonalizeView, pbr: bool,
                preview_res: int) -> None:
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
        cam = view.camera.to(state.light.device)
        factor = min(1.0, preview_res / max(cam.height, cam.width))
        small = cam.scaled(factor) if factor < 1.0 else cam
        emit(Preview(step, render_outputs(model, small, state.frame(0), state.light, pbr=pbr)["rgb"]))


def write_avatar_folder(out_dir: str | Path, avatar: Avatar, report: dict[str, Any], photo: np.ndarray,
                        render: np.ndarray | None, write_extra: Callable[[Path], None] | None = None) -> None:
    """Write the avatar folder ``out_dir`` in one atomic swap: avatar files, ``report.json``,
    ``preview.png`` (photo crop | render; a left hand's flipped back to the photo's orientation, as
    ``palm render --avatar`` shows it) and what ``write_extra(folder)`` adds. On any error the
    temporary folder is removed and an existing ``out_dir`` is left as it was; an OS error (disk
    full, read-only, ...) names ``out_dir``, never a temporary."""
    from palm.io import atomic_dir

    try:
        with atomic_dir(out_dir) as tmp:
            save_avatar(tmp, avatar, report=report)
            if render is not None:
                flip = (lambda x: x[:, ::-1]) if avatar.left else (lambda x: x)
                write_side_by_side(tmp / "preview.png", flip(photo), flip(render))
            if write_extra is not None:
                write_extra(tmp)
    except OSError as exc:
        raise type(exc)(exc.errno, exc.strerror or str(exc), str(out_dir)) from None


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
