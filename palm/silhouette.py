"""Fits of the baked hand's silhouette to the photo's mask (the photo-detail stage, :mod:`palm.detail`).

A :class:`PosedMesh` is a canonical mesh in one pose and camera, differentiable in canonical offsets.
Three fits move its silhouette onto the mask with the same point losses (:func:`_fit_silhouette`):

* :func:`fit_pose`: a small correction of the fingers' joint rotations and of the translation,
  when the pose comes from the photo's 2D landmarks (they say little about how a finger sits
  inside its outline); what it leaves, the later fits would take up as shape. The vertices'
  motion along the view rays pays (a turn towards the camera barely changes the silhouette).
* :func:`fit_thickness`: one offset along the normals for the whole hand (or per bone).
* :func:`fit_outline`: per-vertex canonical offsets, smooth, dearer along the view rays.

Losses: with ``s(p)`` the mask's signed distance in pixels (positive outside), every projected
vertex pays ``relu(s)^2`` and every visible rim vertex within ``band_px`` of the outline pays
``s^2``; uncovered hand pixels near the render pull their nearest rim vertex. Visibility is
re-rasterised every ``visibility_every`` steps (the losses are point losses on the projected
vertices, so no soft rasteriser is needed).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from palm.bake import BakedAvatar
from palm.config import DetailConfig
from palm.hand.lbs import axis_angle_to_matrix, rigid_chain, skinning_transforms
from palm.jobs import Emit, Progress, check_cancel, null_emit
from palm.render.raster import project_screen, rasterize


def uniform_laplacian(faces: Tensor, n_vertices: int) -> tuple[Tensor, Tensor]:
    """Edges and degrees for ``L x = x_i - mean_{j in N(i)} x_j``.

    Returns:
        ``(edges (E, 2) long, both directions, unique; degree (V,) float)``.
    """
    f = faces.long()
    e = torch.cat([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    e = torch.unique(torch.cat([e, e.flip(1)]), dim=0)
    degree = torch.bincount(e[:, 0], minlength=n_vertices).float().clamp(min=1)
    return e, degree


def laplacian(x: Tensor, edges: Tensor, degree: Tensor) -> Tensor:
    """``(V, C) -> (V, C)``: ``x_i - mean of its neighbours``."""
    acc = torch.zeros_like(x).index_add_(0, edges[:, 0], x[edges[:, 1]])
    return x - acc / degree[:, None]


def signed_mask_distance(mask: np.ndarray) -> np.ndarray:
    """(H, W) bool -> (H, W) float32 signed distance to the mask's edge in pixels (> 0 outside)."""
    from scipy.ndimage import distance_transform_edt

    mask = np.asarray(mask, bool)
    return (distance_transform_edt(~mask) - distance_transform_edt(mask)).astype(np.float32)


def sample_image(image: Tensor, xy: Tensor) -> Tensor:
    """Bilinear samples of an (H, W) image at continuous pixel coordinates (centre of pixel u at u + 0.5).

    Args:
        image: (H, W). xy: (N, 2) ``(x, y)``.

    Returns:
        (N,); border values outside the image.
    """
    h, w = image.shape
    grid = torch.stack([xy[:, 0] / w * 2 - 1, xy[:, 1] / h * 2 - 1], -1)[None, None]
    return F.grid_sample(image[None, None], grid, mode="bilinear", padding_mode="border", align_corners=False)[0, 0, 0]


# ---------------------------------------------------------------------------------------------
# A mesh in one pose and camera
# ---------------------------------------------------------------------------------------------


class PosedMesh:
    """A baked canonical mesh in one pose and camera: ``world(offsets)`` is differentiable.

    Args:
        mesh: the canonical mesh. bones: (16, 4, 4) (:func:`palm.hand.lbs.bone_transforms`).
        transl: (3,) world translation. K: (3, 3), Rt: (4, 4) the camera.
    """

    def __init__(self, mesh: BakedAvatar, bones: Any, transl: Any, K: Tensor, Rt: Tensor):
        self.weights = torch.as_tensor(mesh.skin_weights, dtype=torch.float32)
        self.rot, self.shift = self._blend(torch.as_tensor(bones, dtype=torch.float32),
                                           torch.as_tensor(transl, dtype=torch.float32))
        self.canonical = torch.as_tensor(mesh.vertices, dtype=torch.float32)
        self.faces = torch.as_tensor(mesh.faces, dtype=torch.long)
        self.K, self.Rt = K.float(), Rt.float()

    def _blend(self, bones: Tensor, transl: Tensor) -> tuple[Tensor, Tensor]:
        """Linear blend skinning of ``bones (16, 4, 4)``: per-vertex ``(rotation (V, 3, 3), shift (V, 3))``."""
        blend = torch.einsum("vj,jab->vab", self.weights, bones)
        return blend[:, :3, :3], blend[:, :3, 3] + transl

    def world(self, offsets: Tensor | None = None) -> Tensor:
        """(V, 3) posed vertices of ``canonical + offsets``."""
        return self._skin(self.rot, self.shift, offsets)

    def _skin(self, rot: Tensor, shift: Tensor, offsets: Tensor | None) -> Tensor:
        v = self.canonical if offsets is None else self.canonical + offsets
        return torch.einsum("vab,vb->va", rot, v) + shift

    def normals(self, world: Tensor) -> Tensor:
        """(V, 3) unit normals (area-weighted) of the posed positions ``world`` (from :meth:`world`)."""
        from palm.render.raster import vertex_normals as torch_normals

        return torch_normals(world, self.faces)

    def screen(self, world: Tensor) -> Tensor:
        """(V, 3) continuous pixel ``x, y`` and camera depth."""
        return project_screen(world, self.K, self.Rt)[0]

    def eye(self) -> Tensor:
        return -self.Rt[:3, :3].T @ self.Rt[:3, 3]

    def view_rays(self, world: Tensor) -> Tensor:
        """(V, 3) unit directions from the camera to the posed positions ``world``."""
        ray = world - self.eye()[None]
        return ray / ray.norm(dim=1, keepdim=True).clamp_min(1e-12)


def visible_vertices(screen: Tensor, faces: Tensor, height: int, width: int, tol: float = 2e-3,
                     frags=None) -> Tensor:
    """(V,) bool: the vertex is in the image and not behind the rasterised depth (``tol`` metres)."""
    frags = rasterize(screen[None], faces, height, width) if frags is None else frags
    x = screen[:, 0].floor().long()
    y = screen[:, 1].floor().long()
    inside = (x >= 0) & (x < width) & (y >= 0) & (y < height)
    depth = frags.depth[0][y.clamp(0, height - 1), x.clamp(0, width - 1)]
    covered = frags.face_id[0][y.clamp(0, height - 1), x.clamp(0, width - 1)] >= 0
    return inside & covered & (screen[:, 2] <= depth + tol)


# ---------------------------------------------------------------------------------------------
# The fits: thickness, outline, pose
# ---------------------------------------------------------------------------------------------


def fit_thickness(posed: PosedMesh, mask: np.ndarray, normals_canonical: np.ndarray, skin_weights: np.ndarray,
                  cfg: DetailConfig, emit: Emit = null_emit, cancel=None, step0: int = 0,
                  total: int = 1) -> tuple[Tensor, Tensor]:
    """The hand's thickness, fitted to the silhouette before the per-vertex offsets (:mod:`palm.detail`, step 3).

    Offsets ``t n_v`` along the canonical normals, within ``cfg.thickness_limit``; with
    ``cfg.thickness_per_bone`` one ``t_j`` per bone, blended by the skinning weights
    (``n_v sum_j w_vj t_j``). A hand that is too thin or too thick all round is corrected
    symmetrically, so the per-vertex offsets only fit what is left (offsets free per vertex,
    fitted from one view, swell the hand unevenly in depth, which other views show as lumps).

    Returns:
        ``(offsets (V, 3) metres, thickness (1,) or (J,) metres)``.
    """
    along = torch.as_tensor(normals_canonical, dtype=torch.float32)
    weights = torch.as_tensor(skin_weights, dtype=torch.float32)
    thickness = torch.zeros(weights.shape[1] if cfg.thickness_per_bone else 1, requires_grad=True)

    def bounded() -> Tensor:
        return cfg.thickness_limit * torch.tanh(thickness / cfg.thickness_limit)

    def offsets() -> Tensor:
        t = bounded()
        return ((weights @ t) if cfg.thickness_per_bone else t.expand(len(along)))[:, None] * along

    px_per_m = _px_per_m(posed)
    out = _fit_silhouette(posed, mask, [thickness], offsets,
                          lambda off: cfg.offset_l2 * (off * px_per_m * along).sum(1).pow(2).mean(),
                          cfg.thickness_steps, cfg, emit, cancel, step0, total, "detail: thickness", pull_uncovered=False)
    with torch.no_grad():
        return out, bounded()


def fit_outline(posed: PosedMesh, mask: np.ndarray, normals_canonical: np.ndarray, cfg: DetailConfig,
                emit: Emit = null_emit, cancel=None, step0: int = 0, total: int = 1,
                base: Tensor | None = None) -> Tensor:
    """Canonical per-vertex offsets that put the silhouette on ``mask`` (:mod:`palm.detail`, step 3): along
    ``normals_canonical`` only when ``cfg.tangential`` is 0, else also along the surface (dearer).

    Args:
        base: (V, 3) offsets already applied (:func:`fit_thickness`); only what is added to them is
            regularised.

    Returns:
        (V, 3) offsets in metres, ``base`` included.
    """
    along = torch.as_tensor(normals_canonical, dtype=torch.float32)
    fixed = torch.zeros(len(along), 3) if base is None else base.detach()
    free = torch.zeros(len(along), 3, requires_grad=True)

    def offsets() -> Tensor:
        return fixed + (free if cfg.tangential > 0 else (free * along).sum(1, keepdim=True) * along)

    edges, degree = uniform_laplacian(posed.faces, len(posed.canonical))
    px_per_m = _px_per_m(posed)
    with torch.no_grad():
        ray = posed.view_rays(posed.world())

    def regulariser(total: Tensor) -> Tensor:
        # offsets along the normals (a finger grows or thins all round) and, dearer by 1 / tangential,
        # along the surface; their component along the view ray (depth, which the photo cannot see) pays too
        off_px = (total - fixed) * px_per_m  # only what this stage adds
        normal_px = (off_px * along).sum(1)
        depth_px = (torch.einsum("vab,vb->va", posed.rot, off_px) * ray).sum(1)
        loss = cfg.offset_smooth * laplacian(off_px, edges, degree).pow(2).sum(1).mean() \
            + cfg.offset_l2 * normal_px.pow(2).mean() + cfg.depth_weight * depth_px.pow(2).mean()
        if cfg.tangential > 0:
            tangent_px = off_px - normal_px[:, None] * along
            loss = loss + cfg.offset_l2 / cfg.tangential * tangent_px.pow(2).sum(1).mean()
        return loss

    return _fit_silhouette(posed, mask, [free], offsets, regulariser, cfg.outline_steps, cfg, emit, cancel,
                           step0, total, "detail: outline")


def _px_per_m(posed: PosedMesh) -> float:
    """Pixels per metre at the mean depth of the unmoved mesh."""
    with torch.no_grad():
        return float(posed.K[0, 0]) / float(posed.screen(posed.world())[:, 2].mean())


def _fit_silhouette(posed: PosedMesh, mask: np.ndarray, params: list[Tensor], offsets_of, regulariser, steps: int,
                    cfg: DetailConfig, emit: Emit, cancel, step0: int, total: int, stage: str,
                    pull_uncovered: bool = True, lr: float | None = None, decay: bool = False) -> Tensor:
    """Adam on ``params`` so that ``offsets_of() (V, 3)`` puts the silhouette on the mask (step 3's
    losses; ``pull_uncovered``: uncovered hand pixels pull their nearest rim vertex) plus
    ``regulariser(offsets)``, with step ``lr`` (default ``cfg.outline_lr``; ``decay``: falling linearly to a
    tenth, so a fit whose rim set changes under it settles). A step that leaves a projected vertex
    non-finite is undone and ends the fit. Returns the final offsets (detached)."""
    h, w = mask.shape
    tensors = [t for p in params for t in (p["params"] if isinstance(p, dict) else [p])]
    last = [t.detach().clone() for t in tensors]
    sdf = torch.from_numpy(signed_mask_distance(mask))
    mask_t = torch.from_numpy(np.asarray(mask, bool))
    optim = torch.optim.Adam(params, lr=cfg.outline_lr if lr is None else lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optim, lambda k: 1 - 0.9 * k / max(steps, 1) if decay else 1.0)
    for step in range(steps):
        check_cancel(cancel)
        offsets = offsets_of()
        world = posed.world(offsets)
        screen = posed.screen(world)
        if not bool(torch.isfinite(screen).all()):  # (grid_sample's backward would also crash on it)
            with torch.no_grad():
                for t, v in zip(tensors, last, strict=True):
                    t.copy_(v)
            break
        last = [t.detach().clone() for t in tensors]
        if step % cfg.visibility_every == 0:  # rim vertices change slowly: re-rasterise every few steps
            with torch.no_grad():
                normals = posed.normals(world.detach())
                cos = (normals * posed.view_rays(world.detach())).sum(1).abs()
                frags = rasterize(screen.detach()[None], posed.faces, h, w)
                candidates = visible_vertices(screen.detach(), posed.faces, h, w, frags=frags) & (cos < cfg.rim_cos)
                uncovered = _uncovered_pixels(mask_t & ~frags.mask[0], frags.mask[0], cfg.cover_px)
        s = sample_image(sdf, screen[:, :2])
        rim = candidates & (s.detach().abs() < cfg.band_px)
        loss_in = F.relu(s).pow(2).mean()
        loss_rim = s[rim].pow(2).mean() if bool(rim.any()) else s.sum() * 0
        if pull_uncovered and len(uncovered) and bool(candidates.any()):
            # every uncovered hand pixel near the render pulls its nearest rim vertex (fingertips, touching fingers)
            loss_rim = loss_rim + torch.cdist(uncovered, screen[candidates, :2]).min(dim=1).values.pow(2).mean()
        loss = loss_in + loss_rim + regulariser(offsets)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        schedule.step()
        emit(Progress(step0 + step + 1, total, stage, losses={"outline": float((loss_in + loss_rim).detach())}))
    with torch.no_grad():
        return offsets_of().detach()


def _uncovered_pixels(uncovered: Tensor, rendered: Tensor, within_px: float, limit: int = 4096) -> Tensor:
    """Centres ``(x, y)`` of the uncovered hand pixels within ``within_px`` of the rendered silhouette
    (farther ones, e.g. a forearm in the photo, are not the hand's to cover), at most ``limit`` (strided)."""
    from scipy.ndimage import distance_transform_edt

    near = torch.from_numpy(distance_transform_edt(~rendered.numpy()) <= within_px)
    ys, xs = torch.nonzero(uncovered & near, as_tuple=True)
    pts = torch.stack([xs, ys], 1).float() + 0.5
    return pts[:: max(1, len(pts) // limit)]


class ArticulatedMesh(PosedMesh):
    """A :class:`PosedMesh` whose pose is ``pose`` with the fingers' joints turned by ``delta (15, 3)``
    (axis-angle added; the root's rotation stays) and translation ``transl + shift``; ``world()`` is
    differentiable in both. The mesh is skinned about its own ``joints``."""

    def __init__(self, mesh: BakedAvatar, pose: Any, transl: Any, K: Tensor, Rt: Tensor):
        self.joints = torch.as_tensor(np.asarray(mesh.joints, np.float32))
        self.parents = torch.as_tensor(np.asarray(mesh.parents)).long()
        self.pose = torch.as_tensor(np.asarray(pose, np.float32)).reshape(16, 3)
        self.transl = torch.as_tensor(np.asarray(transl, np.float32)).reshape(3)
        self.delta = torch.zeros(15, 3, requires_grad=True)
        self.shift_m = torch.zeros(3, requires_grad=True)
        with torch.no_grad():  # rot and shift: the start pose's
            super().__init__(mesh, self._bones(), self.transl, K, Rt)

    def fitted_pose(self) -> Tensor:
        """(16, 3) the corrected pose."""
        return self.pose + torch.cat([torch.zeros(1, 3), self.delta])

    def _bones(self) -> Tensor:
        """(16, 4, 4) the fitted pose's bones about the mesh's own joints."""
        frames = rigid_chain(axis_angle_to_matrix(self.fitted_pose())[None], self.joints[None], self.parents)
        return skinning_transforms(frames, self.joints[None])[0]

    def world(self, offsets: Tensor | None = None) -> Tensor:
        return self._skin(*self._blend(self._bones(), self.transl + self.shift_m), offsets)


def fit_pose(mesh: BakedAvatar, pose: Any, transl: Any, K: Tensor, Rt: Tensor, mask: np.ndarray, cfg: DetailConfig,
             emit: Emit = null_emit, cancel=None, step0: int = 0, total: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """The fingers' joint rotations and the translation that put ``mesh``'s silhouette on ``mask``.

    ``cfg.pose_steps`` Adam steps (``cfg.pose_lr``: radians, metres; falling to a tenth) on
    :class:`ArticulatedMesh`'s correction, with an L2 prior on it: ``cfg.pose_prior[0]`` per radian
    squared, ``[1]`` per millimetre squared of translation, ``[2]`` per squared pixel of the
    vertices' mean motion along their view rays (depth, which the photo does not see).

    Args:
        mesh: canonical mesh (with its own ``joints``). pose: (16, 3) axis-angle. transl: (3,) metres.
        K, Rt: the photo crop's camera. mask: (H, W) bool.

    Returns:
        ``(pose (16, 3), transl (3,))`` float32 (finite: :func:`_fit_silhouette` undoes a step that is not).
    """
    posed = ArticulatedMesh(mesh, pose, transl, K, Rt)
    per_rad2, per_mm2, per_px2 = cfg.pose_prior
    zero = torch.zeros(len(posed.canonical), 3)
    px_per_m = _px_per_m(posed)
    with torch.no_grad():
        start = posed.world()
        ray = posed.view_rays(start)

    def prior(_: Tensor) -> Tensor:
        # the photo cannot see a finger turn towards or away from it: motion along the view rays pays
        depth_px = ((posed.world() - start) * ray).sum(1) * px_per_m
        return per_rad2 * posed.delta.pow(2).sum() + per_mm2 * (posed.shift_m * 1000).pow(2).sum() \
            + per_px2 * depth_px.pow(2).mean()

    groups = [{"params": [posed.delta], "lr": cfg.pose_lr[0]}, {"params": [posed.shift_m], "lr": cfg.pose_lr[1]}]
    _fit_silhouette(posed, mask, groups, lambda: zero, prior, cfg.pose_steps, cfg, emit, cancel, step0, total,
                    "detail: pose", decay=True)
    with torch.no_grad():
        return (posed.fitted_pose().numpy().astype(np.float32),
                (posed.transl + posed.shift_m).numpy().astype(np.float32))
