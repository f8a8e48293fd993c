"""Monte-Carlo physically based rendering of the primary interaction points (spec 6.3, "uniform_light").

For each primary ray, ``S`` resamples are drawn from the discrete distribution of its volume-rendering
weights ``{w_i}`` plus a background slot of mass ``T = 1 - A``. Resample ``k`` gets light direction
``k`` of a stratified uniform-sphere grid (rows x cols = S, jittered in training, permuted per ray),
pdf ``1 / (4 pi)``. A foreground resample in interval ``i`` carries weight ``w_i / n_i`` and
radiance ``L_o = 4 pi * brdf_cos(n, v, l) * L_i`` with ``L_i = E(l) V + L_ind``; background resamples
carry ``T / n_bg`` times the background colour. The pixel is the weighted sum.

Secondary rays (visibility, indirect light) come from a caller-supplied closure and run without
gradients; gradients reach weights, normals and materials through the BRDF and the light through the
emitter closure. No network lives here.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from palm.render.volume import packed_to_padded, ray_counts, ray_offsets, segment_sum

TraceFn = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
"""``trace_secondary(origins (M, 3), dirs_world (M, 3)) -> (visibility (M,), indirect_rgb (M, 3))``."""
EmitterFn = Callable[[torch.Tensor], torch.Tensor]
"""``emitter(dirs_world (M, 3)) -> (M, 3)`` environment radiance (e.g. the SG light)."""
BrdfFn = Callable[..., torch.Tensor]
"""``brdf_cos(normal, view, light, albedo, roughness, metallic) -> (..., 3)``, cosine included."""


@dataclass
class PBRResult:
    """Output of :func:`pbr_uniform_light`.

    Attributes:
        rgb: (N, 3) linear PBR colour, background resamples included.
        n_secondary: number of secondary rays traced.
        n_foreground: number of foreground resamples.
    """

    rgb: torch.Tensor
    n_secondary: int
    n_foreground: int


def stratified_sphere_dirs(
    n_rays: int,
    light_grid: tuple[int, int],
    jitter: bool,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Stratified uniform-sphere directions, an independent random order per ray.

    The sphere is cut into ``rows`` equal-area bands of ``z`` and ``cols`` sectors of azimuth; one
    direction per cell, at the cell's centre or (``jitter``) uniformly inside it.

    Args:
        n_rays: N.
        light_grid: ``(rows, cols)``; ``S = rows * cols``.
        jitter: jitter within cells (training).
        generator: torch generator for jitter and permutation.

    Returns:
        (N, S, 3) unit directions.
    """
    rows, cols = light_grid
    r = torch.arange(rows, device=device, dtype=dtype)[:, None].expand(rows, cols)
    c = torch.arange(cols, device=device, dtype=dtype)[None, :].expand(rows, cols)
    if jitter:
        xi = torch.rand(n_rays, rows, cols, 2, generator=generator, device=device, dtype=dtype)
    else:
        xi = torch.full((n_rays, rows, cols, 2), 0.5, device=device, dtype=dtype)
    z = 1.0 - 2.0 * (r + xi[..., 0]) / rows
    phi = 2.0 * math.pi * (c + xi[..., 1]) / cols
    s = torch.sqrt((1.0 - z * z).clamp(min=0.0))
    dirs = torch.stack([s * torch.cos(phi), s * torch.sin(phi), z], dim=-1).reshape(n_rays, rows * cols, 3)
    perm = torch.argsort(torch.rand(n_rays, rows * cols, generator=generator, device=device), dim=1)
    return dirs.gather(1, perm[..., None].expand(-1, -1, 3))


def _default_brdf() -> BrdfFn:
    from palm.render.brdf import brdf_cos

    return brdf_cos


def pbr_uniform_light(
    weights: torch.Tensor,
    ray_indices: torch.Tensor,
    n_rays: int,
    positions: torch.Tensor,
    normals: torch.Tensor,
    albedo: torch.Tensor,
    roughness: torch.Tensor,
    metallic: torch.Tensor,
    ray_dirs: torch.Tensor,
    emitter: EmitterFn,
    trace_secondary: TraceFn | None,
    background: torch.Tensor | float,
    light_grid: tuple[int, int] = (16, 32),
    jitter: bool = False,
    global_illumination: bool = True,
    generator: torch.Generator | None = None,
    brdf_fn: BrdfFn | None = None,
) -> PBRResult:
    """The PBR Monte-Carlo estimator of spec 6.3.

    Args:
        weights: (S,) primary volume-rendering weights (packed; gradients kept).
        ray_indices: (S,) long ray of each sample.
        n_rays: N.
        positions: (S, 3) interaction points, in the space ``trace_secondary`` expects (MANO space).
        normals: (S, 3) world unit normals.
        albedo: (S, 3) linear albedo.
        roughness: (S,) or (S, 1) GGX alpha.
        metallic: (S,) or (S, 1).
        ray_dirs: (N, 3) world unit directions of the primary rays (``v = -d``).
        emitter: environment radiance for world directions (gradients flow).
        trace_secondary: visibility and indirect radiance of secondary rays, called under
            ``torch.no_grad`` with world directions (it maps them to its own space and guards
            against self-intersection, e.g. with ``march_secondary(near=...)``); None = full
            visibility, no indirect light.
        background: (3,), (N, 3) or scalar linear background colour.
        light_grid: ``(rows, cols)``; the number of resamples is ``rows * cols``.
        jitter: jitter resamples and light directions (training); else cell centres.
        global_illumination: add the indirect radiance to ``L_i``.
        generator: torch generator (on the rays' device) for resampling, jitter and permutation.
        brdf_fn: ``brdf_cos`` (default :func:`palm.render.brdf.brdf_cos`).

    Returns:
        :class:`PBRResult`.
    """
    brdf = brdf_fn or _default_brdf()
    device, dtype = ray_dirs.device, ray_dirs.dtype
    n_res = light_grid[0] * light_grid[1]
    bg = torch.as_tensor(background, dtype=dtype, device=device).expand(n_rays, 3)

    # 1. resample {w_i} U {T} per ray (stratified inverse CDF on the padded masses)
    counts = ray_counts(ray_indices, n_rays)
    w_pad, _mask = packed_to_padded(weights, ray_indices, n_rays, fill=0.0)  # (N, M)
    width = w_pad.shape[1]
    trans = (1.0 - segment_sum(weights, ray_indices, n_rays)).clamp(min=0.0)  # (N,) = T
    mass = torch.cat([w_pad.clamp(min=0.0), trans[:, None]], dim=1)  # (N, M + 1), last = background
    with torch.no_grad():
        p = mass.detach().clone()
        p[:, width] += 1e-12  # every row has positive mass
        cdf = torch.cumsum(p, dim=1)
        cdf = (cdf / cdf[:, -1:]).contiguous()
        k = torch.arange(n_res, device=device, dtype=dtype)
        xi = torch.rand(n_rays, n_res, generator=generator, device=device, dtype=dtype) if jitter else 0.5
        u = ((k + xi) / n_res).expand(n_rays, n_res).contiguous()
        slot = torch.searchsorted(cdf, u, right=True).clamp(max=width)  # (N, S)
        n_slot = torch.zeros(n_rays, width + 1, device=device, dtype=dtype).scatter_add_(
            1, slot, torch.ones_like(u))
    w_tilde = mass.gather(1, slot) / n_slot.gather(1, slot)  # (N, S), differentiable

    # background resamples: sum_k T / n_bg * bg = T * bg when any resample landed there
    has_bg = (n_slot[:, width] > 0).to(dtype)
    rgb = bg * (trans * has_bg)[:, None]

    # foreground resamples
    is_fg = slot < width
    fg_ray, fg_k = is_fg.nonzero(as_tuple=True)
    sample = ray_offsets(counts)[fg_ray] + slot[fg_ray, fg_k]  # packed sample index
    lights = stratified_sphere_dirs(n_rays, light_grid, jitter, generator, device, dtype)[fg_ray, fg_k]
    n = F.normalize(normals[sample], dim=-1)
    cos = (n * lights).sum(-1)
    act = cos > 1e-6
    fg_ray, fg_k, sample, lights, n = fg_ray[act], fg_k[act], sample[act], lights[act], n[act]
    n_sec = int(act.sum())
    if n_sec == 0:
        return PBRResult(rgb, 0, int(is_fg.sum()))

    with torch.no_grad():
        if trace_secondary is None:
            vis = torch.ones(n_sec, device=device, dtype=dtype)
            ind = torch.zeros(n_sec, 3, device=device, dtype=dtype)
        else:
            vis, ind = trace_secondary(positions[sample].detach(), lights)
            vis = vis.reshape(-1).clamp(0.0, 1.0).to(dtype)
            ind = ind.reshape(-1, 3).to(dtype)
    lit = (vis > 0).nonzero(as_tuple=True)[0]
    e_lit = emitter(lights[lit]) * vis[lit, None]
    l_in = torch.zeros(n_sec, 3, device=device, dtype=e_lit.dtype).index_put((lit,), e_lit)
    if global_illumination:
        l_in = l_in + ind

    rough = roughness.reshape(-1, 1)[sample]
    metal = metallic.reshape(-1, 1)[sample]
    view = -ray_dirs[fg_ray]
    l_out = 4.0 * math.pi * brdf(n, view, lights, albedo[sample], rough, metal) * l_in
    rgb = rgb + segment_sum(w_tilde[fg_ray, fg_k][:, None] * l_out, fg_ray, n_rays)
    return PBRResult(rgb, n_sec, int(is_fg.sum()))
