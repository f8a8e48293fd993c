"""Geometry / radiance / material networks, MLP initialisation and spherical harmonics."""

from __future__ import annotations

import math

import torch

from palm.config import PRESETS
from palm.fields import GeometryNetwork, MaterialNetwork, RadianceNetwork, has_weight_norm, reflect
from palm.fields.mlp import ConditionedMLP, LipschitzLinear
from palm.fields.sh import expand_band_weights, sh_band_weights, sh_basis, sh_encode_unit

CFG = PRESETS["cpu"].model


def _ball_points(n: int, radius: float, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    centre = torch.tensor(CFG.canonical.centre)
    d = torch.randn(n, 3, generator=gen)
    d = d / d.norm(dim=-1, keepdim=True)
    r = torch.rand(n, 1, generator=gen) * radius
    return centre + d * r, r[:, 0]


def test_sphere_init_is_a_metric_sphere():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    net = GeometryNetwork(CFG)
    h = CFG.canonical.half_side
    x, r = _ball_points(3000, 0.9 * h, gen)
    cond = torch.randn(3000, 64, generator=gen)  # conditioning columns start at zero weight: no effect
    sdf, feature, grad = net.gradient(x, cond)
    expected = r - 0.5 * h  # |2 p_hat - 1| - 0.5 in normalised units, times h -> metres
    assert sdf.shape == (3000,) and feature.shape == (3000, 13) and grad.shape == (3000, 3)
    torch.testing.assert_close(feature[:, 0], sdf)
    assert (sdf - expected).abs().median() < 0.02 * 1.0  # 2 cm on a 6.9 cm sphere with 64 random units
    norm = grad.norm(dim=-1)
    assert 0.85 < float(norm.median()) < 1.15
    assert (sdf[r < 0.25 * h] < 0).all()
    assert (sdf[r > 0.75 * h] > 0).all()
    # conditioning does not change the initial SDF
    sdf0, _ = net(x, torch.zeros_like(cond))
    torch.testing.assert_close(sdf0, sdf.detach())


def test_geometry_gradient_matches_finite_differences_and_create_graph():
    torch.manual_seed(0)
    net = GeometryNetwork(CFG)
    x = torch.tensor([[0.03, 0.01, 0.02], [-0.05, 0.0, 0.05]])
    cond = torch.zeros(2, 64)
    _, _, grad = net.gradient(x, cond, create_graph=True)
    assert grad.requires_grad
    grad.norm(dim=-1).sum().backward()  # eikonal-style second-order backward reaches the weights
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.mlp.parameters())
    eps = 1e-4
    with torch.no_grad():
        for d in range(3):
            e = torch.zeros(1, 3)
            e[0, d] = eps
            fd = (net(x + e, cond)[0] - net(x - e, cond)[0]) / (2 * eps)
            assert torch.allclose(fd, grad[:, d].detach(), atol=2e-2)


def test_curvature_in_unit_range():
    torch.manual_seed(0)
    net = GeometryNetwork(CFG)
    x = torch.rand(64, 3) * 0.1 - 0.05
    cond = torch.zeros(64, 64)
    _, _, grad = net.gradient(x, cond)
    n = grad / grad.norm(dim=-1, keepdim=True)
    kappa = net.curvature(x, cond, n, generator=torch.Generator().manual_seed(0))
    assert kappa.shape == (64,)
    assert ((kappa >= 0) & (kappa <= 1)).all()
    assert kappa.max() < 0.05  # the initial SDF is smooth at the 1e-5 m scale


def test_weight_norm_and_first_layer_columns():
    torch.manual_seed(0)
    net = GeometryNetwork(CFG)
    assert all(has_weight_norm(layer) for layer in net.mlp.layers)
    w0 = net.mlp.layers[0].weight
    assert (w0[:, 3:] == 0).all() and (w0[:, :3] != 0).any()
    last = net.mlp.layers[-1]
    torch.testing.assert_close(last.bias, torch.full_like(last.bias, -0.5))
    mean = float(last.weight.detach().mean())
    assert abs(mean - math.sqrt(math.pi) / math.sqrt(CFG.geometry.hidden_dim)) < 1e-3
    plain = ConditionedMLP(4, 2, 3, 8, 1, use_weight_norm=False)
    assert not has_weight_norm(plain.layers[0])


def test_radiance_shapes_and_sh_progression():
    torch.manual_seed(0)
    net = RadianceNetwork(CFG)
    assert net.in_dim == CFG.hash_radiance.out_dim + 13 + 16 + 3 + 64
    assert PRESETS["paper"].model.hash_radiance.out_dim + 13 + 16 + 3 + 64 == 163
    n = 10
    x = torch.rand(n, 3) * 0.1
    h_r = net.encode(x)
    assert h_r.shape == (n, CFG.hash_radiance.out_dim)
    view = torch.nn.functional.normalize(torch.randn(n, 3), dim=-1)
    normal = torch.nn.functional.normalize(torch.randn(n, 3), dim=-1)
    rgb = net(h_r, torch.randn(n, 13), view, normal, torch.randn(n, 64))
    assert rgb.shape == (n, 3) and ((rgb > 0) & (rgb < 1)).all()
    net.set_step(0)
    assert (net.sh_weights == 0).all() and net.encoding.n_active_levels == CFG.hash_radiance.start_level
    net.set_step(CFG.radiance.sh_full_step)
    assert (net.sh_weights == 1).all()
    net.set_step(None)
    assert (net.sh_weights == 1).all() and net.encoding.n_active_levels == CFG.hash_radiance.n_levels


def test_sh_band_weights_schedule():
    w = sh_band_weights(3000 + 15000 // 8, 3000, 18000)  # alpha = 0.5: band 0 half on, others off
    torch.testing.assert_close(w, torch.tensor([0.5, 0.0, 0.0, 0.0]))
    assert expand_band_weights(torch.tensor([1.0, 2.0, 3.0, 4.0])).tolist() == [1] + [2] * 3 + [3] * 5 + [4] * 7


def test_reflect_mirror():
    d = torch.nn.functional.normalize(torch.tensor([[1.0, -1.0, 0.0]]), dim=-1)
    n = torch.tensor([[0.0, 1.0, 0.0]])
    w_r = reflect(d, n)
    torch.testing.assert_close(w_r, torch.nn.functional.normalize(torch.tensor([[1.0, 1.0, 0.0]]), dim=-1))


def test_sh_orthonormal_monte_carlo():
    gen = torch.Generator().manual_seed(0)
    n = 400_000
    d = torch.randn(n, 3, generator=gen, dtype=torch.float64)
    d = d / d.norm(dim=-1, keepdim=True)
    y = sh_basis(d)
    gram = 4 * math.pi * (y.T @ y) / n
    assert (gram - torch.eye(16, dtype=torch.float64)).abs().max() < 0.03
    torch.testing.assert_close(sh_encode_unit((d[:5] + 1) / 2), y[:5])


def test_material_ranges_and_lipschitz():
    torch.manual_seed(0)
    net = MaterialNetwork(CFG)
    n = 256
    assert net.in_dim == CFG.hash_radiance.out_dim + 13 + 64
    m = net(torch.randn(n, CFG.hash_radiance.out_dim) * 10, torch.randn(n, 13) * 10, torch.randn(n, 64) * 10)
    assert m.albedo.shape == (n, 3) and m.roughness.shape == (n,) and m.metallic.shape == (n,)
    assert m.albedo.min() >= 0.03 and m.albedo.max() <= 0.80
    assert m.roughness.min() >= 0.09 and m.roughness.max() <= 0.99
    assert m.metallic.min() >= 0.0 and m.metallic.max() <= 1.0
    layer = LipschitzLinear(5, 4)
    torch.testing.assert_close(layer.c.detach(), 2 * layer.linear.weight.abs().sum(1).max().detach())
    with torch.no_grad():
        layer.c.fill_(-2.0)  # bound softplus(-2) ~ 0.127: every row rescaled to it
    rows = layer.normalized_weight().abs().sum(1)
    torch.testing.assert_close(rows, torch.full_like(rows, float(torch.nn.functional.softplus(torch.tensor(-2.0)))))
    assert net.lipschitz_bound() > 0
