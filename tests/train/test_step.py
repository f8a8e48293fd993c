"""The shared training step (palm/train/step.py): one pixel convention, targets and loss terms.

Pixel ``(u, v)`` covers ``[u, u + 1) x [v, v + 1)`` in continuous image coordinates; its ray must
pass through the footprint's centre ``(u + 0.5, v + 0.5)`` under ``K`` and its target must be the
value stored at ``(u, v)``. A half-pixel shift anywhere between the sampler, the ray generator and
the target lookup fails these tests.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from palm.model import RayOutputs
from palm.render.rays import Camera, pixel_grid, project
from palm.train.step import (
    StepView,
    clip_gradients,
    concat_rays,
    draw_pixels,
    loss_terms,
    render_pixels,
    warmup_factor,
)

H, W = 12, 24
#: A sharp vertical edge at this continuous image x: black left of it, white right of it.
EDGE = 10.25


def _camera() -> Camera:
    """A camera with unequal focal lengths, an off-centre principal point and a rotation."""
    angle = 0.3
    R = torch.tensor([[math.cos(angle), 0.0, math.sin(angle)], [0.0, 1.0, 0.0],
                      [-math.sin(angle), 0.0, math.cos(angle)]], dtype=torch.float64)
    Rt = torch.eye(4, dtype=torch.float64)
    Rt[:3, :3] = R
    Rt[:3, 3] = torch.tensor([0.02, -0.01, 0.6], dtype=torch.float64)
    K = torch.tensor([[31.0, 0.0, 11.3], [0.0, 27.0, 5.7], [0.0, 0.0, 1.0]], dtype=torch.float64)
    return Camera(K, Rt, H, W)


def _coverage(x0: torch.Tensor) -> torch.Tensor:
    """Fraction of the unit-wide interval ``[x0, x0 + 1)`` right of the edge (a box-filtered pixel)."""
    return (x0 + 1 - EDGE).clamp(0, 1)


def _edge_image() -> np.ndarray:
    """What a camera records of the edge: each pixel is the edge's coverage of its footprint [u, u+1)."""
    u = torch.arange(W, dtype=torch.float64)
    row = _coverage(u)
    return row[None, :, None].expand(H, W, 3).numpy().astype(np.float32)


class EdgeScene:
    """Stands in for PalmNet: a ray's colour is the edge's coverage of a one-pixel footprint centred
    where the ray meets the image plane (an exact, box-filtered render of the same edge)."""

    def __init__(self, camera: Camera):
        self.camera = camera
        self.rays: list[tuple[torch.Tensor, torch.Tensor]] = []

    def render_rays(self, origins, dirs, prep, light, background, options=None) -> RayOutputs:
        self.rays.append((origins, dirs))
        x = project(self.camera, origins + dirs)[:, 0]
        c = _coverage(x - 0.5).to(torch.float32)
        n = c.shape[0]
        zeros = torch.zeros(n)
        return RayOutputs(rgb_rf=c[:, None].expand(n, 3), opacity=torch.ones(n), depth=zeros,
                          normal=torch.zeros(n, 3), albedo=torch.zeros(n, 3), roughness=zeros, metallic=zeros)


def _view(image: np.ndarray | None = None) -> StepView:
    cam = _camera()
    img = _edge_image() if image is None else image
    return StepView.of(img, np.ones((H, W), bool), cam, "cpu")


def test_ray_of_every_sampled_pixel_passes_through_its_footprint_centre():
    view = _view(np.random.default_rng(0).random((H, W, 3)).astype(np.float32))
    scene = EdgeScene(view.camera)
    pixels = draw_pixels(view, 40, 4, ((4, 1), (8, 2)), torch.Generator().manual_seed(3))
    assert pixels.dtype == torch.int64 and pixels.shape == (40 + 16, 2)
    rays = render_pixels(scene, None, view, pixels, None, torch.zeros(3), None)
    origins, dirs = scene.rays[0]
    hit = project(view.camera, origins + dirs)
    assert torch.allclose(hit, pixels.double() + 0.5, atol=1e-6), (hit - pixels - 0.5).abs().max()
    # the target of ray i is the pixel (u, v) itself
    u, v = pixels[:, 0], pixels[:, 1]
    assert torch.equal(rays.target, view.image[v, u])


def test_sharp_vertical_edge_lands_where_the_image_has_it():
    """Render every pixel of a box-filtered edge through the step; a half-pixel shift of the rays
    (either way) moves the edge by half a pixel and the RF loss is no longer zero."""
    view = _view()
    scene = EdgeScene(view.camera)
    rays = render_pixels(scene, None, view, pixel_grid(H, W), None, torch.zeros(3), None)
    per_column = rays.rgb_rf[:, 0].reshape(H, W)[0]
    assert per_column[9] == 0 and per_column[10] == pytest.approx(0.75) and per_column[11] == 1
    assert torch.allclose(rays.rgb_rf, rays.target, atol=1e-6)
    terms = loss_terms(rays, {"rf": 1.0, "segm": 0.1}, (torch.zeros(32), torch.zeros(32)))
    assert float(terms["rf"]) < 1e-6


def test_loss_terms_follow_the_weights_and_the_patch_comes_last():
    view = _view(np.random.default_rng(1).random((H, W, 3)).astype(np.float32))
    scene = EdgeScene(view.camera)
    g = torch.Generator().manual_seed(0)
    parts = [render_pixels(scene, None, view, draw_pixels(view, 8, 4, ((4, 1),), g, keep_patch=keep), None,
                           torch.zeros(3), None) for keep in (False, True)]
    rays = concat_rays(parts)
    assert rays.rgb_rf.shape[0] == 8 + 8 + 16 and rays.rgb_pbr is None and rays.gradients is None
    seen = []

    def lpips(a, b):
        seen.append(a.shape)
        return (a - b).abs().mean(dim=(1, 2, 3))

    weights = {"rf": 1.0, "segm": 0.1, "pbr": 0.2, "lpips": 0.1, "latent_shape": 0.0, "latent_appearance": 1e-3,
               "eikonal": 1e-5, "lap": 0.1, "normal": 0.5}
    terms = loss_terms(rays, weights, (torch.ones(32), torch.ones(32)), patch_size=4, lpips_fn=lpips)
    # no PBR colour, no SDF gradients, no curvature, no normals: those terms are absent
    assert set(terms) == {"rf", "segm", "lpips", "latent_appearance"}
    assert seen == [(1, 3, 32, 32)]  # a 4-px patch is upsampled to the 32 px AlexNet needs
    with pytest.raises(ValueError):
        loss_terms(parts[0], weights, (torch.ones(32), torch.ones(32)), patch_size=8, lpips_fn=lpips)


def test_warmup_and_clipping():
    assert warmup_factor(0, 10, 0.01) == pytest.approx(0.01)
    assert warmup_factor(5, 10, 0.01) == pytest.approx(0.505)
    assert warmup_factor(50, 10, 0.01) == 1.0
    p = torch.nn.Parameter(torch.zeros(3))
    p.grad = torch.tensor([3.0, 4.0, 0.0])
    clip_gradients([p], 0.5)
    assert float(p.grad.norm()) == pytest.approx(0.5)
    p.grad = torch.tensor([math.nan, 0.0, 0.0])
    with pytest.raises(FloatingPointError):
        clip_gradients([p], 0.5)


def test_personalisation_renders_through_pixel_centres(tmp_path, monkeypatch):
    """Personalisation's rays, recorded at the model: every one passes through a pixel centre."""
    from palm.config import PERSONALIZE_PRESETS
    from palm.eval import make_tiny_prior, prior_sample
    from palm.prior import load_prior
    from palm.train.personalize import personalize

    make_tiny_prior(tmp_path / "prior")
    prior = load_prior(tmp_path / "prior")
    sample = prior_sample(prior, res=32, pbr=False)
    seen = []
    real = prior.model.render_rays

    def recording(origins, dirs, prep, light, background, options=None):
        seen.append((origins.detach(), dirs.detach()))
        return real(origins, dirs, prep, light, background, options)

    monkeypatch.setattr(prior.model, "render_rays", recording)
    cfg = dataclasses.replace(PERSONALIZE_PRESETS["fast"], max_steps=1, pixels_per_image=16, patch_size=8,
                              patch_choices=((8, 1),), preview_every=0, work_res=None, detail=None)
    avatar = personalize(sample, prior, cfg, None, final_metrics=False)
    cam = Camera.from_dict(avatar.extra["work_camera"])
    origins, dirs = seen[0]
    xy = project(cam, origins + dirs) - 0.5
    assert torch.allclose(xy, xy.round(), atol=1e-3), "rays miss the pixel centres"
