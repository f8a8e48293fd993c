"""Multiresolution hash-grid encoding (spec section 5.1) with a progressive level mask.

Two backends share ONE parameter vector and therefore one ``state_dict``:

* ``"torch"``: a pure-PyTorch twin, vectorised over points, levels and the 8 cell corners;
* ``"tcnn"``: tiny-cuda-nn's ``HashGrid`` (fp32), used only on CUDA when it can be imported.

The twin reproduces tiny-cuda-nn's grid exactly, so weights move between the two:

* level scale ``s_l = 2^(l * log2 b) * N_min - 1`` (float32) and resolution ``R_l = ceil(s_l) + 1``;
* grid position ``p * s_l + 0.5``: integer cell ``floor(.)`` and trilinear fraction;
* table size of a level ``T_l = min(2^log2_T, next_multiple_of_8(R_l^3))``, levels concatenated
  into one flat vector of ``sum_l T_l * F`` floats laid out ``[level][entry][feature]``;
* a corner's entry: dense ``x + y R + z R^2`` when ``R^3 <= T_l``, else the spatial hash
  ``(x * 1) xor (y * 2654435761) xor (z * 805459861)`` in uint32 arithmetic; then ``mod T_l``;
* initialisation uniform in ``[-1e-4, 1e-4]``.

Inputs are normalised canonical points ``p_hat`` in ``[0, 1]^3`` (see :func:`to_unit_cube`); the hash
part clamps them to the unit cube, the optional ``include_xyz`` part (``2 p_hat - 1``) does not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from palm.backends import has_cuda, tcnn_module
from palm.config import CanonicalConfig, HashGridConfig

#: Spatial-hash primes of tiny-cuda-nn's coherent prime hash (first dimension uses 1).
HASH_PRIMES = (1, 2654435761, 805459861)
_UINT32 = 0xFFFFFFFF
#: Corner offsets in tiny-cuda-nn's order: bit ``d`` of the corner index selects ``+1`` along dim ``d``.
_CORNERS = torch.tensor([[(c >> d) & 1 for d in range(3)] for c in range(8)], dtype=torch.long)


@dataclass(frozen=True)
class GridLevel:
    """Geometry of one level of the grid (all sizes in table entries, not floats)."""

    scale: float
    """``s_l`` (float32 value): grid position is ``p * scale + 0.5``."""
    resolution: int
    offset: int
    """First entry of the level in the concatenated table."""
    size: int
    """``T_l``: number of entries of the level."""
    dense: bool
    """True when the level is indexed densely (``R^3 <= T_l``), False when hashed."""


def grid_levels(cfg: HashGridConfig) -> list[GridLevel]:
    """The per-level layout tiny-cuda-nn builds for ``cfg`` (float32 arithmetic as on the GPU)."""
    log2_scale = np.log2(np.float32(cfg.per_level_scale), dtype=np.float32)
    max_entries = 1 << cfg.log2_hashmap_size
    levels, offset = [], 0
    for level in range(cfg.n_levels):
        scale = np.float32(np.exp2(np.float32(level) * log2_scale, dtype=np.float32))
        scale = np.float32(scale * np.float32(cfg.base_resolution) - np.float32(1.0))
        resolution = math.ceil(float(scale)) + 1
        dense_entries = min(resolution**3, (1 << 32) // 2 - 1)
        size = min(max_entries, -(-dense_entries // 8) * 8)
        levels.append(GridLevel(float(scale), resolution, offset, size, resolution**3 <= size))
        offset += size
    return levels


def n_params(cfg: HashGridConfig) -> int:
    """Number of floats of the flat parameter vector (same as tiny-cuda-nn's ``n_params``)."""
    return sum(level.size for level in grid_levels(cfg)) * cfg.n_features_per_level


def active_levels(cfg: HashGridConfig, step: int | None) -> int:
    """``L_act(t) = min(start_level + max(t - start_step, 0) // update_steps, n_levels)``; all if None."""
    if step is None:
        return cfg.n_levels
    return min(cfg.start_level + max(step - cfg.start_step, 0) // cfg.update_steps, cfg.n_levels)


def to_unit_cube(x: torch.Tensor, canonical: CanonicalConfig) -> torch.Tensor:
    """Canonical points in metres ``(..., 3)`` -> ``p_hat = (x - c) / (2h) + 0.5`` ``(..., 3)``."""
    centre = x.new_tensor(canonical.centre)
    return (x - centre) / (2.0 * canonical.half_side) + 0.5


def hash_corner_index(corner: torch.Tensor, level: GridLevel) -> torch.Tensor:
    """Entry index inside one level for integer corner coordinates ``(..., 3)`` (int64) -> ``(...)``."""
    return _corner_index(corner, torch.tensor(level.resolution), torch.tensor(level.size), torch.tensor(level.dense))


def _corner_index(
    corner: torch.Tensor, resolution: torch.Tensor, size: torch.Tensor, dense: torch.Tensor
) -> torch.Tensor:
    """Vectorised entry index; ``resolution``, ``size`` and ``dense`` broadcast against ``corner[..., 0]``."""
    x, y, z = corner.unbind(-1)
    dense_index = x + y * resolution + z * resolution * resolution
    hashed = (x * HASH_PRIMES[0]) & _UINT32
    hashed = hashed ^ ((y * HASH_PRIMES[1]) & _UINT32)
    hashed = hashed ^ ((z * HASH_PRIMES[2]) & _UINT32)
    return torch.remainder(torch.where(dense, dense_index, hashed), size)


def encode_torch(
    p_hat: torch.Tensor, params: torch.Tensor, levels: list[GridLevel], n_features: int, n_active: int
) -> torch.Tensor:
    """Pure-PyTorch hash-grid lookup.

    Args:
        p_hat: ``(N, 3)`` points in ``[0, 1]^3`` (float32).
        params: ``(n_params,)`` flat table, layout ``[level][entry][feature]``.
        levels: :func:`grid_levels` of the config.
        n_features: features per level ``F``.
        n_active: levels ``< n_active`` are looked up, the others are zero (and skipped).

    Returns:
        ``(N, L * F)`` features, level-major (``[l * F + f]``).
    """
    n_points, n_levels = p_hat.shape[0], len(levels)
    out = p_hat.new_zeros(n_points, n_levels, n_features)
    if n_active <= 0 or n_points == 0:
        return out.reshape(n_points, n_levels * n_features)
    act = levels[:n_active]
    dev = p_hat.device
    scale = torch.tensor([lv.scale for lv in act], dtype=torch.float32, device=dev)
    # tcnn computes fmaf(scale, p, 0.5) in float32 (one rounding): float64 then float32 emulates it.
    pos = (p_hat.double()[:, None, :] * scale.double()[None, :, None] + 0.5).float()  # (N, La, 3)
    cell = torch.floor(pos).detach()
    frac = pos - cell  # differentiable w.r.t. p_hat (d frac / d p = scale)
    # Both candidate coordinates (cell, cell + 1) per dimension: (N, La, 3, 2). The 8 corners are the
    # outer combinations, flattened as z*4 + y*2 + x = tcnn's corner order (bit d selects +1 on dim d).
    both = torch.stack([cell, cell + 1], dim=-1).long()

    bits = torch.stack([1.0 - frac, frac], dim=-1)  # (N, La, 3, 2) linear weights per dimension
    table = params.view(-1, n_features)

    # Resolutions grow with the level, so the dense levels come first and the hashed ones after.
    n_dense = sum(lv.dense for lv in act)
    feats = []
    for lo, hi in ((0, n_dense), (n_dense, n_active)):
        if lo == hi:
            continue
        group = act[lo:hi]
        if group[0].dense:
            res = torch.tensor([lv.resolution for lv in group], dtype=torch.long, device=dev)
            strides = torch.stack([torch.ones_like(res), res, res * res], dim=-1)[None, :, :, None]
            idx = _outer8(both[:, lo:hi] * strides, torch.add)
            size = torch.tensor([lv.size for lv in group], dtype=torch.long, device=dev)[None, :, None]
            idx = torch.remainder(idx, size)  # wraps only at the upper border, as tcnn does
        else:
            primes = torch.tensor(HASH_PRIMES, dtype=torch.long, device=dev)[None, None, :, None]
            idx = _outer8((both[:, lo:hi] * primes) & _UINT32, torch.bitwise_xor)
            mask = torch.tensor([lv.size - 1 for lv in group], dtype=torch.long, device=dev)[None, :, None]
            idx = idx & mask  # hashed levels have T = 2^k entries: mod T == & (T - 1)
        offset = torch.tensor([lv.offset for lv in group], dtype=torch.long, device=dev)[None, :, None]
        values = nn.functional.embedding(idx + offset, table)  # (N, Lg, 8, F)
        weight = _outer8(bits[:, lo:hi], torch.mul)  # (N, Lg, 8)
        feats.append((values * weight[..., None]).sum(2))  # (N, Lg, F)
    out_active = feats[0] if len(feats) == 1 else torch.cat(feats, dim=1)
    if n_active < n_levels:
        out = torch.cat([out_active, out[:, n_active:]], dim=1)
    else:
        out = out_active
    return out.reshape(n_points, n_levels * n_features)


def _outer8(t: torch.Tensor, op) -> torch.Tensor:
    """Combine per-dimension pairs ``t (..., 3, 2)`` into the 8 corners ``(..., 8)`` with ``op``,
    corner ``c = 4 bz + 2 by + bx`` taking ``t[..., d, b_d]``."""
    x, y, z = t.unbind(-2)
    out = op(op(z[..., :, None, None], y[..., None, :, None]), x[..., None, None, :])
    return out.reshape(*t.shape[:-2], 8)


class HashGridEncoding(nn.Module):
    """Hash-grid encoding ``p_hat (N, 3) -> (N, cfg.out_dim)`` with a progressive level mask.

    Output layout: ``[2 p_hat - 1 (3, if include_xyz), level 0 features (F), level 1 (F), ...]``.
    Features of inactive levels are exactly zero (hard mask), see :meth:`set_step`. A new encoding
    has all levels active (inference / personalisation); training calls ``set_step(step)``.

    Args:
        cfg: the grid hyper-parameters.
        backend: ``"auto"`` (tiny-cuda-nn when importable and CUDA exists), ``"torch"`` or ``"tcnn"``.
            With ``"tcnn"``/``"auto"`` a CPU input still runs through the twin, with the same weights.
    """

    def __init__(self, cfg: HashGridConfig, backend: str = "auto"):
        super().__init__()
        if backend not in ("auto", "torch", "tcnn"):
            raise ValueError(f"unknown hash-grid backend {backend!r}")
        self.cfg = cfg
        self.levels = grid_levels(cfg)
        self.n_active_levels = cfg.n_levels
        self.params = nn.Parameter(torch.empty(n_params(cfg)).uniform_(-1e-4, 1e-4))
        self._tcnn = None
        tcnn = tcnn_module() if backend in ("auto", "tcnn") else None
        if backend == "tcnn" and (tcnn is None or not has_cuda()):
            raise RuntimeError("the tcnn backend needs tinycudann and a CUDA device")
        if tcnn is not None and has_cuda():
            enc = tcnn.Encoding(3, cfg.tcnn_dict(), dtype=torch.float32)
            if enc.params.numel() != self.params.numel():
                raise RuntimeError(f"tcnn grid has {enc.params.numel()} params, the twin {self.params.numel()}")
            # Keep the tcnn module out of the module tree: the one parameter is ours (see forward).
            object.__setattr__(self, "_tcnn", enc)

    @property
    def backend(self) -> str:
        """``"tcnn"`` or ``"torch"``: which implementation a CUDA input runs through."""
        return "tcnn" if self._tcnn is not None else "torch"

    @property
    def out_dim(self) -> int:
        return self.cfg.out_dim

    def set_step(self, step: int | None) -> int:
        """Set the active levels for training step ``step`` (``None``: all). Returns ``L_act``."""
        self.n_active_levels = active_levels(self.cfg, step)
        return self.n_active_levels

    def level_mask(self) -> torch.Tensor:
        """``(L,)`` float mask of the active levels."""
        return (torch.arange(self.cfg.n_levels) < self.n_active_levels).float()

    def forward(self, p_hat: torch.Tensor) -> torch.Tensor:
        """Encode ``p_hat (N, 3)`` in ``[0, 1]^3`` -> ``(N, out_dim)`` float32."""
        p_hat = p_hat.float()
        p_grid = p_hat.clamp(0.0, 1.0)
        n_feat = self.cfg.n_features_per_level
        if self._tcnn is not None and p_hat.is_cuda:
            self._tcnn.params = self.params  # tcnn's forward reads ``self.params``: point it at ours
            feats = self._tcnn(p_grid.contiguous()).float()
            if self.n_active_levels < self.cfg.n_levels:
                mask = self.level_mask().to(feats.device).repeat_interleave(n_feat)
                feats = feats * mask
        else:
            feats = encode_torch(p_grid, self.params, self.levels, n_feat, self.n_active_levels)
        if self.cfg.include_xyz:
            feats = torch.cat([2.0 * p_hat - 1.0, feats], dim=-1)
        return feats

    def extra_repr(self) -> str:
        return (
            f"levels={self.cfg.n_levels}, features={self.cfg.n_features_per_level}, "
            f"T=2^{self.cfg.log2_hashmap_size}, params={self.params.numel()}, backend={self.backend}"
        )
