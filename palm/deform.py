"""Canonicalisation: deformed (MANO-space) points -> canonical flat-hand points (spec section 3).

SNARF / Fast-SNARF style inverse linear blend skinning, in pure PyTorch:

* :class:`SkinningField` -- a fixed (not learned) voxel grid of the 16 LBS weights over the canonical
  cube ``c +- h``, filled from the canonical mesh by inverse-distance weighting of the nearest
  vertices, queried by trilinear interpolation with border clamping (``align_corners=True``: the
  grid's first and last samples sit on the cube's faces).
* :func:`canonicalize` -- solves ``sum_j w_j(x_c) T_j x_c = x_d`` with a batched Broyden solver from
  several initialisations ``x_c^0 = T_j^-1 x_d`` (one per candidate bone), removes duplicate roots,
  and in training returns ``x_c = x_c* - J^-1 (g(x_c*) - stopgrad(g(x_c*)))`` so that gradients reach
  the bone transforms (and ``x_d``) by the implicit-function theorem.
* :func:`select_min_sdf` -- the implicit union: keep the candidate with the smallest SDF.

Shapes: ``N`` deformed points, ``I`` candidates (initialisations) per point, 16 bones.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from palm.config import CanonicalConfig, DeformerConfig, PalmNetConfig

#: SDF given to invalid candidates / samples ("empty").
INVALID_SDF = 1e5


# ---------------------------------------------------------------------------------------------
# Linear blend skinning helpers
# ---------------------------------------------------------------------------------------------


def blend_transforms(weights: torch.Tensor, bone_T: torch.Tensor) -> torch.Tensor:
    """Linearly blended affine transforms ``A(x) = sum_j w_j T_j``.

    Args:
        weights: ``(M, J)`` skinning weights.
        bone_T: ``(J, 4, 4)`` bone transforms (canonical -> deformed).

    Returns:
        ``(M, 3, 4)`` the top three rows of the blended transforms.
    """
    n_bones = bone_T.shape[0]
    return (weights @ bone_T[:, :3, :].reshape(n_bones, 12)).reshape(-1, 3, 4)


def apply_affine(A: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``A (M, 3, 4)`` applied to points ``x (M, 3)`` -> ``(M, 3)``."""
    return (A[:, :, :3] @ x[:, :, None])[:, :, 0] + A[:, :, 3]


def lbs_points(x_canon: torch.Tensor, weights: torch.Tensor, bone_T: torch.Tensor) -> torch.Tensor:
    """Forward LBS of points: ``x_d = sum_j w_j T_j x_c``; ``(M,3), (M,J), (J,4,4) -> (M,3)``."""
    return apply_affine(blend_transforms(weights, bone_T), x_canon)


# ---------------------------------------------------------------------------------------------
# Skinning-weight field
# ---------------------------------------------------------------------------------------------


@dataclass
class SkinningField:
    """Voxel grid of LBS weights over the canonical cube.

    Attributes:
        grid: ``(1, J, R, R, R)`` weights, layout ``[.., z, y, x]`` (``grid_sample`` order).
        centre: ``(3,)`` cube centre ``c`` (metres).
        half_side: cube half side ``h`` (metres).
    """

    grid: torch.Tensor
    centre: torch.Tensor
    half_side: float

    @property
    def resolution(self) -> int:
        return self.grid.shape[-1]

    @property
    def n_bones(self) -> int:
        return self.grid.shape[1]

    def to(self, device: torch.device | str) -> SkinningField:
        return SkinningField(self.grid.to(device), self.centre.to(device), self.half_side)

    def voxel_centres(self) -> torch.Tensor:
        """``(R, R, R, 3)`` positions (metres) of the grid samples, indexed ``[z, y, x]``."""
        return voxel_centres(self.resolution, self.centre, self.half_side)

    @classmethod
    def from_hand(
        cls,
        canonical_vertices: torch.Tensor,
        skin_weights: torch.Tensor,
        cfg: PalmNetConfig | None = None,
    ) -> SkinningField:
        """Build the field from the canonical (flat, subject-shaped) mesh.

        Each grid sample gets ``w = sum_k W_k / d_k / sum_k 1 / d_k`` over its ``n_nearest`` nearest
        vertices, ``d_k`` clamped to ``[1e-4, 1]`` m.

        Args:
            canonical_vertices: ``(V, 3)`` metres.
            skin_weights: ``(V, J)`` LBS weights (rows sum to 1).
            cfg: model config (``canonical`` cube and ``deformer.skin_grid_res`` / ``n_nearest``).
        """
        from scipy.spatial import cKDTree

        cfg = cfg or PalmNetConfig()
        device = torch.as_tensor(canonical_vertices).device
        verts = torch.as_tensor(canonical_vertices).detach().double().cpu()
        weights = torch.as_tensor(skin_weights).detach().double().cpu()
        centre = torch.tensor(cfg.canonical.centre, dtype=torch.float64)
        res, k = cfg.deformer.skin_grid_res, min(cfg.deformer.n_nearest, verts.shape[0])
        points = voxel_centres(res, centre, cfg.canonical.half_side).reshape(-1, 3)
        dist, idx = cKDTree(verts.numpy()).query(points.numpy(), k=k)
        dist, idx = np.asarray(dist).reshape(-1, k), np.asarray(idx).reshape(-1, k)
        inv = 1.0 / torch.from_numpy(dist).clamp(1e-4, 1.0)  # (P, k)
        w = (inv[:, :, None] * weights[torch.from_numpy(idx)]).sum(1) / inv.sum(1, keepdim=True)
        grid = w.T.reshape(1, weights.shape[1], res, res, res).float().contiguous()
        return cls(
            grid.to(device),
            centre.float().to(device),
            float(cfg.canonical.half_side),
        )

    def query(self, x_canon: torch.Tensor) -> torch.Tensor:
        """Trilinear weights at canonical points ``(N, 3)`` -> ``(N, J)`` (border-clamped, differentiable in x)."""
        u = (x_canon - self.centre.to(x_canon)) / self.half_side
        out = torch.nn.functional.grid_sample(
            self.grid.to(x_canon),
            u.reshape(1, -1, 1, 1, 3),
            mode="bilinear",
            padding_mode="border",
            align_corners=True,
        )
        return out.reshape(self.n_bones, -1).T

    def forward_skin(self, x_canon: torch.Tensor, bone_T: torch.Tensor) -> torch.Tensor:
        """``x_d = sum_j w_j(x_c) T_j x_c``: ``(N, 3)`` canonical, ``(J, 4, 4)`` -> ``(N, 3)`` deformed."""
        return lbs_points(x_canon, self.query(x_canon), bone_T.to(x_canon))


def voxel_centres(res: int, centre: torch.Tensor, half_side: float) -> torch.Tensor:
    """``(res, res, res, 3)`` sample positions over ``centre +- half_side`` (inclusive), indexed ``[z, y, x]``."""
    lin = torch.linspace(-1.0, 1.0, res, dtype=centre.dtype, device=centre.device)
    zz, yy, xx = torch.meshgrid(lin, lin, lin, indexing="ij")
    return centre + half_side * torch.stack([xx, yy, zz], dim=-1)


# ---------------------------------------------------------------------------------------------
# Root finding
# ---------------------------------------------------------------------------------------------


@dataclass
class CanonResult:
    """Canonical correspondences of ``N`` deformed points.

    Attributes:
        x_canon: ``(N, I, 3)`` candidate canonical points (metres); meaningless where not ``valid``.
            In training it carries the implicit-function gradient to ``bone_T`` and ``x_deformed``.
        valid: ``(N, I)`` bool: converged, inside the canonical cube, not a duplicate.
        bones: ``(N, I)`` long: the bone whose inverse transform initialised each candidate.
        residual: ``(N, I)`` final ``|x_d(x_c) - x_d|`` (metres, detached).
    """

    x_canon: torch.Tensor
    valid: torch.Tensor
    bones: torch.Tensor
    residual: torch.Tensor

    @property
    def any_valid(self) -> torch.Tensor:
        """``(N,)`` bool: the sample has at least one correspondence."""
        return self.valid.any(dim=1)


@dataclass
class BroydenResult:
    """Output of :func:`broyden`: best iterate ``x (M, 3)``, its residual norm ``(M,)``, ``J_inv (M, 3, 3)``,
    and the number of iterations run."""

    x: torch.Tensor
    residual: torch.Tensor
    J_inv: torch.Tensor
    n_iters: int


def broyden(
    fn,
    x0: torch.Tensor,
    J_inv0: torch.Tensor,
    max_iters: int,
    cvg_thresh: float,
    dvg_thresh: float,
) -> BroydenResult:
    """Batched Broyden ("good" inverse update) for independent 3-D problems ``fn(x, idx) = 0``.

    Only the still-active problems (not converged, not diverged) are evaluated at each iteration.

    Args:
        fn: ``fn(x (A, 3), idx (A,) long) -> residual (A, 3)`` for the problems ``idx``.
        x0: ``(M, 3)`` initial guesses.
        J_inv0: ``(M, 3, 3)`` initial inverse Jacobians.
        max_iters: iteration cap.
        cvg_thresh: a problem stops when ``|residual| < cvg_thresh``.
        dvg_thresh: a problem stops (diverged) when ``|residual| > dvg_thresh``.

    Returns:
        :class:`BroydenResult` with the lowest-residual iterate of each problem.
    """
    m = x0.shape[0]
    all_idx = torch.arange(m, device=x0.device)
    x, J_inv = x0.clone(), J_inv0.clone()
    g = fn(x, all_idx)
    norm = g.norm(dim=-1)
    best_x, best_norm = x.clone(), norm.clone()
    active = ((norm > cvg_thresh) & (norm < dvg_thresh)).nonzero().squeeze(1)
    n_iters = 0
    while active.numel() > 0 and n_iters < max_iters:
        n_iters += 1
        xa, ga, Ja = x[active], g[active], J_inv[active]
        dx = -(Ja @ ga[:, :, None])[:, :, 0]
        xn = xa + dx
        gn = fn(xn, active)
        dg = gn - ga
        J_dg = (Ja @ dg[:, :, None])[:, :, 0]
        dx_J = (dx[:, None, :] @ Ja)[:, 0, :]
        denom = (dx * J_dg).sum(-1)
        ok = denom.abs() > 1e-20
        safe = torch.where(ok, denom, torch.ones_like(denom))
        update = ((dx - J_dg)[:, :, None] * dx_J[:, None, :]) / safe[:, None, None]
        Ja = Ja + torch.where(ok[:, None, None], update, torch.zeros_like(update))
        x[active], g[active], J_inv[active] = xn, gn, Ja
        na = gn.norm(dim=-1)
        better = na < best_norm[active]
        best_x[active] = torch.where(better[:, None], xn, best_x[active])
        best_norm[active] = torch.where(better, na, best_norm[active])
        keep = (na > cvg_thresh) & (na < dvg_thresh) & torch.isfinite(na)
        active = active[keep]
    return BroydenResult(best_x, best_norm, J_inv, n_iters)


def _deformer_cfg(cfg: PalmNetConfig | DeformerConfig | None) -> DeformerConfig:
    if cfg is None:
        return DeformerConfig()
    return cfg.deformer if isinstance(cfg, PalmNetConfig) else cfg


def initial_bones(
    x_deformed: torch.Tensor, bone_T_inv: torch.Tensor, field: SkinningField, n_inits: int
) -> torch.Tensor:
    """The ``n_inits`` bones to start from, per point: ``(N, 3) -> (N, I)`` long.

    With fewer than all bones, bone ``j`` is scored by its own weight ``w_j(T_j^-1 x_d)`` at its rigid
    inverse (a point carried rigidly by bone ``j`` lands where ``w_j`` is large); highest first.
    """
    n, n_bones = x_deformed.shape[0], bone_T_inv.shape[0]
    if n_inits >= n_bones:
        return torch.arange(n_bones, device=x_deformed.device).expand(n, n_bones)
    x_rigid = _rigid_inverse(x_deformed, bone_T_inv)  # (N, J, 3)
    w = field.query(x_rigid.reshape(-1, 3)).reshape(n, n_bones, n_bones)
    score = torch.diagonal(w, dim1=1, dim2=2)  # (N, J): w_j at T_j^-1 x_d
    return score.topk(n_inits, dim=1).indices


def _rigid_inverse(x_deformed: torch.Tensor, bone_T_inv: torch.Tensor) -> torch.Tensor:
    """``T_j^-1 x_d`` for every bone: ``(N, 3), (J, 4, 4) -> (N, J, 3)``."""
    return torch.einsum("jab,nb->nja", bone_T_inv[:, :3, :3], x_deformed) + bone_T_inv[None, :, :3, 3]


def canonicalize(
    x_deformed: torch.Tensor,
    bone_T: torch.Tensor,
    field: SkinningField,
    cfg: PalmNetConfig | DeformerConfig | None = None,
    training: bool = False,
) -> CanonResult:
    """Find the canonical correspondences of deformed points by inverse LBS (SNARF).

    Args:
        x_deformed: ``(N, 3)`` points in MANO space (metres). May carry a graph (training).
        bone_T: ``(16, 4, 4)`` canonical -> MANO-space bone transforms ``T_j``. May carry a graph.
        field: the skinning-weight field of the subject.
        cfg: model or deformer config (``n_inits``, ``max_iters``, thresholds, ``dedup_tol``).
        training: attach implicit-function gradients (otherwise everything is detached).

    Returns:
        :class:`CanonResult` with ``I = min(n_inits, 16)`` candidates per point.
    """
    dcfg = _deformer_cfg(cfg)
    n = x_deformed.shape[0]
    n_bones = bone_T.shape[0]
    n_inits = min(dcfg.n_inits, n_bones)
    xd = x_deformed.detach()
    xd = xd if xd.dtype == torch.float64 else xd.float()
    T = bone_T.detach().to(xd)
    T_inv = torch.linalg.inv(T)

    bones = initial_bones(xd, T_inv, field, n_inits)  # (N, I)
    x0 = _rigid_inverse(xd, T_inv).gather(1, bones[:, :, None].expand(n, n_inits, 3)).reshape(-1, 3)
    target = xd[:, None, :].expand(n, n_inits, 3).reshape(-1, 3)

    A0 = blend_transforms(field.query(x0), T)
    J_inv0 = torch.linalg.inv(A0[:, :, :3])
    J_inv0 = torch.where(torch.isfinite(J_inv0), J_inv0, torch.zeros_like(J_inv0))

    def residual(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return field.forward_skin(x, T) - target[idx]

    with torch.no_grad():
        sol = broyden(residual, x0, J_inv0, dcfg.max_iters, dcfg.cvg_thresh, dcfg.dvg_thresh)
    x_star = sol.x.reshape(n, n_inits, 3)
    res = sol.residual.reshape(n, n_inits)

    centre = field.centre.to(xd)
    inside = ((x_star - centre).abs() <= field.half_side).all(-1)
    valid = (res < dcfg.cvg_thresh) & inside & torch.isfinite(res)
    valid = _drop_duplicates(x_star, valid, dcfg.dedup_tol * 2.0 * field.half_side)

    x_canon = x_star
    if training and (bone_T.requires_grad or x_deformed.requires_grad):
        x_canon = _attach_ift_gradient(x_star, valid, x_deformed, bone_T, field)
    return CanonResult(x_canon, valid, bones, res)


def _drop_duplicates(x: torch.Tensor, valid: torch.Tensor, tol: float) -> torch.Tensor:
    """Invalidate candidates closer than ``tol`` to an earlier valid candidate of the same point.

    Args:
        x: ``(N, I, 3)``; valid: ``(N, I)`` bool.
    """
    n_cand = x.shape[1]
    if n_cand < 2:
        return valid
    dist = torch.cdist(x, x)  # (N, I, I)
    earlier = torch.ones(n_cand, n_cand, dtype=torch.bool, device=x.device).tril(-1)  # [k, i]: i < k
    dup = (dist < tol) & earlier & valid[:, None, :]
    return valid & ~dup.any(-1)


def exact_jacobian(x_canon: torch.Tensor, bone_T: torch.Tensor, field: SkinningField) -> torch.Tensor:
    """``d x_d / d x_c`` of forward skinning (including the weight-field gradient): ``(M,3) -> (M,3,3)``."""
    with torch.enable_grad():
        x = x_canon.detach().requires_grad_(True)
        y = field.forward_skin(x, bone_T.detach())
        rows = [torch.autograd.grad(y[:, k].sum(), x, retain_graph=k < 2)[0] for k in range(3)]
    return torch.stack(rows, dim=1)


def _attach_ift_gradient(
    x_star: torch.Tensor,
    valid: torch.Tensor,
    x_deformed: torch.Tensor,
    bone_T: torch.Tensor,
    field: SkinningField,
) -> torch.Tensor:
    """``x_c = x_c* - J^-1 (g - stopgrad(g))`` with ``g = x_d(x_c*; T) - x_d`` on the valid candidates.

    ``J`` is the exact Jacobian of forward skinning at the solution (the solver's Broyden estimate is
    only approximate), so ``d x_c / d T = -J^-1 d x_d / d T`` and ``d x_c / d x_d = J^-1`` exactly.
    """
    n, n_inits, _ = x_star.shape
    flat_valid = valid.reshape(-1).nonzero().squeeze(1)
    if flat_valid.numel() == 0:
        return x_star
    xs = x_star.reshape(-1, 3)[flat_valid].detach()
    J_inv = torch.linalg.inv(exact_jacobian(xs, bone_T, field)).detach()
    point = flat_valid // n_inits
    g = lbs_points(xs, field.query(xs).detach(), bone_T.to(xs)) - x_deformed.to(xs)[point]
    x_c = xs - (J_inv @ (g - g.detach())[:, :, None])[:, :, 0]
    out = x_star.reshape(-1, 3).index_put((flat_valid,), x_c)
    return out.reshape(n, n_inits, 3)


def deform_normals(
    x_canon: torch.Tensor, normals_canon: torch.Tensor, bone_T: torch.Tensor, field: SkinningField
) -> torch.Tensor:
    """Canonical SDF gradients -> unit deformed-space normals with the blended rotation (spec: ``use_j_inv=false``).

    ``n_d = normalize((sum_j w_j(x_c) R_j) n_c)``; ``(N, 3), (N, 3), (J, 4, 4) -> (N, 3)``.
    """
    A = blend_transforms(field.query(x_canon), bone_T.to(x_canon))
    n = (A[:, :, :3] @ normals_canon[:, :, None])[:, :, 0]
    return n / n.norm(dim=-1, keepdim=True).clamp_min(1e-12)


# ---------------------------------------------------------------------------------------------
# Correspondence selection
# ---------------------------------------------------------------------------------------------


def select_min_sdf(sdf: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Implicit union over candidates: the minimum-SDF valid candidate.

    Args:
        sdf: ``(N, I)`` per-candidate SDF (any value where invalid).
        valid: ``(N, I)`` bool.

    Returns:
        ``sdf_min (N,)`` (``INVALID_SDF`` where no candidate is valid; differentiable), ``index (N,)``
        long of the chosen candidate, ``any_valid (N,)`` bool.
    """
    masked = torch.where(valid, sdf, torch.full_like(sdf, INVALID_SDF))
    sdf_min, index = masked.min(dim=1)
    return sdf_min, index, valid.any(dim=1)


def gather_candidate(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Pick one candidate per point: ``values (N, I, ...)``, ``index (N,)`` -> ``(N, ...)``."""
    idx = index.reshape(-1, 1, *([1] * (values.dim() - 2))).expand(-1, 1, *values.shape[2:])
    return values.gather(1, idx).squeeze(1)


def canonical_cube(cfg: CanonicalConfig) -> tuple[torch.Tensor, float]:
    """The canonical cube ``(centre (3,), half_side)`` of a config."""
    return torch.tensor(cfg.centre), float(cfg.half_side)
