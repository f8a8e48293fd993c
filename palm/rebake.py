"""Fast re-baking of the prior for the PCA sliders: ``palm.bake.bake_from_prior`` with caches.

A slider move changes only the shape or appearance code. Everything else a bake computes is the
same from one move to the next: the grid over the canonical hand's box, the geometry hash
encoding of the grid points (most of the cost: the grid and the prior's weights are fixed), the
flat-hand pose code, the skinning field of the rig shape. :class:`PriorBaker` keeps those and runs
the prior's own geometry network (``GeometryNetwork.forward``) on the grid with its hash encoding
served from the cache, so a shape move costs the geometry MLP on the grid, marching cubes and the
material network at the new vertices; an appearance move only the material network.

Two kinds of baker. ``exact=True`` evaluates the geometry feature (``PalmNet.canonical_sdf``) and
the radiance hash features at the new vertices, and equals ``bake_from_prior`` at the same
resolution (a test compares them). ``exact=False`` (the coarse preview of a slider move) also
caches the radiance hash features on the grid and interpolates them, with the geometry feature,
trilinearly at the vertices (marching cubes puts every vertex on a grid edge, so this is linear
interpolation along that edge): the mesh is the same, the material differs slightly, and no hash
lookup runs per move.
"""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from palm.bake import (
    RIG_FILL,
    BakedAvatar,
    fill_from_rig,
    rig_sdf,
    silhouette_level,
    surface_from_volume,
    vertex_normals,
)
from palm.deform import SkinningField
from palm.fields.encoding import to_unit_cube
from palm.jobs import check_cancel

#: Box margin around the rest hand (metres), as ``bake_from_prior``'s default.
MARGIN = 0.015
#: Points per chunk when building the grid cache (the cancel token is checked between chunks).
CHUNK = 65536
#: Points per geometry-network call on the grid (cache-sized blocks run faster than one big one).
GEOMETRY_CHUNK = 32768


class CachedEncoding(nn.Module):
    """A hash encoding computed once for a fixed point set (the bake grid), read back on use.

    Stands in for ``GeometryNetwork.encoding`` in a view of the network (:func:`with_encoding`):
    the network's forward runs unchanged and receives these features for its points.
    """

    def __init__(self, features: torch.Tensor):
        super().__init__()
        self.features = features

    @property
    def out_dim(self) -> int:
        return int(self.features.shape[1])

    def forward(self, p_hat: torch.Tensor) -> torch.Tensor:
        if p_hat.shape[0] != self.features.shape[0]:
            raise ValueError(f"cached encoding of {self.features.shape[0]} points asked for {p_hat.shape[0]}")
        return self.features


def with_encoding(network: nn.Module, encoding: nn.Module) -> nn.Module:
    """A view of ``network`` (same weights, same forward) whose ``encoding`` sub-module is ``encoding``.

    The network itself is not touched (other threads may be rendering with it).
    """
    view = copy.copy(network)
    view._modules = {**network._modules, "encoding": encoding}
    return view


@dataclass
class _Grid:
    """The cached bake grid of one (rig shape, resolution)."""

    lo: np.ndarray  # (3,) metres
    step: float
    counts: tuple[int, int, int]
    blocks: list[tuple[torch.Tensor, nn.Module]]
    """The grid points (n, 3) (canonical, metres) in blocks, each with a view of the prior's geometry
    network that reads the block's cached hash encoding."""
    h_r: np.ndarray | None  # (P, Dr) radiance hash features of the grid points (interpolating bakers)
    rest_v: torch.Tensor  # (V, 3) rest vertices of the rig
    rest_j: torch.Tensor  # (16, 3)
    rig: torch.Tensor | None  # (P,) the rig's SDF at the grid points (with a rig fill)


@dataclass
class _Surface:
    """The last extracted surface (reused when only the appearance code changes)."""

    key: bytes
    verts: np.ndarray  # (V, 3) float32
    faces: np.ndarray  # (F, 3) int32
    normals: np.ndarray  # (V, 3)
    weights: np.ndarray  # (V, 16)
    h_r: torch.Tensor  # (V, Dr) radiance hash features
    feature: torch.Tensor  # (V, 13) geometry feature
    closed: bool  # the box held the whole surface (palm.bake.encloses)


class PriorBaker:
    """Bakes one prior at one resolution, caching what does not depend on the codes.

    Args:
        prior: a :class:`palm.prior.Prior`.
        resolution: cells along the box's longest side (as ``bake_from_prior``).
        betas: rig shape (None = mean shape); a new shape needs a new baker.
        exact: material inputs evaluated at the vertices (the refine pass) or interpolated from the
            grid (the coarse preview; caches the radiance hash features of the grid too).
        rig_fill: as ``bake_from_prior`` (the rig's SDF on the grid is cached too).

    Thread-safe: one bake at a time (jobs replace each other, the lock keeps the caches whole).
    """

    def __init__(self, prior: Any, resolution: int, betas: Any = None, exact: bool = True,
                 rig_fill: float | None = RIG_FILL):
        self.prior = prior
        self.model = prior.model
        self.resolution = int(resolution)
        self.exact = bool(exact)
        self.rig_fill = rig_fill
        hand = self.model.hand
        dev = self.model.light.device
        self.betas = torch.zeros(1, hand.n_betas, device=dev) if betas is None else torch.as_tensor(
            np.asarray(betas, np.float32), device=dev).reshape(1, -1)
        self._lock = threading.Lock()
        self._grid: _Grid | None = None
        self._skin = None
        self._surface: _Surface | None = None
        with torch.no_grad():
            self._z_p = self.model.pose_encoder(torch.zeros(1, 16, 3, device=dev))[0]  # the flat hand

    @property
    def ready(self) -> bool:
        """Whether the grid cache exists (the first bake builds it)."""
        return self._grid is not None

    def _build_grid(self, cancel=None) -> _Grid:
        model = self.model
        rest_v, rest_j = model.hand.rest(self.betas)
        lo = rest_v[0].min(0).values - MARGIN
        hi = rest_v[0].max(0).values + MARGIN
        step = float((hi - lo).max()) / self.resolution
        counts = tuple(int(np.ceil(float(hi[i] - lo[i]) / step)) + 1 for i in range(3))
        axes = [lo[i] + step * torch.arange(counts[i], device=lo.device) for i in range(3)]
        grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
        h_g, h_r = [], []
        for p in grid.split(CHUNK):
            check_cancel(cancel)
            h_g.append(model.geometry.encoding(to_unit_cube(p, model.cfg.canonical)))
            if not self.exact:
                h_r.append(model.radiance.encode(p))
        blocks = [(p, with_encoding(model.geometry, CachedEncoding(h)))
                  for p, h in zip(grid.split(GEOMETRY_CHUNK), torch.cat(h_g).split(GEOMETRY_CHUNK), strict=True)]
        rig = None if self.rig_fill is None else rig_sdf(model.hand, rest_v[0], grid.reshape(*counts, 3), step)
        return _Grid(lo.cpu().numpy(), step, counts, blocks, torch.cat(h_r).cpu().numpy() if h_r else None,
                     rest_v[0], rest_j[0], None if rig is None else rig.reshape(-1))

    def _geometry_grid(self, z_s: torch.Tensor) -> torch.Tensor:
        """Geometry feature (SDF in channel 0, metres) of the flat-hand pose code and ``z_s`` on the
        cached grid -> (P, 13): the geometry network's forward (as ``PalmNet.canonical_sdf``)."""
        cond = torch.cat([self._z_p, z_s])
        return torch.cat([geometry(p, cond.expand(p.shape[0], -1))[1] for p, geometry in self._grid.blocks])

    def _interpolate(self, verts: np.ndarray, *values: np.ndarray) -> list[torch.Tensor]:
        """Trilinear interpolation of per-grid-point ``values (P, C)`` at ``verts (V, 3)`` -> (V, C) tensors.

        NumPy on purpose: a few small gathers (only the vertices' cell corners are read), cheaper
        than torch's per-op overhead on a busy CPU.
        """
        g = self._grid
        counts = np.asarray(g.counts)
        u = np.clip((verts.astype(np.float64) - g.lo) / g.step, 0.0, counts - 1 - 1e-6)
        i0 = np.floor(u).astype(np.int64)
        frac = u - i0
        strides = np.array([counts[1] * counts[2], counts[2], 1], np.int64)
        base = i0 @ strides
        corners = []
        for corner in range(8):
            bits = np.array([(corner >> 2) & 1, (corner >> 1) & 1, corner & 1])
            corners.append((base + bits @ strides, np.where(bits.astype(bool), frac, 1.0 - frac).prod(-1)[:, None]))
        out = []
        for v in values:
            acc = sum(w * v[index] for index, w in corners)
            out.append(torch.as_tensor(acc.astype(np.float32), device=self.model.light.device))
        return out

    def _extract(self, z_s: torch.Tensor, key: bytes) -> _Surface:
        g = self._grid
        grid_feature = self._geometry_grid(z_s)
        level = silhouette_level(float(self.model.beta.detach()))  # as bake_from_prior: the rendered outline
        sdf = grid_feature[:, 0].cpu()
        if g.rig is not None:
            sdf = fill_from_rig(sdf, g.rig, level, self.rig_fill, g.step)
        volume = sdf.reshape(g.counts).numpy()
        verts, faces, closed = surface_from_volume(volume, level, g.step, g.lo, getattr(self.prior, "path", "prior"))
        verts, faces = verts.astype(np.float32), faces.astype(np.int32)
        model = self.model
        v_t = torch.as_tensor(verts, device=g.rest_v.device)
        if self._skin is None:
            self._skin = SkinningField.from_hand(g.rest_v, model.hand.skin_weights, model.cfg)
        weights = self._skin.query(v_t).clamp(min=0).cpu().numpy().astype(np.float32)
        weights /= np.maximum(weights.sum(1, keepdims=True), 1e-12)
        if self.exact:
            _, feature = model.canonical_sdf(v_t, z_s)
            h_r = model.radiance.encode(v_t)
        else:
            feature, h_r = self._interpolate(verts, grid_feature.cpu().numpy(), g.h_r)
        return _Surface(key, verts, faces, vertex_normals(verts, faces), weights, h_r, feature, closed)

    def bake(self, shape_coeffs=None, appearance_coeffs=None, shape_code=None, appearance_code=None,
             cancel=None) -> BakedAvatar:
        """The avatar for these coefficients (or codes, which override them), as ``bake_from_prior``.

        Args:
            shape_coeffs, appearance_coeffs: (K,) PCA coefficients (None = the mean subject).
            shape_code, appearance_code: (32,) codes (personalised avatars).
            cancel: a cancel token, checked while the grid cache is built.
        """
        model = self.model
        dev = model.light.device
        with self._lock, torch.no_grad():
            z_s, z_a = self.prior.codes_from_coeffs(shape_coeffs, appearance_coeffs)
            if shape_code is not None:
                z_s = torch.as_tensor(np.asarray(shape_code, np.float32), device=dev).reshape(-1)
            if appearance_code is not None:
                z_a = torch.as_tensor(np.asarray(appearance_code, np.float32), device=dev).reshape(-1)
            if self._grid is None:
                self._grid = self._build_grid(cancel)
            key = z_s.detach().cpu().numpy().astype(np.float32).tobytes()
            if self._surface is None or self._surface.key != key:
                self._surface = self._extract(z_s, key)
            s = self._surface
            ca = torch.cat([self._z_p, z_a]).expand(len(s.verts), -1)
            mat = model.material(s.h_r, s.feature, ca)
            return BakedAvatar(
                vertices=s.verts, faces=s.faces, normals=s.normals, skin_weights=s.weights,
                albedo=mat.albedo.cpu().numpy().astype(np.float32),
                roughness=mat.roughness.cpu().numpy().astype(np.float32),
                metallic=mat.metallic.cpu().numpy().astype(np.float32),
                joints=self._grid.rest_j.cpu().numpy().astype(np.float32),
                parents=np.asarray(model.hand.parents.cpu() if hasattr(model.hand.parents, "cpu")
                                   else model.hand.parents, np.int32).reshape(16),
                closed=s.closed,
            )
