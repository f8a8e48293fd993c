"""Volume rendering of packed ray samples: SDF -> density -> alpha -> weights -> per-ray values.

Samples are *packed*: one flat list of ``S`` intervals, sorted by ray and, within a ray, by
depth, with ``ray_indices`` (S,) naming each interval's ray (see
:class:`palm.render.sampling.SampleBatch`). Rays may have no sample at all; they render with
opacity 0. Everything here is differentiable with respect to densities/alphas and values.

Transmittance is a per-ray exclusive cumulative product; it is computed on a per-ray padded
``(N, M)`` view (``M`` = most samples of any ray) so that float32 precision does not depend on the
number of rays in the batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# ---------------------------------------------------------------------------------------------
# Packing helpers
# ---------------------------------------------------------------------------------------------


def ray_counts(ray_indices: torch.Tensor, n_rays: int) -> torch.Tensor:
    """(N,) long number of samples of each ray."""
    if ray_indices.numel() == 0:
        return torch.zeros(n_rays, dtype=torch.long, device=ray_indices.device)
    return torch.bincount(ray_indices, minlength=n_rays)[:n_rays]


def ray_offsets(counts: torch.Tensor) -> torch.Tensor:
    """(N,) long index of each ray's first sample in the packed list (exclusive cumsum of ``counts``)."""
    return torch.cumsum(counts, 0) - counts


def positions_in_ray(ray_indices: torch.Tensor, n_rays: int) -> torch.Tensor:
    """(S,) long rank of each sample within its ray (samples must be grouped by ray)."""
    offsets = ray_offsets(ray_counts(ray_indices, n_rays))
    return torch.arange(ray_indices.numel(), device=ray_indices.device) - offsets[ray_indices]


def packed_to_padded(
    values: torch.Tensor, ray_indices: torch.Tensor, n_rays: int, fill: float = 0.0, width: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scatter packed per-sample values into a per-ray padded tensor (differentiable).

    Args:
        values: (S, ...) per-sample values, grouped by ray.
        ray_indices: (S,) long ray of each sample.
        n_rays: N.
        fill: value of the padding.
        width: M, at least the largest count (default: the largest count).

    Returns:
        padded (N, M, ...) values and the (N, M) bool mask of real samples.
    """
    counts = ray_counts(ray_indices, n_rays)
    if width is None:
        width = int(counts.max()) if n_rays and counts.numel() else 0
    pos = positions_in_ray(ray_indices, n_rays)
    padded = values.new_full((n_rays, width) + tuple(values.shape[1:]), fill)
    padded = padded.index_put((ray_indices, pos), values)
    mask = torch.zeros(n_rays, width, dtype=torch.bool, device=values.device)
    mask[ray_indices, pos] = True
    return padded, mask


def segment_sum(values: torch.Tensor, ray_indices: torch.Tensor, n_rays: int) -> torch.Tensor:
    """Per-ray sum of packed values (differentiable).

    Args:
        values: (S,) or (S, C).
        ray_indices: (S,) long.
        n_rays: N.

    Returns:
        (N,) or (N, C).
    """
    out = values.new_zeros((n_rays,) + tuple(values.shape[1:]))
    return out.index_add(0, ray_indices, values)


# ---------------------------------------------------------------------------------------------
# Density and alpha
# ---------------------------------------------------------------------------------------------


def effective_beta(beta_param: torch.Tensor | float, beta_min: float = 1e-4) -> torch.Tensor | float:
    """The Laplace scale ``beta = |beta_param| + beta_min`` (spec 5.3)."""
    return abs(beta_param) + beta_min


def laplace_density(sdf: torch.Tensor, beta: torch.Tensor | float) -> torch.Tensor:
    """VolSDF density ``sigma = Psi_beta(-s) / beta`` (spec 5.3), negative SDF inside.

    ``Psi_beta`` is the CDF of a zero-mean Laplace distribution with scale ``beta``; evaluated as
    ``0.5 exp(-s/beta)`` outside and ``1 - 0.5 exp(s/beta)`` inside, which never overflows.

    Args:
        sdf: (...) signed distances (metres).
        beta: effective scale (> 0), a float or a tensor broadcastable to ``sdf``.

    Returns:
        (...) densities (1/metres).
    """
    outside = 0.5 * torch.exp(-sdf.clamp(min=0.0) / beta)
    inside = 1.0 - 0.5 * torch.exp(sdf.clamp(max=0.0) / beta)
    return torch.where(sdf >= 0, outside, inside) / beta


def alphas_from_density(sigma: torch.Tensor, deltas: torch.Tensor) -> torch.Tensor:
    """Interval opacity ``alpha = 1 - exp(-sigma * delta)``; (S,) each."""
    return 1.0 - torch.exp(-sigma * deltas)


# ---------------------------------------------------------------------------------------------
# Compositing
# ---------------------------------------------------------------------------------------------


def render_weights(alphas: torch.Tensor, ray_indices: torch.Tensor, n_rays: int) -> torch.Tensor:
    """Volume-rendering weights ``w_i = alpha_i * prod_{j<i} (1 - alpha_j)`` within each ray.

    Per ray, ``sum_i w_i = 1 - prod_i (1 - alpha_i)`` = the opacity (< 1 unless some alpha is 1).

    Args:
        alphas: (S,) packed interval opacities in [0, 1], grouped by ray and sorted by depth.
        ray_indices: (S,) long ray of each interval.
        n_rays: N.

    Returns:
        (S,) weights (differentiable w.r.t. ``alphas``).
    """
    if alphas.numel() == 0:
        return alphas.clone()
    padded, mask = packed_to_padded(alphas, ray_indices, n_rays, fill=0.0)
    one_minus = 1.0 - padded
    trans = torch.cumprod(torch.cat([torch.ones_like(one_minus[:, :1]), one_minus[:, :-1]], dim=1), dim=1)
    return (padded * trans)[mask]


def composite(values: torch.Tensor, alphas: torch.Tensor, ray_indices: torch.Tensor, n_rays: int) -> torch.Tensor:
    """Alpha-composite packed per-sample values along their rays.

    Args:
        values: (S, C) per-sample values (e.g. radiance).
        alphas: (S,) interval opacities, grouped by ray and sorted by depth.
        ray_indices: (S,) long.
        n_rays: N.

    Returns:
        (N, C) ``sum_i w_i values_i`` per ray (zeros for rays without samples).
    """
    weights = render_weights(alphas, ray_indices, n_rays)
    return segment_sum(weights[:, None] * values, ray_indices, n_rays)


@dataclass
class VolumeOutput:
    """Per-ray results of :func:`volume_render`.

    Attributes:
        weights: (S,) per-sample weights.
        opacity: (N,) accumulated opacity ``A = sum w``.
        depth: (N,) expected termination depth given a hit, ``sum w t / A`` (0 where ``A`` ~ 0).
        normals: (N, 3) ``sum w n`` (not renormalised; ``|normals| ~ A``), or None.
        rgb: (N, 3) ``sum w c`` (no background), or None.
    """

    weights: torch.Tensor
    opacity: torch.Tensor
    depth: torch.Tensor
    normals: torch.Tensor | None = None
    rgb: torch.Tensor | None = None


def volume_render(
    alphas: torch.Tensor,
    ray_indices: torch.Tensor,
    n_rays: int,
    t_mids: torch.Tensor,
    rgb: torch.Tensor | None = None,
    normals: torch.Tensor | None = None,
) -> VolumeOutput:
    """Weights, opacity, depth and optional colour/normal maps of packed samples.

    Args:
        alphas: (S,) interval opacities (grouped by ray, sorted by depth).
        ray_indices: (S,) long.
        n_rays: N.
        t_mids: (S,) ray parameter of each sample point (interval midpoint).
        rgb: (S, 3) per-sample radiance, optional.
        normals: (S, 3) per-sample unit normals, optional.

    Returns:
        :class:`VolumeOutput`.
    """
    weights = render_weights(alphas, ray_indices, n_rays)
    opacity = segment_sum(weights, ray_indices, n_rays)
    depth_sum = segment_sum(weights * t_mids, ray_indices, n_rays)
    depth = torch.where(opacity > 1e-6, depth_sum / opacity.clamp(min=1e-6), torch.zeros_like(depth_sum))
    out = VolumeOutput(weights=weights, opacity=opacity, depth=depth)
    if normals is not None:
        out.normals = segment_sum(weights[:, None] * normals, ray_indices, n_rays)
    if rgb is not None:
        out.rgb = segment_sum(weights[:, None] * rgb, ray_indices, n_rays)
    return out


def composite_background(rgb: torch.Tensor, opacity: torch.Tensor, bg: torch.Tensor | float) -> torch.Tensor:
    """``C + bg (1 - A)`` (spec 6.4), linear RGB.

    Args:
        rgb: (N, 3) composited colour without background.
        opacity: (N,) accumulated opacity.
        bg: (3,), (N, 3) or a scalar background colour.

    Returns:
        (N, 3).
    """
    bg_t = torch.as_tensor(bg, dtype=rgb.dtype, device=rgb.device)
    return rgb + bg_t * (1.0 - opacity)[:, None]
