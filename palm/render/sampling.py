"""Empty-space skipping and ray sampling in MANO space (spec section 4).

* :class:`OccupancyGrid`: a ``res^3`` grid over the cube ``[-aabb_half, aabb_half]^3``, rebuilt
  from the posed hand's vertices (cells within ``occ_dist`` of a vertex, then a one-cell dilation).
* :func:`march_rays`: uniform marching (step = |AABB diagonal| / n_steps) that keeps only the
  intervals whose midpoint lies in an occupied cell, returned *packed* (:class:`SampleBatch`), so
  empty space never reaches the networks.
* :func:`importance_sample`: per-ray inverse-CDF sampling of the current intervals' weights; the new
  points split the intervals they fall in (the result covers exactly the same set of ``t``).
* :func:`sample_primary` / :func:`march_secondary`: the full primary and secondary schedules, with the
  SDF supplied by the caller as a closure (evaluated without gradients here).
* :func:`count_evals`: network evaluations with and without skipping (benchmark's ``ess_eval_fraction``).

No Python loop runs over rays or samples; ray chunks bound the memory of the dense marching step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from palm.render.volume import (
    alphas_from_density,
    laplace_density,
    packed_to_padded,
    ray_counts,
    ray_offsets,
    render_weights,
)

SdfFn = Callable[[torch.Tensor], torch.Tensor]
"""``sdf_fn(points (P, 3) MANO space) -> (P,) signed distances``."""


# ---------------------------------------------------------------------------------------------
# Packed samples
# ---------------------------------------------------------------------------------------------


@dataclass
class SampleBatch:
    """Packed ray intervals ``[t_start, t_end)``, grouped by ray and sorted by depth within a ray.

    Attributes:
        t_starts: (S,) interval starts.
        t_ends: (S,) interval ends.
        ray_indices: (S,) long ray of each interval.
        n_rays: N, the number of rays (including those without any interval).
    """

    t_starts: torch.Tensor
    t_ends: torch.Tensor
    ray_indices: torch.Tensor
    n_rays: int

    @property
    def n_samples(self) -> int:
        return int(self.t_starts.numel())

    @property
    def t_mids(self) -> torch.Tensor:
        """(S,) interval midpoints (where networks are evaluated)."""
        return 0.5 * (self.t_starts + self.t_ends)

    @property
    def deltas(self) -> torch.Tensor:
        """(S,) interval lengths."""
        return self.t_ends - self.t_starts

    @property
    def counts(self) -> torch.Tensor:
        """(N,) long number of intervals per ray."""
        return ray_counts(self.ray_indices, self.n_rays)

    @property
    def offsets(self) -> torch.Tensor:
        """(N,) long index of each ray's first interval."""
        return ray_offsets(self.counts)

    def points(self, origins: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
        """(S, 3) midpoints ``o + t_mid d`` given the rays' (N, 3) origins and directions."""
        return origins[self.ray_indices] + self.t_mids[:, None] * dirs[self.ray_indices]

    def select(self, keep: torch.Tensor) -> SampleBatch:
        """The sub-batch of intervals where ``keep`` (S,) bool is true (order preserved)."""
        return SampleBatch(self.t_starts[keep], self.t_ends[keep], self.ray_indices[keep], self.n_rays)

    @staticmethod
    def empty(n_rays: int, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> SampleBatch:
        z = torch.zeros(0, dtype=dtype, device=device)
        return SampleBatch(z, z.clone(), torch.zeros(0, dtype=torch.long, device=device), n_rays)


def cat_batches(batches: Sequence[SampleBatch], ray_starts: Sequence[int], n_rays: int) -> SampleBatch:
    """Concatenate batches of consecutive ray chunks (chunk ``k`` starts at ray ``ray_starts[k]``)."""
    return SampleBatch(
        torch.cat([b.t_starts for b in batches]),
        torch.cat([b.t_ends for b in batches]),
        torch.cat([b.ray_indices + s for b, s in zip(batches, ray_starts)]),
        n_rays,
    )


# ---------------------------------------------------------------------------------------------
# Occupancy grid
# ---------------------------------------------------------------------------------------------


class OccupancyGrid:
    """Binary occupancy of the MANO-space cube ``[-aabb_half, aabb_half]^3`` (spec section 4).

    ``grid[i, j, k]`` covers ``x`` cell ``i``, ``y`` cell ``j``, ``z`` cell ``k``. A new grid is all
    occupied until :meth:`update` is called.

    Args:
        res: cells per side (``cfg.sampler.occ_grid_res``).
        aabb_half: half side of the cube, metres.
        occ_dist: a cell is occupied when its random point is closer than this to a vertex.
        device: where the grid lives.
    """

    def __init__(self, res: int = 64, aabb_half: float = 0.15, occ_dist: float = 0.015,
                 device: torch.device | str | None = None):
        self.res = int(res)
        self.aabb_half = float(aabb_half)
        self.occ_dist = float(occ_dist)
        self.grid = torch.ones(self.res, self.res, self.res, dtype=torch.bool, device=device)

    @classmethod
    def from_config(cls, sampler_cfg, device: torch.device | str | None = None) -> OccupancyGrid:
        """Build from a :class:`palm.config.SamplerConfig`."""
        return cls(sampler_cfg.occ_grid_res, sampler_cfg.aabb_half, sampler_cfg.occ_dist, device)

    @property
    def cell_size(self) -> float:
        return 2.0 * self.aabb_half / self.res

    @property
    def device(self) -> torch.device:
        return self.grid.device

    def cell_centres(self) -> torch.Tensor:
        """(res^3, 3) float32 centres of all cells, in ``grid`` (C) order."""
        c = (torch.arange(self.res, dtype=torch.float32, device=self.device) + 0.5) * self.cell_size - self.aabb_half
        x, y, z = torch.meshgrid(c, c, c, indexing="ij")
        return torch.stack([x, y, z], dim=-1).reshape(-1, 3)

    def update(self, vertices_local: torch.Tensor | Sequence[torch.Tensor],
               generator: torch.Generator | None = None) -> OccupancyGrid:
        """Rebuild the grid from posed vertices in MANO space (the union over a list of meshes).

        For every cell one point is drawn uniformly inside it; the cell is occupied iff that point
        is within ``occ_dist`` of the nearest vertex. The grid is then dilated by a 3x3x3 max-pool.
        The nearest-vertex query uses a KD-tree on the CPU.

        Args:
            vertices_local: (V, 3) vertices, (B, V, 3), or a list of (V_b, 3) tensors, MANO space.
            generator: CPU torch generator for the in-cell points (None = global RNG).

        Returns:
            self (updated in place).
        """
        from scipy.spatial import cKDTree

        if isinstance(vertices_local, torch.Tensor):
            verts = vertices_local.detach().reshape(-1, 3)
        else:
            verts = torch.cat([v.detach().reshape(-1, 3) for v in vertices_local])
        verts_np = verts.to("cpu", torch.float64).numpy()
        jitter = torch.rand(self.res**3, 3, generator=generator) - 0.5
        pts = self.cell_centres().cpu().double() + jitter.double() * self.cell_size
        occupied = np.zeros(self.res**3, dtype=bool)
        if len(verts_np):
            dist, _ = cKDTree(verts_np).query(pts.numpy(), k=1, distance_upper_bound=self.occ_dist)
            occupied = dist < self.occ_dist
        grid = torch.from_numpy(occupied).reshape(1, 1, self.res, self.res, self.res).float()
        grid = F.max_pool3d(grid, kernel_size=3, stride=1, padding=1)
        self.grid = (grid[0, 0] > 0).to(self.device)
        return self

    def query(self, points: torch.Tensor) -> torch.Tensor:
        """(P,) bool: is each (P, 3) MANO-space point inside the cube and in an occupied cell."""
        idx = torch.floor((points + self.aabb_half) * (1.0 / self.cell_size))
        inside = ((idx >= 0) & (idx < self.res)).all(dim=-1)
        idx = idx.clamp(0, self.res - 1).long()
        flat = (idx[:, 0] * self.res + idx[:, 1]) * self.res + idx[:, 2]
        return inside & self.grid.reshape(-1)[flat]

    @property
    def occupied_fraction(self) -> float:
        return float(self.grid.float().mean())


# ---------------------------------------------------------------------------------------------
# Primary marching
# ---------------------------------------------------------------------------------------------


def ray_aabb(origins: torch.Tensor, dirs: torch.Tensor, half: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Slab intersection of rays with the cube ``[-half, half]^3``.

    Args:
        origins, dirs: (N, 3).
        half: half side.

    Returns:
        t_near (N,) clipped at 0, t_far (N,); a ray misses when ``t_far <= t_near``.
    """
    safe = torch.where(dirs.abs() < 1e-12, torch.full_like(dirs, 1e-12), dirs)
    t0 = (-half - origins) / safe
    t1 = (half - origins) / safe
    t_near = torch.minimum(t0, t1).amax(dim=-1).clamp(min=0.0)
    t_far = torch.maximum(t0, t1).amin(dim=-1)
    return t_near, t_far


def default_step(aabb_half: float, n_steps: int) -> float:
    """Primary marching step ``|AABB diagonal| / n_steps`` (spec: 0.5196 / 128 ~ 4.06 mm)."""
    return 2.0 * aabb_half * math.sqrt(3.0) / n_steps


def march_rays(
    origins: torch.Tensor,
    dirs: torch.Tensor,
    grid: OccupancyGrid,
    step: float | None = None,
    stratified: bool = False,
    generator: torch.Generator | None = None,
    n_steps: int = 128,
    chunk: int = 8192,
) -> SampleBatch:
    """Uniform marching inside the AABB that keeps only intervals in occupied cells.

    Interval ``k`` of a ray is ``[t_near + u + k step, t_near + u + (k + 1) step)`` where
    ``u ~ U[0, step)`` once per ray when ``stratified`` (else 0); it is kept when its midpoint is
    inside the AABB and in an occupied cell.

    Args:
        origins: (N, 3) MANO-space ray origins.
        dirs: (N, 3) MANO-space unit directions.
        grid: the occupancy grid (its cube is the AABB).
        step: marching step; default ``|AABB diagonal| / n_steps``.
        stratified: one random offset per ray (training).
        generator: torch generator (on the rays' device) for the offsets.
        n_steps: used only when ``step`` is None.
        chunk: rays marched at once (memory bound).

    Returns:
        :class:`SampleBatch` over the N rays.
    """
    if step is None:
        step = default_step(grid.aabb_half, n_steps)
    n_rays = origins.shape[0]
    max_k = math.ceil(2.0 * grid.aabb_half * math.sqrt(3.0) / step) + 1
    batches, starts = [], []
    for s in range(0, n_rays, chunk):
        o, d = origins[s:s + chunk], dirs[s:s + chunk]
        t_near, t_far = ray_aabb(o, d, grid.aabb_half)
        hits = t_far > t_near
        if not bool(hits.any()):
            continue
        n_k = min(max_k, int(torch.ceil(((t_far - t_near)[hits]).max() / step)) + 1)
        offset = torch.zeros_like(t_near)
        if stratified:
            offset = torch.rand(t_near.shape, generator=generator, device=t_near.device, dtype=t_near.dtype) * step
        k = torch.arange(n_k, device=o.device, dtype=o.dtype)
        t0 = t_near[:, None] + offset[:, None] + k[None, :] * step  # (n, K)
        t_mid = t0 + 0.5 * step
        valid = t_mid < t_far[:, None]
        pts = o[:, None, :] + t_mid[..., None] * d[:, None, :]
        valid &= grid.query(pts.reshape(-1, 3)).reshape(valid.shape)
        rows, cols = valid.nonzero(as_tuple=True)  # row-major: grouped by ray, sorted by t
        t1 = t_near[:, None] + offset[:, None] + (k[None, :] + 1.0) * step  # == next interval's start
        batches.append(SampleBatch(t0[rows, cols], t1[rows, cols], rows, o.shape[0]))
        starts.append(s)
    if not batches:
        return SampleBatch.empty(n_rays, origins.device, origins.dtype)
    return cat_batches(batches, starts, n_rays)


def count_evals(
    origins: torch.Tensor,
    dirs: torch.Tensor,
    grid: OccupancyGrid,
    step: float | None = None,
    n_steps: int = 128,
    extra_per_ray: int = 0,
) -> tuple[int, int]:
    """Network evaluations of primary marching with and without empty-space skipping.

    Without skipping every interval inside the AABB is evaluated; with skipping only those in
    occupied cells. ``extra_per_ray`` (e.g. ``importance_rounds * importance_samples``) is added for
    every ray that has at least one interval in the respective scheme.

    Args:
        origins, dirs: (N, 3) MANO-space rays.
        grid: the (updated) occupancy grid.
        step, n_steps: as in :func:`march_rays`.
        extra_per_ray: extra evaluations per sampled ray.

    Returns:
        ``(evals_with_skipping, evals_without_skipping)``; their ratio is ``ess_eval_fraction``.
    """
    full = OccupancyGrid(grid.res, grid.aabb_half, grid.occ_dist, grid.device)  # all occupied
    with torch.no_grad():
        skip = march_rays(origins, dirs, grid, step=step, n_steps=n_steps)
        dense = march_rays(origins, dirs, full, step=step, n_steps=n_steps)
    with_skip = skip.n_samples + extra_per_ray * int((skip.counts > 0).sum())
    without = dense.n_samples + extra_per_ray * int((dense.counts > 0).sum())
    return with_skip, without


# ---------------------------------------------------------------------------------------------
# Importance sampling
# ---------------------------------------------------------------------------------------------


def importance_sample(
    t_starts: torch.Tensor,
    t_ends: torch.Tensor,
    ray_indices: torch.Tensor,
    weights: torch.Tensor,
    n_samples: int,
    n_rays: int,
    stratified: bool = False,
    generator: torch.Generator | None = None,
) -> SampleBatch:
    """Inverse-CDF resampling of each ray's weight distribution, merged with the existing intervals.

    Each ray's intervals carry a piecewise-constant pdf proportional to ``weights`` (plus a tiny
    floor so that rays with all-zero weights resample uniformly). ``n_samples`` new points per ray
    are drawn at ``u = (k + 0.5) / n`` (or ``(k + U) / n`` when ``stratified``) through the CDF,
    and split the intervals they land in. The result covers exactly the same set of ``t`` as the
    input, sorted per ray; rays without intervals stay without. Positions are not differentiable.

    Args:
        t_starts, t_ends: (S,) packed intervals (grouped by ray, sorted by depth).
        ray_indices: (S,) long.
        weights: (S,) volume-rendering weights of the intervals (detached here).
        n_samples: new points per ray.
        n_rays: N.
        stratified: jitter ``u`` within its stratum.
        generator: torch generator for the jitter.

    Returns:
        :class:`SampleBatch` with up to ``S + n_samples * (rays with intervals)`` intervals.
    """
    device, dtype = t_starts.device, t_starts.dtype
    if t_starts.numel() == 0 or n_samples <= 0:
        return SampleBatch(t_starts, t_ends, ray_indices, n_rays)
    t_starts, t_ends, weights = t_starts.detach(), t_ends.detach(), weights.detach()
    inf = torch.finfo(dtype).max
    s_pad, mask = packed_to_padded(t_starts, ray_indices, n_rays, fill=inf)
    e_pad, _ = packed_to_padded(t_ends, ray_indices, n_rays, fill=inf)
    w_pad, _ = packed_to_padded(weights.clamp(min=0.0), ray_indices, n_rays, fill=0.0)
    counts = mask.sum(dim=1)
    has = counts > 0

    # inverse CDF
    pdf = (w_pad + 1e-5 * (w_pad.sum(dim=1, keepdim=True) + 1e-8)) * mask
    cdf = torch.cumsum(pdf, dim=1)
    total = cdf[:, -1:].clamp(min=1e-20)
    cdf = cdf / total
    cdf_lo = torch.cat([torch.zeros_like(cdf[:, :1]), cdf[:, :-1]], dim=1)
    k = torch.arange(n_samples, device=device, dtype=dtype)
    if stratified:
        u = (k[None, :] + torch.rand(n_rays, n_samples, generator=generator, device=device, dtype=dtype)) / n_samples
    else:
        u = ((k + 0.5) / n_samples).expand(n_rays, n_samples)
    u = u.contiguous()
    idx = torch.searchsorted(cdf.contiguous(), u, right=True)
    idx = torch.minimum(idx, (counts - 1).clamp(min=0)[:, None])
    lo, hi = cdf_lo.gather(1, idx), cdf.gather(1, idx)
    frac = ((u - lo) / (hi - lo).clamp(min=1e-12)).clamp(0.0, 1.0)
    s_i, e_i = s_pad.gather(1, idx), e_pad.gather(1, idx)
    t_new = torch.where(has[:, None], s_i + frac * (e_i - s_i), torch.full_like(u, inf))

    # merge: all edges, sorted; keep gaps' complements only
    edges, _ = torch.sort(torch.cat([s_pad, e_pad, t_new], dim=1), dim=1)
    a, b = edges[:, :-1], edges[:, 1:]
    mid = 0.5 * a + 0.5 * b
    finite = b < inf
    owner = (torch.searchsorted(s_pad.contiguous(), mid.contiguous(), right=True) - 1).clamp(min=0)
    covered = finite & (b > a) & (mid < e_pad.gather(1, owner)) & (mid >= s_pad.gather(1, owner))
    rows, cols = covered.nonzero(as_tuple=True)
    return SampleBatch(a[rows, cols], b[rows, cols], rows, n_rays)


# ---------------------------------------------------------------------------------------------
# Full schedules with a caller-supplied SDF
# ---------------------------------------------------------------------------------------------


def sdf_weights(
    samples: SampleBatch, origins: torch.Tensor, dirs: torch.Tensor, sdf_fn: SdfFn, beta: float, chunk: int = 40000
) -> torch.Tensor:
    """(S,) volume-rendering weights of ``samples`` from the SDF at their midpoints (no gradients).

    The release evaluates the importance rounds with the smaller SDF of each interval's two end
    points; the midpoint costs one network evaluation per interval instead of two.

    Args:
        samples: packed intervals.
        origins, dirs: (N, 3) rays (same space as ``sdf_fn``'s input).
        sdf_fn: ``(P, 3) -> (P,)`` signed distances.
        beta: effective Laplace scale.
        chunk: points per ``sdf_fn`` call.
    """
    with torch.no_grad():
        pts = samples.points(origins, dirs)
        sdf = torch.cat([sdf_fn(pts[i:i + chunk]).reshape(-1) for i in range(0, pts.shape[0], chunk)]) if len(
            pts) else pts.new_zeros(0)
        alphas = alphas_from_density(laplace_density(sdf, beta), samples.deltas)
        return render_weights(alphas, samples.ray_indices, samples.n_rays)


def sample_primary(
    origins: torch.Tensor,
    dirs: torch.Tensor,
    grid: OccupancyGrid,
    sdf_fn: SdfFn | None = None,
    beta: float = 0.003,
    n_steps: int = 128,
    importance_rounds: int = 2,
    importance_samples: int = 16,
    stratified: bool = False,
    generator: torch.Generator | None = None,
    chunk: int = 40000,
) -> SampleBatch:
    """Primary-ray samples: occupancy-filtered marching, then ``importance_rounds`` rounds.

    Args:
        origins, dirs: (N, 3) MANO-space rays.
        grid: the updated occupancy grid.
        sdf_fn: SDF closure for the importance rounds; None (or 0 rounds) = marching only.
        beta: effective Laplace scale used to turn the SDF into weights.
        n_steps, importance_rounds, importance_samples: ``cfg.sampler`` fields.
        stratified, generator: training jitter.
        chunk: points per ``sdf_fn`` call.

    Returns:
        :class:`SampleBatch`.
    """
    samples = march_rays(origins, dirs, grid, n_steps=n_steps, stratified=stratified, generator=generator)
    if sdf_fn is None:
        return samples
    for _ in range(importance_rounds):
        w = sdf_weights(samples, origins, dirs, sdf_fn, beta, chunk)
        samples = importance_sample(samples.t_starts, samples.t_ends, samples.ray_indices, w, importance_samples,
                                    samples.n_rays, stratified=stratified, generator=generator)
    return samples


def march_secondary(
    origins: torch.Tensor,
    dirs: torch.Tensor,
    grid: OccupancyGrid,
    sdf_fn: SdfFn | None = None,
    beta: float = 0.003,
    far: float = 1.5,
    n_samples: int = 64,
    n_importance: int = 4,
    near: float = 0.0,
    chunk: int = 40000,
) -> SampleBatch:
    """Secondary (shadow / indirect) ray samples (spec section 4), no jitter, no gradients.

    ``n_samples`` uniform points on ``[near, far]`` (step ``(far - near) / (n_samples - 1)``) define
    ``n_samples - 1`` intervals; those whose midpoint is not in an occupied cell are dropped; then
    one importance round of ``n_importance`` points per ray (when ``sdf_fn`` is given).

    Args:
        origins, dirs: (M, 3) MANO-space rays from the interaction points.
        grid: the occupancy grid.
        sdf_fn: SDF closure, or None to skip the importance round.
        beta: effective Laplace scale.
        far, n_samples, n_importance: ``cfg.sampler.secondary_*``.
        near: start of the ray (e.g. a small offset against self-intersection).
        chunk: points per ``sdf_fn`` call.

    Returns:
        :class:`SampleBatch` over the M rays.
    """
    with torch.no_grad():
        m = origins.shape[0]
        step = (far - near) / max(n_samples - 1, 1)
        edges = near + torch.arange(n_samples, device=origins.device, dtype=origins.dtype) * step
        t0, t1 = edges[:-1], edges[1:]
        pts = origins[:, None, :] + (0.5 * (t0 + t1))[None, :, None] * dirs[:, None, :]
        keep = grid.query(pts.reshape(-1, 3)).reshape(m, n_samples - 1)
        rows, cols = keep.nonzero(as_tuple=True)
        samples = SampleBatch(t0[cols], t1[cols], rows, m)
        if sdf_fn is None or n_importance <= 0:
            return samples
        w = sdf_weights(samples, origins, dirs, sdf_fn, beta, chunk)
        return importance_sample(samples.t_starts, samples.t_ends, samples.ray_indices, w, n_importance, m)
