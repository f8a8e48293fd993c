"""Occupancy grid, packed marching, importance sampling, secondary rays, evaluation counts."""

from __future__ import annotations

import math

import torch

from palm.config import SamplerConfig
from palm.render.rays import Camera, pixel_rays
from palm.render.sampling import (
    OccupancyGrid,
    SampleBatch,
    count_evals,
    default_step,
    importance_sample,
    march_rays,
    march_secondary,
    sample_primary,
)


def _sphere_vertices(n: int, radius: float, centre=(0.0, 0.0, 0.0)) -> torch.Tensor:
    i = torch.arange(n, dtype=torch.float64) + 0.5
    phi = torch.acos(1 - 2 * i / n)
    theta = math.pi * (1 + 5**0.5) * i
    pts = torch.stack([torch.cos(theta) * torch.sin(phi), torch.sin(theta) * torch.sin(phi), torch.cos(phi)], -1)
    return (pts * radius + torch.tensor(centre, dtype=torch.float64)).float()


def _random_rays(n: int, seed: int, radius: float = 0.4) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    origins = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=-1) * radius
    target = (torch.rand(n, 3, generator=g) - 0.5) * 0.1
    dirs = torch.nn.functional.normalize(target - origins, dim=-1)
    return origins, dirs


def _assert_grouped_sorted(s: SampleBatch):
    assert (s.ray_indices[1:] >= s.ray_indices[:-1]).all()
    same = s.ray_indices[1:] == s.ray_indices[:-1]
    assert (s.t_starts[1:][same] >= s.t_ends[:-1][same] - 1e-6).all()
    assert (s.t_ends > s.t_starts).all()


def test_occupancy_grid_is_near_vertices_only():
    cfg = SamplerConfig()
    verts = _sphere_vertices(3000, 0.05)
    grid = OccupancyGrid.from_config(cfg).update(verts, generator=torch.Generator().manual_seed(0))
    assert grid.grid.shape == (64, 64, 64)
    assert 0.0 < grid.occupied_fraction < 0.2
    assert grid.query(verts.float()).all()  # a vertex's own cell always qualifies
    origins, dirs = _random_rays(2000, 1)
    samples = march_rays(origins, dirs, grid, stratified=True, generator=torch.Generator().manual_seed(2))
    assert samples.n_samples > 0
    _assert_grouped_sorted(samples)
    pts = samples.points(origins, dirs)
    dist = torch.cdist(pts.double(), verts.double()).min(dim=1).values
    # the cell's random point is within occ_dist; dilation adds one cell: 2 cell diagonals at most
    bound = cfg.occ_dist + 2 * math.sqrt(3) * grid.cell_size
    assert float(dist.max()) <= bound
    assert float(dist.min()) < 0.005  # samples do reach the surface
    # the hollow centre of the 5 cm sphere is empty
    assert not grid.query(torch.zeros(1, 3)).any()
    assert not grid.query(torch.tensor([[0.2, 0.0, 0.0]])).any()  # outside the AABB


def test_update_union_of_meshes():
    a = _sphere_vertices(500, 0.02, (-0.08, 0.0, 0.0))
    b = _sphere_vertices(500, 0.02, (0.08, 0.0, 0.0))
    grid = OccupancyGrid(32, 0.15, 0.015).update([a, b])
    assert grid.query(a).all() and grid.query(b).all()
    assert not grid.query(torch.tensor([[0.0, 0.0, 0.0]])).any()


def test_march_without_skipping_covers_the_aabb():
    grid = OccupancyGrid(16, 0.15, 0.015)  # all occupied
    step = default_step(0.15, 64)
    origins = torch.tensor([[0.0, 0.0, -1.0], [0.0, 0.0, -1.0], [0.3, 0.3, -1.0]])
    dirs = torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    s = march_rays(origins, dirs, grid, step=step)
    counts = s.counts
    assert counts.tolist()[1:] == [0, 0]  # both miss the cube
    assert int(counts[0]) == math.ceil(0.3 / step - 0.5)  # midpoints inside [0.85, 1.15)
    torch.testing.assert_close(s.t_starts[0], torch.tensor(0.85))
    torch.testing.assert_close(s.deltas, torch.full_like(s.deltas, step))


def test_ess_fraction_for_a_hand_sized_blob():
    # ellipsoid of vertices of a hand's size: 19 x 9 x 3 cm
    v = _sphere_vertices(4000, 1.0) * torch.tensor([0.095, 0.045, 0.015])
    grid = OccupancyGrid.from_config(SamplerConfig()).update(v, generator=torch.Generator().manual_seed(0))
    cam = Camera.look_at((0.0, 0.1, 0.6), (0.0, 0.0, 0.0), fov_deg=30.0, height=256, width=256)
    origins, dirs = pixel_rays(cam)
    with_skip, without = count_evals(origins, dirs, grid, n_steps=128)
    assert without > 1_000_000  # the AABB fills most of the view
    assert 0 < with_skip / without < 0.2


def test_importance_sampling_concentrates_and_preserves_coverage():
    # ray 0: intervals [0,1),[1,2),[5,6),[6,7) (a gap); weight on [5,6). ray 1: none. ray 2: uniform weights
    t_starts = torch.tensor([0.0, 1.0, 5.0, 6.0, 0.0, 1.0, 2.0, 3.0])
    t_ends = torch.tensor([1.0, 2.0, 6.0, 7.0, 1.0, 2.0, 3.0, 4.0])
    ray_indices = torch.tensor([0, 0, 0, 0, 2, 2, 2, 2])
    weights = torch.tensor([0.0, 0.0, 0.9, 0.0, 0.25, 0.25, 0.25, 0.25])
    out = importance_sample(t_starts, t_ends, ray_indices, weights, 8, 3)
    _assert_grouped_sorted(out)
    assert out.counts.tolist() == [12, 0, 12]
    for r in (0, 2):  # same coverage of t
        sel = out.ray_indices == r
        torch.testing.assert_close(out.deltas[sel].sum(), (t_ends - t_starts)[ray_indices == r].sum())
    r0 = out.ray_indices == 0
    in_peak = (out.t_mids[r0] > 5.0) & (out.t_mids[r0] < 6.0)
    assert int(in_peak.sum()) == 9  # the heavy interval got all 8 new points
    assert not ((out.t_mids[r0] > 2.0) & (out.t_mids[r0] < 5.0)).any()  # nothing in the gap
    # stratified variant keeps the same invariants
    out2 = importance_sample(t_starts, t_ends, ray_indices, weights, 8, 3, stratified=True,
                             generator=torch.Generator().manual_seed(0))
    assert out2.counts.tolist() == [12, 0, 12]


def _sphere_sdf(radius: float):
    return lambda p: p.norm(dim=-1) - radius


def test_primary_importance_rounds_refine_near_the_surface():
    radius = 0.05
    grid = OccupancyGrid(32, 0.15, 0.015).update(_sphere_vertices(2000, radius))
    origins, dirs = _random_rays(200, 3)
    base = sample_primary(origins, dirs, grid, sdf_fn=None, n_steps=64)
    refined = sample_primary(origins, dirs, grid, sdf_fn=_sphere_sdf(radius), beta=0.002, n_steps=64,
                             importance_rounds=2, importance_samples=8)
    _assert_grouped_sorted(refined)
    hit = base.counts > 0
    assert (refined.counts[hit] > base.counts[hit]).all()
    assert (refined.counts[~hit] == 0).all()

    def near_fraction(s):
        d = (s.points(origins, dirs).norm(dim=-1) - radius).abs()
        return float((d < 0.003).float().mean())

    assert near_fraction(refined) > 2 * near_fraction(base)


def test_secondary_rays_from_the_surface():
    radius = 0.05
    grid = OccupancyGrid(32, 0.15, 0.015).update(_sphere_vertices(2000, radius))
    g = torch.Generator().manual_seed(4)
    n = torch.nn.functional.normalize(torch.randn(100, 3, generator=g), dim=-1)
    origins = n * (radius + 1e-3)
    dirs_in = -n  # towards the centre: crosses the sphere again
    s = march_secondary(origins, dirs_in, grid, sdf_fn=_sphere_sdf(radius), far=1.5, n_samples=64, n_importance=4)
    _assert_grouped_sorted(s)
    assert (s.t_starts >= 0).all() and (s.t_ends <= 1.5 + 1e-6).all()
    assert (s.counts > 0).all()
    assert grid.query(s.points(origins, dirs_in)).all()
    plain = march_secondary(origins, dirs_in, grid, sdf_fn=None, n_samples=64)
    assert (s.counts >= plain.counts).all()
