"""Personalisation (spec section 9) on a tiny random prior and a subject that prior can represent."""

from __future__ import annotations

import dataclasses
import threading

import numpy as np
import pytest
import torch

from palm.avatar import load_avatar
from palm.config import PERSONALIZE_PRESETS
from palm.errors import JobCancelled, PalmError
from palm.eval import make_tiny_prior, prior_sample
from palm.jobs import Log, Preview, Progress, Snapshot
from palm.metrics import psnr_masked
from palm.model import Frame
from palm.prior import load_prior
from palm.render.sg import sg_init
from palm.train.personalize import loss_history, personalize
from palm.train.views import crop_view, render_view, view_from_input

RES = 32
TARGET_APPEARANCE = torch.tensor([2.5, -2.0, 0.0, 0.0, 0.0])


def _cfg(**kw):
    base = {"max_steps": 10, "shape_freeze_step": 5, "pbr_start_step": 1000, "images_per_step": 1,
            "pixels_per_image": 32, "patch_size": 8, "patch_choices": ((8, 1), (16, 2)), "lr": 0.15,
            "lr_light": 0.05, "warmup_steps": 1, "preview_every": 0, "seed": 0, "work_res": None, "detail": None}
    base.update(kw)
    return dataclasses.replace(PERSONALIZE_PRESETS["fast"], **base)


@pytest.fixture(scope="module")
def target(prior):
    """A subject with other appearance coefficients than the prior's mean, rendered by the prior (RF)."""
    return prior_sample(prior, appearance_coeffs=TARGET_APPEARANCE, res=RES, pbr=False)


def _rf_render(prior, avatar, sample) -> np.ndarray:
    """The avatar's radiance-field image in the sample's view, (H, W, 3) over white."""
    view = view_from_input(sample, prior.model.hand.n_betas)
    frame = Frame(avatar.shape_code, avatar.appearance_code, torch.as_tensor(avatar.pose),
                  torch.as_tensor(avatar.betas), torch.as_tensor(avatar.transl))
    return render_view(prior.model, view.camera, frame, avatar.light, pbr=False)


def test_personalisation_lowers_the_loss_and_raises_psnr(prior, target, tmp_path):
    mean_subject = prior_sample(prior, res=RES, pbr=False)
    psnr_before = psnr_masked(mean_subject.image, target.image, target.mask)
    events = []
    out = tmp_path / "avatar"
    avatar = personalize(target, prior, _cfg(), out, events.append, None, preset="test")

    losses = loss_history(events)
    assert len(losses) == 10
    assert all(np.isfinite(losses))
    # the photometric loss (L1 over the hand, the deterministic full image) goes down, PSNR up
    image_after = _rf_render(prior, avatar, target)
    m = target.mask
    assert np.abs(image_after - target.image)[m].mean() < 0.8 * np.abs(mean_subject.image - target.image)[m].mean()
    psnr_after = psnr_masked(image_after, target.image, m)
    assert psnr_after > psnr_before + 1.0
    # the appearance coefficients moved towards the target's
    c = avatar.appearance_coeffs
    assert float((c[:2] - TARGET_APPEARANCE[:2]).norm()) < float(TARGET_APPEARANCE[:2].norm())

    # the avatar folder: report + files that load back against the same prior
    report = avatar.extra["report"]
    for key in ("psnr_masked", "ssim_masked", "lpips_masked", "iou", "steps", "seconds", "preset"):
        assert key in report
    assert report["steps"] == 10 and report["preset"] == "test"
    assert np.isfinite(report["psnr_masked"])
    assert (out / "report.json").is_file() and (out / "preview.png").is_file()
    back = load_avatar(out, prior_hash=prior.content_hash)
    assert torch.allclose(back.appearance_code, avatar.appearance_code)
    assert back.camera["height"] == RES and back.camera["width"] == RES
    assert "work_camera" in back.extra
    # the prior's networks are left as they were
    assert all(p.requires_grad for p in prior.model.parameters())


def test_schedule_freezes_shape_and_starts_light_with_pbr(prior, target):
    events = []
    cfg = _cfg(max_steps=4, shape_freeze_step=2, pbr_start_step=2, preview_every=2, pixels_per_image=16,
               preview_res=16)
    personalize(target, prior, cfg, None, events.append, None, final_metrics=False)
    snaps = {e.step: e.data for e in events if isinstance(e, Snapshot)}
    assert set(snaps) == {2, 4}
    light0 = sg_init(prior.model.cfg.light.n_lobes, torch.Generator().manual_seed(0)).numpy()
    # light: untouched while PBR is off (steps 1-2), optimised once it is on (steps 3-4)
    assert np.allclose(snaps[2]["light"], light0)
    assert not np.allclose(snaps[4]["light"], light0)
    # shape coefficients: moved in steps 1-2, frozen afterwards
    assert np.abs(snaps[2]["shape_coeffs"]).max() > 0
    assert np.array_equal(snaps[2]["shape_coeffs"], snaps[4]["shape_coeffs"])
    assert not np.array_equal(snaps[2]["appearance_coeffs"], snaps[4]["appearance_coeffs"])
    previews = [e for e in events if isinstance(e, Preview)]
    assert previews and previews[0].image.shape[-1] == 3 and previews[0].image.dtype == np.float32
    progress = [e for e in events if isinstance(e, Progress)]
    assert [p.step for p in progress] == [1, 2, 3, 4] and progress[-1].eta_s is not None
    assert "pbr" in progress[-1].losses and "pbr" not in progress[0].losses


def test_cancel_raises_and_writes_nothing(prior, target, tmp_path):
    cancel = threading.Event()

    def emit(event):
        if isinstance(event, Progress) and event.step >= 1:
            cancel.set()

    out = tmp_path / "avatar"
    with pytest.raises(JobCancelled):
        personalize(target, prior, _cfg(max_steps=5, pixels_per_image=8), out, emit, cancel)
    assert not out.exists()


def test_prior_without_pca_optimises_codes_directly(tmp_path, target):
    path = tmp_path / "nopca"
    make_tiny_prior(path)
    (path / "pca.safetensors").unlink()
    p = load_prior(path)
    events = []
    avatar = personalize(target, p, _cfg(max_steps=2, pixels_per_image=8), None, events.append, None,
                         final_metrics=False)
    assert avatar.shape_coeffs.numel() == 0 and avatar.appearance_coeffs.numel() == 0
    assert avatar.appearance_code.shape == (p.model.cfg.latent.appearance_dim,)
    mean_code = p.model.codes.appearance.weight.mean(0)
    assert not torch.allclose(avatar.appearance_code, mean_code)
    assert any(isinstance(e, Log) and "PCA" in e.message for e in events)


def test_crop_view_keeps_the_projection(prior, target):
    view = view_from_input(target, prior.model.hand.n_betas)
    crop = crop_view(view, work_res=12)
    assert max(crop.image.shape[:2]) <= 12 and crop.mask.shape == crop.image.shape[:2]
    assert crop.mask.any()
    pts = torch.tensor([[0.0, 0.0, 0.0], [0.03, 0.01, 0.02]])
    from palm.render.rays import project

    full = project(view.camera, pts)
    small = project(crop.camera, pts)
    # small = (full - offset) * scale for one offset and scale
    scale = (small[1] - small[0]) / (full[1] - full[0])
    assert torch.allclose(scale[0], scale[1], rtol=1e-3)
    assert crop.full_camera is view.camera
    with pytest.raises(PalmError):
        crop_view(dataclasses.replace(view, mask=np.zeros_like(view.mask)))


def test_steps_override_scales_the_schedule():
    from palm.config import scaled_schedule

    paper = PERSONALIZE_PRESETS["paper"]
    cfg = scaled_schedule(paper, 520)
    assert cfg.max_steps == 520 and cfg.shape_freeze_step == 150 and cfg.pbr_start_step == 200
    assert cfg.warmup_steps == 100 and cfg.images_per_step == paper.images_per_step
    one = scaled_schedule(PERSONALIZE_PRESETS["fast"], 1)
    assert one.max_steps == 1 and one.shape_freeze_step >= 1 and one.preview_every == 1
