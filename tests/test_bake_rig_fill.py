"""The rig's hand filling what a prior's baked surface lacks (palm.bake: rig_sdf, smooth_union, rig_fill)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from palm.bake import bake_from_prior, rig_sdf, smooth_union
from palm.train.geometry import MeshSDF, winding_number


@pytest.fixture(scope="module")
def rig(prior):
    hand = prior.model.hand
    with torch.no_grad():
        rest, _ = hand.rest(torch.zeros(1, hand.n_betas))
    v, f = hand.sealed_mesh(rest[0])
    return hand, rest[0], v, f


def test_smooth_union_is_the_minimum_away_from_the_blend():
    a = torch.linspace(-0.01, 0.01, 101)
    b = torch.zeros(101)
    u = smooth_union(a, b, 0.002)
    assert torch.all(u <= torch.minimum(a, b) + 1e-9)
    far = (a - b).abs() >= 0.002
    assert torch.allclose(u[far], torch.minimum(a, b)[far])
    assert float(u[50]) == pytest.approx(-0.002 / 4)  # a == b: the deepest point of the blend


def test_rig_sdf_agrees_with_the_winding_number_and_the_exact_distance(rig):
    hand, rest, v, f = rig
    lo, hi = rest.min(0).values - 0.01, rest.max(0).values + 0.01
    axes = [torch.linspace(float(lo[i]), float(hi[i]), 30) for i in range(3)]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1)
    step = float((hi - lo).max()) / 29
    band = 4 * step  # a shell four cells thick, closed around the inside
    sdf = rig_sdf(hand, rest, grid, step).reshape(-1)
    pts = grid.reshape(-1, 3)
    clear = torch.nonzero(sdf.abs() > 0.001)[:, 0]  # off the surface, where a sign is well defined
    clear = clear[torch.randperm(len(clear), generator=torch.Generator().manual_seed(0))[:6000]]
    inside = winding_number(pts[clear], v, f) > 0.5
    assert bool(inside.any() and (~inside).any())
    assert torch.equal(sdf[clear] < 0, inside)
    near = sdf.abs() < band
    exact = MeshSDF(v, f, n_samples=200_000, seed=1)(pts[near])
    assert float((sdf[near].abs() - exact.abs()).abs().max()) < 1e-3  # distances (two samplings); the signs are above
    assert torch.allclose(sdf[~near].abs(), torch.tensor(band))


def test_rig_fill_restores_the_rigs_fingertips_and_keeps_the_prior_outside_them(prior, rig, monkeypatch):
    """A prior whose surface is a ball over the palm (no fingers): the fill gives the rig's fingers
    back, 1 mm thinner, and keeps the ball where it reaches past the hand."""
    from scipy.spatial import cKDTree

    hand, rest, v, f = rig
    centre, radius = rest.mean(0), 0.035

    network = prior.model.canonical_sdf

    def ball(points, *args):
        sdf, feature = network(points, *args)
        return ((points - centre).norm(dim=-1) - radius).reshape(sdf.shape), feature

    monkeypatch.setattr(prior.model, "canonical_sdf", ball)
    fill, res = 0.001, 48
    plain = bake_from_prior(prior, resolution=res, level=0.0)
    filled = bake_from_prior(prior, resolution=res, level=0.0, rig_fill=fill)
    step = float((rest.max(0).values - rest.min(0).values + 0.03).max()) / res
    tips = rest[hand.tip_vertex_ids].numpy()
    assert cKDTree(plain.vertices).query(tips)[0].min() > 0.02  # the ball has no fingers
    gap = cKDTree(filled.vertices).query(tips)[0]
    assert gap.max() < fill + step  # the filled surface passes the rig's fingertips, fill deeper
    # nothing of it lies deeper inside the rig's hand than the fill and a grid step
    depth = MeshSDF(v, f, n_samples=100_000)(torch.as_tensor(filled.vertices))
    assert float(depth.min()) > -(fill + step)
    # the ball's surface where it lies well outside the rig's hand is kept
    outside = MeshSDF(v, f, n_samples=100_000)(torch.as_tensor(plain.vertices)) > 2 * step
    assert bool(outside.any())
    kept, _ = cKDTree(filled.vertices).query(plain.vertices[outside.numpy()])
    assert float(kept.max()) < step
    assert np.isfinite(filled.vertices).all()
