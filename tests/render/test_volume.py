"""Volume rendering: Laplace density, packed weights, opacity, empty rays, gradients."""

from __future__ import annotations

import math

import torch

from palm.render.volume import (
    alphas_from_density,
    composite,
    composite_background,
    effective_beta,
    laplace_density,
    packed_to_padded,
    render_weights,
    segment_sum,
    volume_render,
)


def _tiny_scene(dtype=torch.float64):
    # 5 rays; rays 1 and 4 have no samples
    ray_indices = torch.tensor([0, 0, 0, 2, 2, 3, 3, 3, 3])
    g = torch.Generator().manual_seed(0)
    alphas = torch.rand(9, generator=g, dtype=dtype) * 0.9
    values = torch.rand(9, 3, generator=g, dtype=dtype)
    return alphas, values, ray_indices, 5


def test_weights_sum_to_opacity_and_empty_rays():
    alphas, values, ray_indices, n_rays = _tiny_scene()
    w = render_weights(alphas, ray_indices, n_rays)
    opacity = segment_sum(w, ray_indices, n_rays)
    expected = torch.stack([torch.prod(1.0 - alphas[ray_indices == r]) for r in range(n_rays)])
    torch.testing.assert_close(opacity, 1.0 - expected)
    assert opacity[1] == 0 and opacity[4] == 0
    assert (opacity < 1).all() and (w >= 0).all()
    # explicit front-to-back weights of ray 0
    a = alphas[:3]
    torch.testing.assert_close(w[:3], torch.stack([a[0], (1 - a[0]) * a[1], (1 - a[0]) * (1 - a[1]) * a[2]]))
    rgb = composite(values, alphas, ray_indices, n_rays)
    assert torch.isfinite(rgb).all() and (rgb[[1, 4]] == 0).all()


def test_no_samples_at_all():
    empty = torch.zeros(0)
    idx = torch.zeros(0, dtype=torch.long)
    out = volume_render(empty, idx, 4, empty, rgb=torch.zeros(0, 3), normals=torch.zeros(0, 3))
    assert out.opacity.shape == (4,) and (out.opacity == 0).all()
    assert torch.isfinite(out.depth).all() and (out.depth == 0).all()
    assert out.rgb.shape == (4, 3) and out.normals.shape == (4, 3)


def test_laplace_density_values():
    beta = 0.01
    s = torch.tensor([-1.0, -0.01, 0.0, 0.01, 1.0], dtype=torch.float64)
    sigma = laplace_density(s, beta)
    torch.testing.assert_close(sigma[2], torch.tensor(0.5 / beta, dtype=torch.float64))
    torch.testing.assert_close(sigma[0], torch.tensor(1.0 / beta, dtype=torch.float64))
    torch.testing.assert_close(sigma[3], torch.tensor(0.5 * math.exp(-1.0) / beta, dtype=torch.float64))
    torch.testing.assert_close(sigma[1], torch.tensor((1 - 0.5 * math.exp(-1.0)) / beta, dtype=torch.float64))
    assert (sigma[:-1] > sigma[1:]).all()  # decreasing with the SDF
    assert torch.isfinite(laplace_density(torch.tensor([-1e4, 1e4]), 1e-4)).all()
    assert abs(effective_beta(torch.tensor(-0.003)) - 0.0031) < 1e-9


def test_density_integrates_to_opacity_one_through_a_plane():
    beta = 0.003
    # one ray along +z from z = 0 to 1 crossing the plane z = 0.5 (solid beyond it), one parallel ray
    # 5 cm outside the plane; fine steps of 0.1 mm
    edges = torch.linspace(0.0, 1.0, 10001, dtype=torch.float64)
    t0, t1 = edges[:-1], edges[1:]
    mid = 0.5 * (t0 + t1)
    sdf_hit = 0.5 - mid
    sdf_miss = torch.full_like(mid, 0.05)
    sdf = torch.cat([sdf_hit, sdf_miss])
    deltas = torch.cat([t1 - t0, t1 - t0])
    ray_indices = torch.cat([torch.zeros(len(mid), dtype=torch.long), torch.ones(len(mid), dtype=torch.long)])
    alphas = alphas_from_density(laplace_density(sdf, beta), deltas)
    out = volume_render(alphas, ray_indices, 2, torch.cat([mid, mid]))
    assert out.opacity[0] > 0.999
    assert abs(float(out.depth[0]) - 0.5) < beta  # the surface is where the weight is
    expected_miss = 1.0 - math.exp(-0.5 * math.exp(-0.05 / beta) / beta * 1.0)
    assert abs(float(out.opacity[1]) - expected_miss) < 1e-6 and out.opacity[1] < 1e-3


def test_composite_gradcheck():
    alphas, values, ray_indices, n_rays = _tiny_scene()
    alphas.requires_grad_(True)
    values.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, v: composite(v, a, ray_indices, n_rays), (alphas, values))


def test_sdf_to_image_gradcheck():
    # the whole chain: SDF values and beta -> density -> alpha -> colour, opacity, depth, normals
    g = torch.Generator().manual_seed(1)
    ray_indices = torch.tensor([0, 0, 0, 0, 2, 2])
    sdf = (torch.rand(6, generator=g, dtype=torch.float64) - 0.5) * 0.02
    beta = torch.tensor(0.004, dtype=torch.float64)
    rgb = torch.rand(6, 3, generator=g, dtype=torch.float64)
    normals = torch.nn.functional.normalize(torch.randn(6, 3, generator=g, dtype=torch.float64), dim=-1)
    t_mid = torch.tensor([0.1, 0.11, 0.12, 0.13, 0.2, 0.21], dtype=torch.float64)
    deltas = torch.full((6,), 0.01, dtype=torch.float64)

    def f(s, b, c, n):
        a = alphas_from_density(laplace_density(s, b), deltas)
        o = volume_render(a, ray_indices, 3, t_mid, rgb=c, normals=n)
        return o.rgb, o.opacity, o.depth, o.normals

    inputs = tuple(x.requires_grad_(True) for x in (sdf, beta, rgb, normals))
    assert torch.autograd.gradcheck(f, inputs)


def test_packed_to_padded_layout_and_background():
    ray_indices = torch.tensor([0, 0, 2])
    vals = torch.tensor([1.0, 2.0, 3.0])
    padded, mask = packed_to_padded(vals, ray_indices, 3, fill=-1.0)
    torch.testing.assert_close(padded, torch.tensor([[1.0, 2.0], [-1.0, -1.0], [3.0, -1.0]]))
    assert mask.tolist() == [[True, True], [False, False], [True, False]]
    rgb = torch.tensor([[0.2, 0.2, 0.2], [0.0, 0.0, 0.0]])
    out = composite_background(rgb, torch.tensor([0.5, 0.0]), torch.tensor([1.0, 0.0, 0.5]))
    torch.testing.assert_close(out, torch.tensor([[0.7, 0.2, 0.45], [1.0, 0.0, 0.5]]))
