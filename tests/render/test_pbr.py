"""Monte-Carlo PBR estimator (spec 6.3): white furnace, background, visibility, gradients."""

from __future__ import annotations

import math

import pytest
import torch

from palm.render.pbr import pbr_uniform_light, stratified_sphere_dirs


def lambert_brdf_cos(normal, view, light, albedo, roughness, metallic):
    """Local stand-in with the brdf_cos signature: (1 - m) a max(n.l, 0) / pi."""
    cos = (normal * light).sum(-1, keepdim=True).clamp(min=0.0)
    return (1.0 - metallic) * albedo * cos / math.pi


def _ones_env(d):
    return torch.ones(d.shape[0], 3, dtype=d.dtype)


def _plane_scene(n_rays: int, weight: float, seed: int = 0, dtype=torch.float64):
    """One packed sample per ray on a plane with normal +z, seen from above."""
    g = torch.Generator().manual_seed(seed)
    ray_indices = torch.arange(n_rays)
    weights = torch.full((n_rays,), weight, dtype=dtype)
    positions = torch.cat([torch.rand(n_rays, 2, generator=g, dtype=dtype), torch.zeros(n_rays, 1, dtype=dtype)], 1)
    normals = torch.tensor([0.0, 0.0, 1.0], dtype=dtype).expand(n_rays, 3)
    albedo = torch.ones(n_rays, 3, dtype=dtype)
    roughness = torch.full((n_rays,), 0.5, dtype=dtype)
    metallic = torch.zeros(n_rays, dtype=dtype)
    ray_dirs = torch.nn.functional.normalize(
        torch.cat([torch.randn(n_rays, 2, generator=g, dtype=dtype) * 0.3, -torch.ones(n_rays, 1, dtype=dtype)], 1),
        dim=-1)
    return {"weights": weights, "ray_indices": ray_indices, "n_rays": n_rays, "positions": positions, "normals": normals,
            "albedo": albedo, "roughness": roughness, "metallic": metallic, "ray_dirs": ray_dirs}


def test_light_directions_are_stratified_and_uniform():
    d = stratified_sphere_dirs(3, (4, 8), jitter=True, generator=torch.Generator().manual_seed(0),
                               dtype=torch.float64)
    assert d.shape == (3, 32, 3)
    torch.testing.assert_close(d.norm(dim=-1), torch.ones(3, 32, dtype=torch.float64))
    # every z band holds exactly cols directions, whatever the per-ray permutation
    band = torch.floor((1.0 - d[..., 2]) / 2.0 * 4).clamp(max=3)
    for b in range(4):
        assert ((band == b).sum(dim=1) == 8).all()
    assert not torch.equal(d[0], d[1])  # rays get different orders / jitter
    many = stratified_sphere_dirs(200, (8, 16), jitter=True, generator=torch.Generator().manual_seed(1))
    assert many.reshape(-1, 3).mean(dim=0).abs().max() < 0.01


@pytest.mark.parametrize("jitter", [False, True])
def test_white_furnace_lambert_plane(jitter):
    scene = _plane_scene(64, 1.0)
    out = pbr_uniform_light(**scene, emitter=_ones_env, trace_secondary=None, background=torch.zeros(3),
                            light_grid=(16, 32), jitter=jitter, generator=torch.Generator().manual_seed(0),
                            brdf_fn=lambert_brdf_cos)
    assert out.n_foreground == 64 * 512
    assert 0 < out.n_secondary < out.n_foreground  # only the upper hemisphere is traced
    err = (out.rgb - 1.0).abs()
    assert float(err.mean()) < 0.01 and float(err.max()) < 0.05


def test_white_furnace_converges_for_tilted_normals():
    scene = _plane_scene(32, 1.0, seed=3)
    g = torch.Generator().manual_seed(5)
    scene["normals"] = torch.nn.functional.normalize(torch.randn(32, 3, generator=g, dtype=torch.float64), dim=-1)
    errs = []
    for grid in ((2, 4), (8, 16), (16, 32)):
        out = pbr_uniform_light(**scene, emitter=_ones_env, trace_secondary=None, background=0.0, light_grid=grid,
                                jitter=True, generator=torch.Generator().manual_seed(0), brdf_fn=lambert_brdf_cos)
        errs.append(float((out.rgb - 1.0).abs().mean()))
    assert errs[-1] < 0.02 and errs[-1] < errs[0]


def test_no_foreground_gives_background():
    n = 5
    empty = torch.zeros(0, dtype=torch.float64)
    bg = torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64)
    out = pbr_uniform_light(empty, torch.zeros(0, dtype=torch.long), n, torch.zeros(0, 3, dtype=torch.float64),
                            torch.zeros(0, 3, dtype=torch.float64), torch.zeros(0, 3, dtype=torch.float64), empty,
                            empty, torch.tensor([[0.0, 0.0, 1.0]] * n, dtype=torch.float64), _ones_env, None, bg,
                            light_grid=(4, 8), brdf_fn=lambert_brdf_cos)
    torch.testing.assert_close(out.rgb, bg.expand(n, 3))
    assert out.n_secondary == 0


def test_partial_opacity_mixes_with_background():
    scene = _plane_scene(16, 0.6)
    bg = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    out = pbr_uniform_light(**scene, emitter=_ones_env, trace_secondary=None, background=bg, light_grid=(16, 32),
                            brdf_fn=lambert_brdf_cos, generator=torch.Generator().manual_seed(0))
    expected = 0.6 * 1.0 + 0.4 * bg
    # about 60% of the resamples land on the surface and see a random subset of the light directions
    assert (out.rgb.mean(dim=0) - expected).abs().max() < 0.03
    assert (out.rgb - expected).abs().max() < 0.2
    opaque_bg = pbr_uniform_light(**{**scene, "albedo": torch.zeros(16, 3, dtype=torch.float64)}, emitter=_ones_env,
                                  trace_secondary=None, background=bg, light_grid=(16, 32), brdf_fn=lambert_brdf_cos)
    torch.testing.assert_close(opaque_bg.rgb, (0.4 * bg).expand(16, 3))  # black surface: background only


def test_visibility_and_indirect_light_from_secondary_rays():
    scene = _plane_scene(8, 1.0)
    calls = []

    def blocked(origins, dirs):
        calls.append(origins.shape[0])
        assert not torch.is_grad_enabled()
        return torch.zeros(origins.shape[0], dtype=origins.dtype), torch.full((origins.shape[0], 3), 0.5,
                                                                                dtype=origins.dtype)

    kw = {"emitter": _ones_env, "trace_secondary": blocked, "background": 0.0, "light_grid": (8, 16),
              "brdf_fn": lambert_brdf_cos, "generator": torch.Generator().manual_seed(0)}
    gi = pbr_uniform_light(**scene, global_illumination=True, **kw)
    assert calls and calls[0] == gi.n_secondary
    assert (gi.rgb - 0.5).abs().max() < 0.03  # only the indirect 0.5 arrives
    dark = pbr_uniform_light(**scene, global_illumination=False, **kw)
    assert dark.rgb.abs().max() == 0


def test_gradients_reach_materials_weights_and_light():
    scene = _plane_scene(8, 0.7)
    albedo = scene.pop("albedo").clone().requires_grad_(True)
    weights = scene.pop("weights").clone().requires_grad_(True)
    scale = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    out = pbr_uniform_light(**scene, albedo=albedo, weights=weights, emitter=lambda d: scale * _ones_env(d),
                            trace_secondary=None, background=torch.tensor([0.3, 0.3, 0.3], dtype=torch.float64),
                            light_grid=(8, 16), brdf_fn=lambert_brdf_cos, generator=torch.Generator().manual_seed(0))
    out.rgb.sum().backward()
    # for fixed resamples, rgb = w * scale * estimate + (1 - w) * bg: linear in w and in scale
    fg = (out.rgb.sum(dim=1) - 3 * 0.3 * (1 - 0.7)).detach()
    torch.testing.assert_close(scale.grad, fg.sum() / 2.0)
    torch.testing.assert_close(weights.grad, fg / 0.7 - 3 * 0.3)
    assert abs(float(fg.mean()) - 3 * 0.7 * 2.0) < 0.3  # and the estimate itself is about albedo * 2
    assert (albedo.grad > 0).all()


def test_real_brdf_furnace_is_bounded():
    brdf = pytest.importorskip("palm.render.brdf")
    scene = _plane_scene(16, 1.0)
    scene["albedo"] = scene["albedo"].float()
    scene = {k: (v.float() if torch.is_tensor(v) and v.is_floating_point() else v) for k, v in scene.items()}
    out = pbr_uniform_light(**scene, emitter=_ones_env, trace_secondary=None, background=0.0, light_grid=(16, 32),
                            brdf_fn=brdf.brdf_cos, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(out.rgb).all()
    assert float(out.rgb.mean()) > 0.8 and float(out.rgb.max()) < 1.1
