"""Prior training: stage 0 (geometry pretraining on the rig's SDF) then stage 1 (image training).

The run's step counter covers both stages: steps ``[0, pretrain_steps)`` pretrain the geometry,
steps ``[pretrain_steps, pretrain_steps + max_steps)`` train on images with the schedule of the
spec (section 8), counted from the start of stage 1 (``t``). ``--max-steps N`` stops the run after
its N-th step with a checkpoint; ``--resume`` continues the same run.

Data parallelism: under ``torchrun`` every rank renders its share of the step's images
(``images[rank::world]``) and gradients are averaged across ranks with one all-reduce (gloo on
CPUs, NCCL on GPUs) before the shared clip-and-step, which is what DDP computes. Randomness is
drawn from generators seeded by ``(seed, step, image)``, so a run is reproducible whatever the
number of ranks and however often it is resumed.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from palm import config as C
from palm import losses as L
from palm.errors import JobCancelled, PalmError
from palm.jobs import ETA, Emit, Log, Preview, Progress, check_cancel, null_emit
from palm.losses import LossSchedule, total_loss
from palm.train.step import (
    StepView,
    clip_gradients,
    default_lpips,
    draw_pixels,
    loss_terms,
    make_adam,
    render_pixels,
    warmup_factor,
)

#: NaN/Inf recovery: how many times a step is retried with a smaller learning rate.
MAX_NAN_RETRIES = 3
#: The file that marks a folder as a training run (``palm train --out``; see :func:`palm.io.check_output_dir`).
RUN_MARKER = "run.json"
RUN_FORMAT = "palm-run-v1"


@dataclass
class TrainOptions:
    """What a run is: data, output, preset and the bounds of this invocation."""

    data: str
    out: str
    preset: str | None = None
    """A name of ``palm.config.PRESETS``; None: ``cpu`` for a new run, the run's own on resume."""
    max_steps: int | None = None
    """Stop after this many steps of the run (both stages counted); None = the full schedule."""
    resume: bool = False
    pretrain_steps: int | None = None
    """Override the preset's stage-0 length."""
    seed: int | None = None
    """Seed of the run's randomness; None: 0 for a new run, the run's own seed on resume."""
    device: str = "cpu"
    tensorboard: bool = True
    image_cache: int = 256
    """Decoded images kept in memory."""
    subjects: tuple[str, ...] | None = None
    """Train on these subject ids only (None = all); the others stay held out."""
    views: tuple[str, ...] | None = None
    """Use these camera ids only (None = all)."""
    frames: tuple[int, ...] | None = None
    """Use these frame indices only (None = all), e.g. to hold out poses for validation."""
    overrides: tuple[str, ...] = ()
    """``KEY=VALUE`` changes to the preset (``palm train --set``), e.g. ``images_per_step=2``."""
    allow_changes: bool = False
    """Let ``resume`` continue with another seed or configuration than the run's (``--allow-changes``)."""


def step_generator(seed: int, step: int, index: int = 0, device: str | torch.device = "cpu") -> torch.Generator:
    """A generator seeded by (seed, step, index): the same draws on any rank, after any resume."""
    g = torch.Generator(device=device)
    g.manual_seed((seed * 1_000_003 + step * 10_007 + index * 101 + 17) % (2**63 - 1))
    return g


def param_groups(model, cfg: C.TrainConfig) -> list[dict[str, Any]]:
    """Per-group learning rates of the release (spec section 8)."""
    groups = [
        ("geometry", list(model.geometry.parameters()), cfg.lr_geometry, 0.0),
        ("pose_encoder", list(model.pose_encoder.parameters()), cfg.lr_pose_encoder, 0.0),
        ("shape_codes", list(model.codes.shape.parameters()), cfg.lr_codes, 0.0),
        ("appearance_codes", list(model.codes.appearance.parameters()), cfg.lr_codes, 0.0),
        ("radiance_grid", list(model.radiance.encoding.parameters()), cfg.lr, cfg.weight_decay_radiance_grid),
        ("radiance", [p for n, p in model.radiance.named_parameters() if not n.startswith("encoding.")], cfg.lr, 0.0),
        ("material", list(model.material.parameters()), cfg.lr, 0.0),
        ("density", [model.beta_param], cfg.lr if cfg.lr_density is None else cfg.lr_density, 0.0),
        ("emitter", [model.light], cfg.lr, 0.0),
    ]
    return [{"name": n, "params": p, "lr": lr, "base_lr": lr, "weight_decay": wd} for n, p, lr, wd in groups if p]


def _checked(cfg: C.TrainConfig, opts: TrainOptions) -> C.TrainConfig:
    """``cfg`` with the run options' ``--pretrain-steps`` and ``--set`` applied, validated."""
    if opts.pretrain_steps is not None:
        cfg = dataclasses.replace(cfg, pretrain_steps=opts.pretrain_steps)
    try:
        C.check_overrides(cfg, list(opts.overrides))
        cfg = C.apply_overrides(cfg, list(opts.overrides))
        C.check_train_config(cfg)
    except ValueError as exc:
        raise PalmError("--set", str(exc)) from None
    return cfg


#: Groups frozen during the first ``geometry_freeze_steps`` of stage 1.
GEOMETRY_GROUPS = ("geometry", "pose_encoder", "shape_codes")


class Trainer:
    """One training run (one rank)."""

    def __init__(self, opts: TrainOptions, emit: Emit = null_emit, cancel=None):
        from palm.data.check import verify_dataset
        from palm.data.palm_dataset import PalmDataset
        from palm.hand import load_hand
        from palm.model import PalmNet

        if opts.preset is not None and opts.preset not in C.PRESETS:
            raise PalmError("--preset", f"unknown preset '{opts.preset}' (use {', '.join(C.PRESETS)})")
        self.opts, self.emit, self.cancel = opts, emit, cancel
        self.rank = int(os.environ.get("RANK", "0"))
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.device = torch.device(opts.device)
        self.run = Path(opts.out)
        self._resume_from = None
        if opts.resume:
            cfg, self.seed, self.preset = self._resumed_config()
        else:
            self.preset = opts.preset or "cpu"
            cfg = _checked(C.PRESETS[self.preset], opts)
            self.seed = 0 if opts.seed is None else opts.seed
        self.cfg = cfg
        # 'palm data check --strict' on the chosen subjects: a bad file fails now, not after hours of stage 0.
        # Rank 0 decodes every file once; the other ranks wait for it (torchrun ends them if it fails).
        if self.rank == 0:
            verify_dataset(opts.data, subjects=list(opts.subjects) if opts.subjects else None)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.barrier()
        self.dataset = PalmDataset(opts.data, subjects=list(opts.subjects) if opts.subjects else None,
                                   views=list(opts.views) if opts.views else None)
        self.items = [i for i, (_, frame, _) in enumerate(self.dataset.index())
                      if opts.frames is None or frame in set(opts.frames)]
        if not self.items:
            raise PalmError(opts.data, "dataset has no images (after the subject/view/frame selection)")
        self.subject_index = {sid: i for i, sid in enumerate(self.dataset.subjects)}
        self.hand = subject_hands(load_hand("open"), opts.data).to(self.device)
        torch.manual_seed(self.seed)  # initial weights: the same on every rank and every run
        self.model = PalmNet(cfg.model, self.hand, len(self.dataset.subjects)).to(self.device)
        self.optimizer = make_adam(param_groups(self.model, cfg), cfg.adam)
        self.pre_optimizer = make_adam(
            [{"params": [p for g in param_groups(self.model, cfg) if g["name"] in GEOMETRY_GROUPS
                         for p in g["params"]], "lr": cfg.lr}], cfg.adam)
        self.step = 0
        self.total_steps = cfg.pretrain_steps + cfg.max_steps
        self.lr_scale = 1.0
        self._images: dict[int, Any] = {}
        self._mesh_sdf: dict[str, Any] = {}
        self._writer = None
        self._lpips = None
        self.schedule = LossSchedule(
            cfg.weights, mode="prior", total_steps=cfg.max_steps, pbr_start=cfg.pbr_start_step,
            normal_start=cfg.normal_start_step, lpips_start=cfg.lpips_start_step,
        )
        if opts.resume:
            self._resume()

    def _resumed_config(self) -> tuple[C.TrainConfig, int, str]:
        """The run's own configuration, seed and preset, from its latest checkpoint.

        ``--seed``, ``--preset``, ``--pretrain-steps`` and ``--set`` that differ from the run's are
        refused unless ``allow_changes``; a change of the model's parameters is refused always
        (only ``model.pbr.*``, ``model.sampler.*`` and ``model.density.*``, beta's initial value and
        floor, may change).
        """
        from palm.io import read_json
        from palm.train.checkpoint import latest_checkpoint

        opts = self.opts
        self._resume_from = latest_checkpoint(self.run)
        if self._resume_from is None:
            raise PalmError(self.run, "nothing to resume: no checkpoint in checkpoints/")
        sidecar = self._resume_from.with_suffix(".json")
        saved = read_json(sidecar)
        try:
            cfg = C.from_dict(C.TrainConfig, saved["config"])
        except (KeyError, TypeError) as exc:
            raise PalmError(sidecar, f"config from another version: {exc}") from None
        changed = _checked(cfg, opts)
        weights_only = lambda m: dataclasses.replace(m, pbr=C.PBRConfig(), sampler=C.SamplerConfig(),
                                                     density=C.DensityConfig())
        if weights_only(changed.model) != weights_only(cfg.model):
            raise PalmError("--set", "a resumed run cannot change the model's parameters (only model.pbr.*, "
                                     "model.sampler.* and model.density.* may change)")
        run_seed, run_preset = saved.get("seed", 0), saved.get("preset") or "cpu"
        seed = run_seed if opts.seed is None else opts.seed
        differences = [f"{name}: {fields}" for name, fields in (
            ("--seed", f"{seed} (the run's is {run_seed})" if seed != run_seed else ""),
            ("--preset", f"{opts.preset} (the run's is {run_preset})"
             if opts.preset not in (None, run_preset) else ""),
            ("--set/--pretrain-steps", ", ".join(C.changed_fields(cfg, changed))),
        ) if fields]
        if differences and not opts.allow_changes:
            raise PalmError(self.run, f"resuming with other settings than the run's ({'; '.join(differences)}): "
                                      "pass --allow-changes to continue it with them")
        return changed, int(seed), run_preset

    # -----------------------------------------------------------------------------------------
    # Checkpoints
    # -----------------------------------------------------------------------------------------

    def sidecar(self) -> dict[str, Any]:
        return {
            "config": C.to_dict(self.cfg),
            "preset": self.preset,
            "seed": self.seed,
            "lr_scale": self.lr_scale,
            "stage": 0 if self.step < self.cfg.pretrain_steps else 1,
            "dataset": {"path": str(Path(self.opts.data).resolve()), "subjects": self.dataset.subjects,
                        "images": len(self.items), "views": self.opts.views, "frames": self.opts.frames},
            "world_size": self.world,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }

    def save(self) -> Path | None:
        from palm.train.checkpoint import save_checkpoint

        if self.rank != 0:
            return None
        opt = self.pre_optimizer if self.step <= self.cfg.pretrain_steps else self.optimizer
        sidecar = self.sidecar()
        sidecar["optimizer_kind"] = "pretrain" if opt is self.pre_optimizer else "main"
        path = save_checkpoint(self.run, self.step, self.model, opt, sidecar, keep_last=self.cfg.keep_last)
        self.emit(Log(f"checkpoint {path}"))
        return path

    def _resume(self) -> None:
        from palm.train.checkpoint import load_checkpoint, restore_optimizer

        path = self._resume_from
        model, optim, meta = load_checkpoint(path)
        if meta.get("dataset", {}).get("subjects") not in (None, self.dataset.subjects):
            raise PalmError(path, "checkpoint was trained on other subjects than --data holds")
        try:
            self.model.load_state_dict(model)
        except RuntimeError as exc:
            raise PalmError(path, f"weights do not match the model: {str(exc).splitlines()[0]}") from None
        opt = self.pre_optimizer if meta.get("optimizer_kind") == "pretrain" else self.optimizer
        restore_optimizer(opt, optim, meta)
        self.step = int(meta["step"])
        self.lr_scale = float(meta.get("lr_scale", 1.0))
        self.emit(Log(f"resumed from {path} at step {self.step}"))

    # -----------------------------------------------------------------------------------------
    # Stage 0
    # -----------------------------------------------------------------------------------------

    def _subject_betas(self, sid: str) -> Tensor:
        betas = self.dataset.poses(sid).betas
        b = torch.as_tensor(np.asarray(betas, dtype=np.float32).reshape(-1)[: self.hand.n_betas], device=self.device)
        return torch.nn.functional.pad(b, (0, self.hand.n_betas - b.numel()))

    def _mesh_sdf_for(self, sid: str):
        from palm.train.geometry import MeshSDF

        if sid not in self._mesh_sdf:
            verts, _ = self.hand.rest(self._subject_betas(sid)[None])
            v, f = self.hand.sealed_mesh(verts[0])
            self._mesh_sdf[sid] = MeshSDF(v, f, n_samples=100_000, seed=self.subject_index[sid])
        return self._mesh_sdf[sid]

    def sdf_term(self, sid: str, pose: Tensor, n_points: int, g: torch.Generator,
                 eikonal: bool = False) -> dict[str, Tensor]:
        """Stage 0's SDF loss for subject ``sid`` (its rest hand's mesh, ``n_points`` drawn with ``g``),
        conditioned on the pose code of ``pose (16, 3)``; with ``eikonal`` also the eikonal term."""
        from palm.train.geometry import sdf_training_points

        cfg = self.cfg
        centre = torch.tensor(cfg.model.canonical.centre)
        pts, sdf_gt = sdf_training_points(self._mesh_sdf_for(sid), n_points, cfg.pretrain_noise,
                                          cfg.pretrain_box, centre, g)
        pts, sdf_gt = pts.to(self.device), sdf_gt.to(self.device)
        z_p = self.model.pose_encoder(pose[None])[0]
        z_s = self.model.codes.shape(torch.tensor([self.subject_index[sid]], device=self.device))[0]
        cond = torch.cat([z_p, z_s]).expand(pts.shape[0], -1)
        sdf, _ = self.model.geometry(pts, cond)
        terms = {"sdf": L.sdf_pretrain(sdf, sdf_gt, cfg.pretrain_sdf_clamp, cfg.pretrain_weight)}
        if eikonal:
            # the eikonal term (weight 1e-5) needs a double backward: estimate it on an eighth of the points
            n_eik = max(1, pts.shape[0] // 8)
            _, _, grad = self.model.geometry.gradient(pts[:n_eik], cond[:n_eik], create_graph=True)
            terms["eikonal"] = L.eikonal(grad)
        return terms

    def pretrain_step(self) -> dict[str, float]:
        cfg, s = self.cfg, self.step
        g = step_generator(self.seed, s)
        subjects = self.dataset.subjects[: cfg.pretrain_subjects]  # the release pretrains on 7 subjects
        sid = subjects[int(torch.randint(len(subjects), (1,), generator=g))]
        table = self.dataset.poses(sid)
        pose = torch.as_tensor(table.pose[int(torch.randint(table.n_frames, (1,), generator=g))],
                               dtype=torch.float32, device=self.device)
        self.model.geometry.set_step(s)
        terms = self.sdf_term(sid, pose, cfg.pretrain_points, g, eikonal=True)
        loss, log = total_loss(terms, {"sdf": 1.0, "eikonal": cfg.weights.eikonal})
        self.pre_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self._allreduce(self.pre_optimizer)
        for group in self.pre_optimizer.param_groups:
            group["lr"] = cfg.lr * self.lr_scale
        self.pre_optimizer.step()
        return log

    # -----------------------------------------------------------------------------------------
    # Stage 1
    # -----------------------------------------------------------------------------------------

    def _sample(self, idx: int):
        """``(FrameSample, StepView)`` of dataset item ``idx`` (kept in a bounded cache)."""
        if idx not in self._images:
            if len(self._images) >= self.opts.image_cache:
                self._images.pop(next(iter(self._images)))
            sample = self.dataset[idx]
            view = StepView.of(sample.image, sample.mask, sample.camera.to_camera(), self.device, normal=sample.normal)
            self._images[idx] = (sample, view)
        return self._images[idx]

    def image_terms(self, idx: int, t: int, weights: dict[str, float], gen: torch.Generator,
                    cpu_gen: torch.Generator, bg: Tensor) -> dict[str, Tensor]:
        """Loss terms of one image (dataset item ``idx``) at stage-1 step ``t`` (:mod:`palm.train.step`)."""
        from palm.model import Frame, RenderOptions

        cfg, model, dev = self.cfg, self.model, self.device
        sample, view = self._sample(idx)
        pixels = draw_pixels(view, cfg.pixels_per_image, cfg.patch_size, cfg.patch_choices, cpu_gen)
        z_s, z_a = model.codes(torch.tensor([self.subject_index[sample.subject]], device=dev))
        hp = sample.hand
        frame = Frame(shape_code=z_s[0], appearance_code=z_a[0], pose=torch.as_tensor(hp.pose, device=dev).float(),
                      betas=torch.as_tensor(np.asarray(hp.betas, np.float32)[: self.hand.n_betas], device=dev),
                      transl=torch.as_tensor(hp.transl, device=dev).float())
        light = (torch.as_tensor(sample.env_lobes, device=dev).float()
                 if sample.env_lobes is not None else model.light)
        geometry_trains = t >= cfg.geometry_freeze_steps
        prep = model.prepare(frame, generator=cpu_gen)
        options = RenderOptions(
            training=True, importance=t > cfg.importance_start_step, pbr=weights["pbr"] > 0,
            curvature=weights["lap"] > 0 and geometry_trains, geometry_grad=geometry_trains,
            geometry_outputs_grad=geometry_trains, generator=gen)
        rays = render_pixels(model, prep, view, pixels, light, bg, options)
        if self._lpips is None and weights["lpips"] > 0:
            self._lpips = default_lpips(dev)
        return loss_terms(rays, weights, (z_s, z_a), cfg.patch_size, self._lpips)

    def image_step(self) -> dict[str, float]:
        cfg, s = self.cfg, self.step
        t = s - cfg.pretrain_steps
        self.model.set_step(t, geometry_step=None)
        g = step_generator(self.seed, s)
        bg = torch.rand(3, generator=g).to(self.device)
        n = cfg.images_per_step
        ids = [self.items[k] for k in torch.randint(len(self.items), (n,), generator=g).tolist()]
        frozen = t < cfg.geometry_freeze_steps
        weights = dict(self.schedule.weights(t))
        if frozen:
            weights["eikonal"] = 0.0  # the geometry does not train: no eikonal term
        self.optimizer.zero_grad(set_to_none=True)
        logs: dict[str, float] = {}
        for j in range(self.rank, n, self.world):
            gen = step_generator(self.seed, s, j + 1, self.device)
            cpu_gen = step_generator(self.seed, s, j + 1)
            loss, log = total_loss(self.image_terms(ids[j], t, weights, gen, cpu_gen, bg), weights)
            (loss / n).backward()
            for k, val in log.items():
                logs[k] = logs.get(k, 0.0) + val / n
        if not frozen and weights.get("sdf_anchor", 0.0) > 0 and self.rank < n:
            # stage 0's SDF loss on this rank's first image's subject, in that frame's pose code
            sample, _ = self._sample(ids[self.rank])
            pose = torch.as_tensor(sample.hand.pose, dtype=torch.float32, device=self.device)
            sdf = self.sdf_term(sample.subject, pose, cfg.anchor_points, step_generator(self.seed, s, n + 1))["sdf"]
            share = len(range(self.rank, n, self.world)) / n  # as the images: the ranks' shares sum to 1
            (weights["sdf_anchor"] * sdf * share).backward()
            logs["sdf_anchor"] = float(sdf.detach()) * share
        for group in self.optimizer.param_groups:
            if frozen and group["name"] in GEOMETRY_GROUPS:
                for p in group["params"]:
                    p.grad = None
        self._allreduce(self.optimizer, skip=GEOMETRY_GROUPS if frozen else ())
        warm = warmup_factor(t, cfg.warmup_steps, cfg.warmup_start_factor)
        for group in self.optimizer.param_groups:
            group["lr"] = group["base_lr"] * warm * self.lr_scale
        clip_gradients([p for grp in self.optimizer.param_groups for p in grp["params"]], cfg.grad_clip)
        self.optimizer.step()
        return logs

    def _allreduce(self, optimizer: torch.optim.Optimizer, skip: tuple[str, ...] = ()) -> None:
        """Average gradients over ranks (sum of per-rank shares of the global mean)."""
        if self.world == 1:
            return
        import torch.distributed as dist

        params = [p for grp in optimizer.param_groups if grp.get("name") not in skip for p in grp["params"]]
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        flat = torch.cat([p.grad.reshape(-1) for p in params])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        if optimizer is self.pre_optimizer:
            flat /= self.world
        offset = 0
        for p in params:
            k = p.numel()
            p.grad.copy_(flat[offset:offset + k].view_as(p))
            offset += k

    # -----------------------------------------------------------------------------------------
    # The loop
    # -----------------------------------------------------------------------------------------

    def _snapshot(self) -> dict[str, Any]:
        return {
            "model": copy.deepcopy(self.model.state_dict()),
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
            "pre_optimizer": copy.deepcopy(self.pre_optimizer.state_dict()),
        }

    def _restore(self, snap: dict[str, Any]) -> None:
        self.model.load_state_dict(snap["model"])
        self.optimizer.load_state_dict(snap["optimizer"])
        self.pre_optimizer.load_state_dict(snap["pre_optimizer"])

    def log_scalars(self, logs: dict[str, float]) -> None:
        if self.rank != 0 or not self.opts.tensorboard:
            return
        if self._writer is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard not installed
                self.opts.tensorboard = False
                return
            self._writer = SummaryWriter(str(self.run / "tensorboard"))
        for k, v in logs.items():
            self._writer.add_scalar(f"loss/{k}", v, self.step)

    def preview(self) -> np.ndarray | None:
        """A small RF render of the first training image (for TensorBoard and the studio)."""
        from palm.model import Frame

        sample, _ = self._sample(self.items[0])
        cam = sample.camera.to_camera().scaled(min(1.0, 64 / max(sample.height, sample.width))).to(self.device)
        subj = torch.tensor([self.subject_index[sample.subject]], device=self.device)
        z_s, z_a = self.model.codes(subj)
        hp = sample.hand
        frame = Frame(z_s[0].detach(), z_a[0].detach(), torch.as_tensor(hp.pose, device=self.device).float(),
                      torch.as_tensor(np.asarray(hp.betas, np.float32)[: self.hand.n_betas], device=self.device),
                      torch.as_tensor(hp.transl, device=self.device).float())
        out = self.model.render_image(cam, frame, pbr=False)
        return out["rgb_rf"].cpu().numpy()

    def fit(self, max_steps: int | None = None) -> Path | None:
        """Train until ``max_steps`` (run steps) or the end of the schedule; checkpoint at the end."""
        end = self.total_steps if max_steps is None else min(max_steps, self.total_steps)
        if self.rank == 0:
            from palm.train.checkpoint import clean_temporaries

            mark_run(self.run, self.preset)
            clean_temporaries(self.run)  # what a killed checkpoint write left
        if self.step >= end:
            self.emit(Log(f"nothing to do: the run is at step {self.step}"))
            return self.save()
        eta = ETA(end, self.step)
        good = self._snapshot()
        retries = 0
        interrupted = False
        previous = signal.getsignal(signal.SIGINT)

        def on_sigint(signum, frame):  # finish the step, checkpoint, stop
            nonlocal interrupted
            interrupted = True

        if self.rank == 0 and _is_main_thread():
            signal.signal(signal.SIGINT, on_sigint)
        try:
            while self.step < end:
                try:
                    check_cancel(self.cancel)
                except JobCancelled:
                    self.save()
                    raise
                if interrupted:
                    self.emit(Log(f"interrupted at step {self.step}: saving a checkpoint"))
                    break
                try:
                    logs = self.pretrain_step() if self.step < self.cfg.pretrain_steps else self.image_step()
                    if not all(math.isfinite(v) for v in logs.values()):
                        raise FloatingPointError("non-finite loss")
                except FloatingPointError as exc:
                    retries += 1
                    self._restore(good)  # back to the last good state, also when giving up
                    if retries > MAX_NAN_RETRIES:
                        raise PalmError(self.run, f"training diverged at step {self.step} ({exc}) after "
                                                  f"{MAX_NAN_RETRIES} retries with smaller learning rates") from None
                    self.lr_scale *= 0.5
                    self.emit(Log(f"step {self.step}: {exc}; rolled back, learning rate x{self.lr_scale:g}",
                                  level="warning"))
                    continue
                retries = 0
                self.step += 1
                stage = "geometry" if self.step <= self.cfg.pretrain_steps else "images"
                self.emit(Progress(self.step, end, stage, logs, eta(self.step)))
                if self.step % 50 == 0:
                    self.log_scalars(logs)
                    good = self._snapshot()
                if self.step % self.cfg.checkpoint_every == 0 and self.step < end:
                    self.save()
                    if self.step > self.cfg.pretrain_steps:
                        img = self.preview()
                        if img is not None:
                            self.emit(Preview(self.step, img))
                            if self._writer is not None:
                                self._writer.add_image("preview", img, self.step, dataformats="HWC")
        finally:
            if self.rank == 0 and _is_main_thread():
                signal.signal(signal.SIGINT, previous)
        path = self.save()
        if self._writer is not None:
            self._writer.flush()
        if interrupted:
            raise KeyboardInterrupt
        return path


def mark_run(run: str | os.PathLike, preset: str) -> None:
    """Create the run folder (and parents) and its marker file, unless they exist."""
    from palm.io import has_marker, write_json

    run = Path(run)
    run.mkdir(parents=True, exist_ok=True)
    if not has_marker(run, RUN_MARKER, RUN_FORMAT):
        write_json(run / RUN_MARKER, {"format": RUN_FORMAT, "preset": preset,
                                      "created": time.strftime("%Y-%m-%dT%H:%M:%S")})


def _is_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def init_distributed(device: str) -> None:
    """Join the process group when launched by torchrun (gloo on CPU, NCCL on CUDA)."""
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        backend = "nccl" if str(device).startswith("cuda") else "gloo"
        dist.init_process_group(backend=backend)


def finish_distributed(ok: bool = True) -> None:
    """Leave the process group (torchrun): a rank that exits with gloo's threads still running can
    abort in teardown ("terminate called without an active exception", seen once in 2026-11-29's
    test runs when one rank left while the other was still saving). After a run that ended well
    (``ok``) the ranks meet at a barrier first, so none tears down while another still works; after
    an error they do not wait for each other (torchrun stops the others when a rank fails)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        if ok:
            try:
                dist.barrier()
            except RuntimeError:  # a peer already gone: leave anyway
                pass
        dist.destroy_process_group()


def subject_hands(rig, data: str | os.PathLike):
    """The rig the trainer skins and fits with: when subjects of ``data`` carry their own flat hand
    (``<sid>/shape.npz``, synthetic generator 2.0: proportions the rig's betas cannot express), a
    :class:`~palm.data.synth.shape.ShapedHand` that gives each of them its own hand (recognised by
    its registered betas; stage-0 SDF targets and skinning then use the rendered hand), else ``rig``."""
    from palm.data.synth.shape import ShapedHand

    hand = ShapedHand.from_dataset(rig, data)
    return hand if hand.n_subjects else rig


def export_prior(run: str | os.PathLike, out: str | os.PathLike, n_components: int = 5) -> dict[str, Any]:
    """Make a prior folder (weights, PCA, the albedo model where the data has albedo maps) from the
    latest checkpoint of a run."""
    from palm.hand import load_hand
    from palm.model import PalmNet
    from palm.prior import save_prior
    from palm.train.checkpoint import latest_checkpoint, load_checkpoint

    path = latest_checkpoint(run)
    if path is None:
        raise PalmError(run, "no checkpoint in this run")
    tensors, _, meta = load_checkpoint(path)
    cfg = C.from_dict(C.TrainConfig, meta["config"])
    n_subjects = tensors["codes.shape.weight"].shape[0]
    model = PalmNet(cfg.model, load_hand("open"), n_subjects)
    model.load_state_dict(tensors)
    model.step = int(meta["step"])
    pca_file = Path(run) / "pca.safetensors"
    if pca_file.is_file():
        from palm.fields.latent import load_pca

        model.pca = load_pca(pca_file)
    albedo_model = None
    dataset = meta.get("dataset") or {}
    if isinstance(dataset, dict) and dataset.get("path") and dataset.get("subjects"):
        from palm.albedo_model import build_from_dataset

        # the training subjects' albedo maps where the data has them (synthetic sets do)
        albedo_model = build_from_dataset(dataset["path"], list(dataset["subjects"]), hand=model.hand.name)
    digest = save_prior(out, model, {"training": {"run": str(run), "checkpoint": path.name,
                                                   "preset": meta.get("preset"), "dataset": meta.get("dataset")}},
                        albedo_model=albedo_model)
    return {"prior": str(out), "content_hash": digest, "step": model.step,
            "albedo_model": albedo_model is not None}
