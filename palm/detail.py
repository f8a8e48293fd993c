"""The photo-detail layer: what PALM-Net's PCA space cannot express, recovered from the photo.

PALM-Net's personalisation (:mod:`palm.train.personalize`, the paper's stage) finds the prior's
subject, light and pose that best explain the photo. One-image avatar methods then *invert and
fine-tune*; here the fine-tuning acts on the avatar's baked surface, which is what every consumer
shows (viewport, ``palm render``, glTF):

1. **Bake** the personalised subject (:func:`palm.bake.bake_from_prior`, codes and betas) to a skinned
   mesh with the prior's material, the rig's hand 1 mm thinner filling what the prior's surface lacks
   (``rig_fill``: the shipped prior's fingertips end 10-18 mm short); subdivide it to ~1 vertex per pixel.
2. **Proportions** (:func:`fit_proportions`): the rig's betas are almost only overall size, so
   finger-segment lengths and the palm's length and width (:mod:`palm.hand.proportions`) are
   fitted to the hand's keypoints, the registration's 3D keypoints when the input has them (then
   with a rest-space shift: the registered root joint need not be the rig's), else the photo's 2D
   landmarks, under a log-normal prior; the mesh and its joints move with them and every consumer
   poses the mesh about its own joints (``bone_transforms(..., joints=mesh.joints)``).
3. **Pose, thickness, then outline** (:mod:`palm.silhouette`): when the pose comes from the
   photo's 2D landmarks, first a small correction of the fingers' joints and the translation
   (:func:`palm.silhouette.fit_pose`; a dataset's 3D registration is kept as it is); then one
   offset along the normals for the whole hand (optionally per bone), so a hand too thin or too
   thick all round grows or thins symmetrically; then per-vertex offsets in canonical space
   (carried into the pose by the vertices' own skinning) move the silhouette onto the photo's
   mask: every projected vertex pays for lying outside the mask, every visible rim vertex near
   the outline for lying off it; a uniform Laplacian keeps the offsets smooth, a weak L2 small.
4. **Relief, then albedo** under the fitted light, first put in the data's gauge (``neutral_light``). The
   relief (:func:`fit_relief`): smooth offsets along the normals of the seen side that let the shading
   explain what the baked normals get wrong, with the albedo held at its start. Then the albedo: one
   photo fixes only albedo x light per channel, and the paper stage often settles on a tinted,
   dim light with pale albedo, which relights wrongly; the light is made grey on average at the
   display exposure (:func:`palm.render.sg.neutral_light`) and the albedo takes the colour. The
   shaded render is affine in the albedo per pixel,
   ``L = a * D + S`` (``D``, ``S``: diffuse and specular of
   :func:`palm.render.shadow.shade_groups` with the lobe groups' shadow visibility), so lighting
   and shadows stay in ``D`` and ``S`` and only reflectance goes into ``a``. The per-vertex
   albedo minimises ``|srgb(a D + S) - photo|^2`` over the hand pixels plus a Laplacian of its
   change from the start value and a weak pull towards it. The start value, which is also what
   the unseen side keeps, is the prior's albedo times the per-channel ratio that best explains
   the seen side, so the two sides meet without a seam. With an albedo model in the prior
   (:mod:`palm.albedo_model`) that albedo is the model's, fitted to the albedo the photo shows on
   the seen vertices (:func:`palm.albedo_model.observed_albedo`): a dark back behind a light palm, as real hands have.

The result is a :class:`palm.bake.BakedAvatar` written to the avatar folder as ``mesh.safetensors``
(:func:`palm.bake.save_baked`) with the report's input-view metrics of the raster render.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

import numpy as np
import torch
from torch import Tensor

from palm.albedo_model import mesh_uv
from palm.bake import BakedAvatar, bake_from_prior, vertex_normals
from palm.config import DetailConfig
from palm.hand.lbs import axis_angle_to_matrix, bone_transforms
from palm.hand.proportions import Proportions, posed_keypoints, proportioned_keypoints, proportioned_rest
from palm.jobs import Emit, Progress, check_cancel, null_emit
from palm.render.color import linear_to_srgb, srgb_to_linear
from palm.render.environment import DISPLAY_EXPOSURE
from palm.render.raster import project_screen, rasterize
from palm.render.sg import neutral_light
from palm.render.shadow import mesh_group_visibility, shade_groups
from palm.silhouette import (
    PosedMesh,
    fit_outline,
    fit_pose,
    fit_thickness,
    laplacian,
    uniform_laplacian,
    visible_vertices,
)

# ---------------------------------------------------------------------------------------------
# Mesh helpers
# ---------------------------------------------------------------------------------------------


def subdivide(mesh: BakedAvatar) -> BakedAvatar:
    """Midpoint subdivision: every triangle into four, attributes of new vertices averaged.

    Positions stay on the old triangles (no smoothing); normals are renormalised averages.
    """
    f = mesh.faces.astype(np.int64)
    edges = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), axis=1)
    uniq, inverse = np.unique(edges, axis=0, return_inverse=True)
    inverse = inverse.reshape(3, -1).T + len(mesh.vertices)  # (F, 3): ids of midpoints ab, bc, ca
    a, b, c = f[:, 0], f[:, 1], f[:, 2]
    ab, bc, ca = inverse[:, 0], inverse[:, 1], inverse[:, 2]
    faces = np.concatenate([np.stack([a, ab, ca], 1), np.stack([b, bc, ab], 1), np.stack([c, ca, bc], 1),
                            np.stack([ab, bc, ca], 1)]).astype(np.int32)

    def extend(x: np.ndarray) -> np.ndarray:
        return np.concatenate([x, 0.5 * (x[uniq[:, 0]] + x[uniq[:, 1]])]).astype(np.float32)

    normals = extend(mesh.normals)
    normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
    weights = extend(mesh.skin_weights)
    return BakedAvatar(vertices=extend(mesh.vertices), faces=faces, normals=normals,
                       skin_weights=weights / np.maximum(weights.sum(1, keepdims=True), 1e-12),
                       albedo=extend(mesh.albedo), roughness=extend(mesh.roughness), metallic=extend(mesh.metallic),
                       joints=mesh.joints, parents=mesh.parents, closed=mesh.closed)  # same surface, same winding


def interp_pixels(values: Tensor, vid: Tensor, bary: Tensor) -> Tensor:
    """Per-vertex ``values (V, C)`` at covered pixels given by their face's ``vid (N, 3)`` and ``bary (N, 3)``."""
    return (values[vid] * bary[..., None]).sum(1)


def pixel_shading(posed: PosedMesh, world: Tensor, normals: Tensor, mesh: BakedAvatar, lobes: Tensor,
                  height: int, width: int, shadows: bool = True, albedo: Tensor | None = None) -> dict[str, Tensor]:
    """Rasterise and shade the posed mesh: per covered pixel the affine shading ``L = a D + S``.

    Args:
        albedo: (V, 3) per-vertex albedo: shade with it (``rgb``) instead of returning ``D`` and ``S``.

    Returns:
        ``mask (H, W) bool``, ``vid (N, 3) long`` and ``bary (N, 3)`` of the covered pixels (row
        major), and ``D (N, 3)``, ``S (N, 3)`` linear, or with ``albedo`` the linear ``rgb (N, 3)``;
        also the other keys of :func:`pixel_fragments`, so the result can be shaded again.
    """
    frags = pixel_fragments(posed, world, normals, mesh, lobes, height, width, shadows)
    if albedo is not None:
        return {**frags, "rgb": shade_pixels(frags, normals, lobes, albedo)}
    D, S = shade_pixels(frags, normals, lobes)
    return {**frags, "D": D, "S": S}


def pixel_fragments(posed: PosedMesh, world: Tensor, normals: Tensor, mesh: BakedAvatar, lobes: Tensor,
                    height: int, width: int, shadows: bool = True) -> dict[str, Any]:
    """What shading the covered pixels needs besides the normals: ``mask (H, W)``, per pixel ``vid
    (N, 3)``, ``bary (N, 3)``, ``view (N, 3)``, ``rough``, ``metal (N, 1)``, the lobe groups'
    shadow visibility ``vis (N, G)`` and ``groups`` (:func:`palm.render.shadow.mesh_group_visibility`),
    and the rasteriser's ``raster`` :class:`palm.render.raster.Fragments`."""
    frags = rasterize(posed.screen(world)[None], posed.faces, height, width)
    mask = frags.mask[0]
    vid = posed.faces[frags.face_id[0][mask]]
    bary = frags.bary[0][mask]
    if shadows:
        groups, vis_v = mesh_group_visibility(world, normals, posed.faces, lobes.float())
    else:
        groups, vis_v = [torch.arange(len(lobes))], torch.ones(len(world), 1)
    view = posed.eye()[None] - interp_pixels(world, vid, bary)
    return {"raster": frags, "mask": mask, "vid": vid, "bary": bary, "groups": groups,
            "vis": interp_pixels(vis_v, vid, bary),
            "view": view / view.norm(dim=1, keepdim=True).clamp_min(1e-12),
            "rough": interp_pixels(torch.as_tensor(mesh.roughness, dtype=torch.float32)[:, None], vid, bary),
            "metal": interp_pixels(torch.as_tensor(mesh.metallic, dtype=torch.float32)[:, None], vid, bary)}


def shade_pixels(frags: dict[str, Any], normals: Tensor, lobes: Tensor,
                 albedo: Tensor | None = None) -> Tensor | tuple[Tensor, Tensor]:
    """Shade :func:`pixel_fragments` with the vertex ``normals (V, 3)`` (two-sided): the linear
    ``rgb (N, 3)`` of ``albedo (V, 3)``, or without it ``(D, S)`` with ``rgb = a D + S``."""
    vid, bary, view = frags["vid"], frags["bary"], frags["view"]
    n = interp_pixels(normals, vid, bary)
    n = n / n.norm(dim=1, keepdim=True).clamp_min(1e-12)
    n = torch.where((n * view).sum(1, keepdim=True) >= 0, n, -n)
    args = (frags["rough"], frags["metal"], lobes.float(), frags["groups"], frags["vis"])
    if albedo is not None:
        return shade_groups(n, view, interp_pixels(albedo, vid, bary), *args)
    S = shade_groups(n, view, torch.zeros_like(n), *args)
    return shade_groups(n, view, torch.ones_like(n), *args) - S, S


def hand_pixels(shading: dict[str, Tensor], photo: np.ndarray, mask: np.ndarray) -> dict[str, Tensor]:
    """The covered pixels the photo calls hand: ``target (N, 3)`` sRGB and their ``vid``, ``bary``,
    ``D``, ``S`` from :func:`pixel_shading`."""
    pix = shading["mask"]
    use = torch.from_numpy(np.asarray(mask, bool))[pix]
    target = torch.from_numpy(np.asarray(photo, np.float32)).reshape(-1, 3)[pix.reshape(-1)][use]
    return {"target": target, **{k: shading[k][use] for k in ("vid", "bary", "D", "S")}}


def albedo_start(px: dict[str, Tensor], albedo0: np.ndarray) -> tuple[Tensor, Tensor]:
    """``albedo0 (V, 3)`` times the per-channel ratio that best explains the seen side (the median
    of the per-pixel ratios of :func:`hand_pixels` ``px``): ``(start (V, 3), ratio (3,))``."""
    a_prior = torch.as_tensor(albedo0, dtype=torch.float32)
    prior_px = interp_pixels(a_prior, px["vid"], px["bary"])
    D, S = px["D"], px["S"]
    lit = D.min(1).values > 1e-3
    ratio = ((srgb_to_linear(px["target"]) - S) / D.clamp_min(1e-3) / prior_px.clamp_min(1e-3))[lit].median(0).values \
        if bool(lit.any()) else torch.ones(3)
    ratio = ratio.clamp(0.25, 4.0)
    return (a_prior * ratio).clamp(0.01, 1.0), ratio


RELIEF_LR_MM = 0.02  # the relief fit's Adam step, millimetres


def fit_relief(posed: PosedMesh, mesh: BakedAvatar, frags: dict[str, Any], lobes: Tensor, albedo: Tensor,
               photo: np.ndarray, mask: np.ndarray, cfg: DetailConfig, emit: Emit = null_emit, cancel=None,
               step0: int = 0, total: int = 1) -> Tensor:
    """Offsets along the normals that let the shading, not the albedo, explain the photo's relief.

    The baked surface's normals are 10-17 degrees off the hand's in the photo's view (synthetic
    held-out subjects), and an albedo fitted under them takes the difference as painted-on light
    and shadow, which other lights and poses show as blotches. Each vertex the photo sees moves
    along its canonical normal by ``h`` (faded to zero towards the rim, so the outline stays, and
    on the unseen side) so that ``srgb(a D(n) + S(n))`` with ``a`` held at ``albedo`` (the
    colour-corrected prior's, no detail) matches the photo; a uniform Laplacian keeps ``h`` smooth,
    a weak L2 small, and it stays within ``cfg.relief_limit``. Shadow visibility is held at the start's.

    Args:
        posed: the refined mesh in the photo's camera; mesh: its canonical mesh. lobes: (K, 7) the light.
        frags: :func:`pixel_fragments` (or :func:`pixel_shading`) of ``posed`` under ``lobes``.
        albedo: (V, 3) linear.
        photo: (H, W, 3) sRGB; mask: (H, W) bool.

    Returns:
        (V, 3) canonical offsets.
    """
    height, width = photo.shape[:2]
    normals_c = torch.as_tensor(mesh.normals, dtype=torch.float32)
    with torch.no_grad():
        world0 = posed.world()
        n0 = posed.normals(world0)
        seen = visible_vertices(posed.screen(world0), posed.faces, height, width, frags=frags["raster"])
        facing = (-(n0 * posed.view_rays(world0)).sum(1) / cfg.rim_cos).clamp(0, 1) * seen.float()
    use = torch.from_numpy(np.asarray(mask, bool))[frags["mask"]]
    target = torch.from_numpy(np.asarray(photo, np.float32)).reshape(-1, 3)[frags["mask"].reshape(-1)][use]
    frags = {**frags, **{k: frags[k][use] for k in ("vid", "bary", "view", "rough", "metal", "vis")}}
    edges, degree = uniform_laplacian(posed.faces, len(normals_c))
    h = torch.zeros(len(normals_c), requires_grad=True)  # millimetres
    optim = torch.optim.Adam([h], lr=RELIEF_LR_MM)
    limit = cfg.relief_limit * 1000

    def offsets(h_mm: Tensor) -> Tensor:
        return (h_mm * facing * 1e-3)[:, None] * normals_c

    for step in range(cfg.relief_steps):
        check_cancel(cancel)
        world = posed.world(offsets(h))
        pred = linear_to_srgb(shade_pixels(frags, posed.normals(world), lobes, albedo).clamp(0, 1))
        loss_data = (pred - target).pow(2).mean()
        hf = (h * facing)[:, None]
        loss = loss_data + cfg.relief_smooth * laplacian(hf, edges, degree).pow(2).mean() + 1e-4 * hf.pow(2).mean()
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        with torch.no_grad():
            h.clamp_(-limit, limit)
        data = float(loss_data.detach())
        emit(Progress(step0 + step + 1, total, "detail: relief",
                      losses={"relief": data, "psnr": -10 * math.log10(max(data, 1e-10))}))
    return offsets(h.detach())


def fit_albedo(shading: dict[str, Tensor], photo: np.ndarray, mask: np.ndarray, albedo0: np.ndarray,
               faces: Tensor, cfg: DetailConfig, emit: Emit = null_emit, cancel=None, step0: int = 0,
               total: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Per-vertex albedo that reproduces the photo under the shading (module notes, step 4).

    Args:
        shading: :func:`pixel_shading` of the final mesh. photo: (H, W, 3) sRGB in [0, 1].
        mask: (H, W) bool photo mask. albedo0: (V, 3) the prior's linear albedo.

    Returns:
        ``(albedo (V, 3), ratio (3,))``: the fitted albedo and the seen side's colour ratio.
    """
    px = hand_pixels(shading, photo, mask)
    target, vid, bary, D, S = px["target"], px["vid"], px["bary"], px["D"], px["S"]
    start, ratio = albedo_start(px, albedo0)
    edges, degree = uniform_laplacian(faces, len(start))
    albedo = start.clone().requires_grad_(True)
    optim = torch.optim.Adam([albedo], lr=cfg.albedo_lr)
    for step in range(cfg.albedo_steps):
        check_cancel(cancel)
        a_px = interp_pixels(albedo, vid, bary)
        pred = linear_to_srgb((a_px * D + S).clamp(min=0, max=1))
        change = albedo - start
        loss_data = (pred - target).pow(2).mean()
        loss = loss_data + cfg.albedo_smooth * laplacian(change, edges, degree).pow(2).sum(1).mean() \
            + cfg.albedo_l2 * change.pow(2).sum(1).mean()
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        with torch.no_grad():  # within a factor of the start: shading the mesh cannot explain stays out
            albedo.copy_(torch.minimum(torch.maximum(albedo, start / cfg.albedo_range), start * cfg.albedo_range))
            albedo.clamp_(0.01, 1.0)
        data = float(loss_data.detach())
        emit(Progress(step0 + step + 1, total, "detail: albedo",
                      losses={"albedo": data, "psnr": -10 * math.log10(max(data, 1e-10))}))
    return albedo.detach().numpy().astype(np.float32), ratio.numpy()


def fit_proportions(hand, joints: np.ndarray, tips: np.ndarray, pose: Any, transl: Any, K: Tensor, Rt: Tensor,
                    keypoints: np.ndarray | None, cfg: DetailConfig, keypoints_3d: np.ndarray | None = None
                    ) -> tuple[Proportions, np.ndarray, float, float]:
    """Finger-segment lengths and palm size that put the posed skeleton on the hand's keypoints.

    With 2D keypoints (a photo's landmarks) it minimises
    ``sum_k |project(keypoints(L, P)) - k|^2 / (2 px)^2 + sum (log L / sd)^2 + sum (log P / sd)^2``
    over the 15 segment length scales ``L`` and the palm's length and width ``P``
    (:func:`palm.hand.proportions.proportioned_keypoints`, posed by the avatar's pose about the
    moved joints), with the log-normal prior ``sd = cfg.proportion_sd``. With the registration's 3D
    keypoints (datasets that have them) the data term is ``sum_k |keypoint - k|^2 / (1 mm)^2`` and a
    rest-space shift ``c`` of the whole hand is fitted too (the registered root joint need not be
    the rig's). Scales stay within +-3 sd; thickness is not seen by keypoints and stays 1.

    Args:
        hand: the rig (parents, keypoint order). joints: (16, 3) rest joints. tips: (5, 3) rest
            fingertips. pose: (16, 3). transl: (3,). K, Rt: the photo crop's camera.
        keypoints: (21, 2) in the crop, the rig's keypoint order, or None.
        keypoints_3d: (21, 3) world keypoints, or None (then ``keypoints`` are used).

    Returns:
        ``(proportions, shift (3,) metres, rms_before, rms_after)`` (rms in pixels, or millimetres in 3D).
    """
    use_3d = keypoints_3d is not None
    J = torch.as_tensor(np.asarray(joints, np.float64))
    T = torch.as_tensor(np.asarray(tips, np.float64))
    parents = torch.as_tensor(hand.parents).long().cpu()
    order = torch.as_tensor(hand.keypoint_index).long().cpu()
    rot = axis_angle_to_matrix(torch.as_tensor(np.asarray(pose, np.float64)).reshape(16, 3))
    t = torch.as_tensor(np.asarray(transl, np.float64)).reshape(3)
    target = torch.as_tensor(np.asarray(keypoints_3d if use_3d else keypoints, np.float64))
    scale = 1000.0 if use_3d else 1.0  # residuals in mm (3D) or px (2D)
    sigma = 1.0 if use_3d else 2.0
    Kd, Rtd = K.double(), Rt.double()
    log_len = torch.zeros(5, 3, dtype=torch.float64, requires_grad=True)
    log_palm = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    shift = torch.zeros(3, dtype=torch.float64, requires_grad=use_3d)
    limit = 3.0 * cfg.proportion_sd

    def residual() -> Tensor:
        palm = torch.cat([log_palm.exp(), torch.ones(1, dtype=torch.float64)])
        Jn, Tn = proportioned_keypoints(J, T, parents, log_len.exp(), palm)
        points = posed_keypoints(rot, Jn + shift, Tn + shift, parents, order) + t
        if use_3d:
            return (points - target) * scale
        return project_screen(points, Kd, Rtd).reshape(-1, 3)[:, :2] - target

    with torch.no_grad():
        before = float(residual().pow(2).sum(1).mean().sqrt())
    groups = [{"params": [log_len, log_palm], "lr": 0.01}] + ([{"params": [shift], "lr": 1e-4}] if use_3d else [])
    optim = torch.optim.Adam(groups)
    for _ in range(cfg.proportion_steps):
        loss = residual().pow(2).sum() / sigma**2 + (log_len.pow(2).sum() + log_palm.pow(2).sum()) / cfg.proportion_sd**2
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        with torch.no_grad():
            log_len.clamp_(-limit, limit)
            log_palm.clamp_(-limit, limit)
    with torch.no_grad():
        after = float(residual().pow(2).sum(1).mean().sqrt())
    lengths = log_len.detach().exp().numpy()
    palm = log_palm.detach().exp().numpy()
    ones = tuple((1.0, 1.0, 1.0) for _ in range(5))
    props = Proportions(tuple(tuple(float(x) for x in row) for row in lengths), ones,
                        (float(palm[0]), float(palm[1]), 1.0))
    return props, shift.detach().numpy().copy(), before, after


def refine_avatar(prior, avatar, photo: np.ndarray, mask: np.ndarray, camera, cfg: DetailConfig,
                  emit: Emit = null_emit, cancel=None, keypoints: np.ndarray | None = None,
                  keypoints_3d: np.ndarray | None = None) -> tuple[BakedAvatar, Tensor, dict[str, Any]]:
    """The photo-detail stage: bake, fit the proportions, the outline and the albedo (module notes).

    Args:
        prior: :class:`palm.prior.Prior`. avatar: :class:`palm.avatar.Avatar` of the paper's stage.
        photo: (H, W, 3) sRGB crop of the photo in ``camera``; mask: (H, W) bool.
        camera: :class:`palm.render.rays.Camera` of the crop (a left hand: the mirrored crop,
            fitted as a right hand as personalisation does).
        keypoints: (21, 2) the hand's keypoints in the crop (rig order); keypoints_3d: (21, 3) the
            registration's world keypoints (preferred when given); with neither the rig's
            proportions are kept (:func:`fit_proportions`).

    Returns:
        ``(mesh, light, info)``: the refined canonical mesh, the light it is shaded with (the
        avatar's, or with ``cfg.neutral_light`` that light in the data's gauge,
        :func:`palm.render.sg.neutral_light`) and timings, the colour ratio and
        ``paper_light_scale``: the paper stage's light is ``light`` with amplitudes times it.
    """
    t0 = time.monotonic()
    pose_steps = cfg.pose_steps if keypoints is not None and keypoints_3d is None else 0  # a pose from 2D landmarks
    total = pose_steps + cfg.thickness_steps + cfg.outline_steps + cfg.relief_steps + cfg.albedo_steps
    emit(Progress(0, total, "detail: baking"))
    mesh = bake_from_prior(prior, resolution=cfg.mesh_res, betas=avatar.betas, shape_code=avatar.shape_code,
                           appearance_code=avatar.appearance_code, pose=avatar.pose, rig_fill=cfg.rig_fill)
    for _ in range(cfg.subdivide):
        mesh = subdivide(mesh)
    uv = mesh_uv(prior, mesh, avatar.betas) if cfg.albedo_model else None  # matched to the rig's unscaled rest
    check_cancel(cancel)
    t_bake = time.monotonic()
    K, Rt = camera.K.cpu(), camera.Rt.cpu()
    fit_info: dict[str, Any] = {}
    if (keypoints is not None or keypoints_3d is not None) and cfg.proportion_steps > 0:
        hand = prior.model.hand
        with torch.no_grad():
            rest_v, _ = hand.rest(torch.as_tensor(np.asarray(avatar.betas, np.float32))[None].to(hand.v_template))
        tips = rest_v[0, hand.tip_vertex_ids].double().cpu().numpy()
        props, shift, before, after = fit_proportions(hand, mesh.joints, tips, avatar.pose, avatar.transl, K, Rt,
                                                      keypoints, cfg, keypoints_3d)
        verts, joints = proportioned_rest(mesh.vertices, mesh.joints, mesh.skin_weights, mesh.parents, tips, props)
        verts = (verts + shift).astype(np.float32)
        mesh = dataclasses.replace(mesh, vertices=verts, normals=vertex_normals(verts, mesh.faces),
                                   joints=(joints + shift).astype(np.float32))
        fit_info = {"proportions": {"bone_length": [[round(x, 4) for x in row] for row in props.bone_length],
                                    "palm": [round(x, 4) for x in props.palm],
                                    "shift_mm": [round(float(x) * 1000, 2) for x in shift]},
                    "keypoint_rms" + ("_mm" if keypoints_3d is not None else "_px"): [round(before, 2), round(after, 2)]}
    pose, transl = np.asarray(avatar.pose, np.float32), np.asarray(avatar.transl, np.float32)
    if pose_steps > 0:
        fit_info.update(paper_pose=pose.round(5).tolist(), paper_transl=transl.round(6).tolist())
        pose, transl = fit_pose(mesh, pose, transl, K, Rt, mask, cfg, emit, cancel, 0, total)
        fit_info.update(pose=pose.round(5).tolist(), transl=transl.round(6).tolist())
    bones = bone_transforms(prior.model.hand, pose, avatar.betas, joints=mesh.joints)
    posed0 = PosedMesh(mesh, bones, transl, K, Rt)
    offsets = torch.zeros(len(mesh.vertices), 3)
    if cfg.thickness_steps > 0:
        offsets, thickness = fit_thickness(posed0, mask, mesh.normals, mesh.skin_weights, cfg, emit, cancel,
                                           pose_steps, total)
        fit_info["thickness_mm"] = [round(float(t) * 1000, 2) for t in thickness]
    if cfg.outline_steps > 0:
        offsets = fit_outline(posed0, mask, mesh.normals, cfg, emit, cancel, pose_steps + cfg.thickness_steps, total,
                              offsets)
    moved = mesh.vertices + offsets.numpy().astype(np.float32)
    mesh = dataclasses.replace(mesh, vertices=moved, normals=vertex_normals(moved, mesh.faces))
    posed = PosedMesh(mesh, bones, transl, K, Rt)
    t_outline = time.monotonic()
    light = avatar.light.detach().float().cpu()
    light_scale = torch.ones(3)
    if cfg.neutral_light:  # the albedo takes the colour the paper stage's light had taken from it
        light, light_scale = neutral_light(light, DISPLAY_EXPOSURE)
    with torch.no_grad():
        world = posed.world()
        normals = posed.normals(world)
        shading = pixel_shading(posed, world, normals, mesh, light, int(camera.height), int(camera.width))
    if cfg.relief_steps > 0:  # the shading, not the albedo, takes the relief the photo shows
        t_relief = time.monotonic()
        start, _ = albedo_start(hand_pixels(shading, photo, mask), mesh.albedo)
        relief = fit_relief(posed, mesh, shading, light, start, photo, mask, cfg, emit, cancel,
                            total - cfg.albedo_steps - cfg.relief_steps, total)
        offsets = offsets + relief
        moved = mesh.vertices + relief.numpy().astype(np.float32)
        mesh = dataclasses.replace(mesh, vertices=moved, normals=vertex_normals(moved, mesh.faces))
        posed = PosedMesh(mesh, bones, transl, K, Rt)
        fit_info.update(relief_mm=round(float(relief.norm(dim=1).max()) * 1000, 3),
                        seconds_relief=round(time.monotonic() - t_relief, 2))
        with torch.no_grad():
            world = posed.world()
            normals = posed.normals(world)
            shading = pixel_shading(posed, world, normals, mesh, light, int(camera.height), int(camera.width))
    t_albedo = time.monotonic()
    albedo0, model_info = mesh.albedo, {}
    if uv is not None:  # the unseen side from the prior's albedo model, fitted to the seen side
        from palm.albedo_model import fit_to_mesh, observed_albedo

        seen, weight = observed_albedo(hand_pixels(shading, photo, mask), len(mesh.vertices))
        predicted, coeffs = fit_to_mesh(prior.albedo_model, uv, seen, weight)
        albedo0 = predicted.numpy()
        model_info = {"albedo_model_coeffs": [round(float(c), 3) for c in coeffs]}
    albedo, ratio = fit_albedo(shading, photo, mask, albedo0, posed.faces, cfg, emit, cancel,
                               total - cfg.albedo_steps, total)
    refined = dataclasses.replace(mesh, albedo=albedo)
    info = {"vertices": len(moved), "faces": len(mesh.faces),
            "seconds_bake": round(t_bake - t0, 2), "seconds_outline": round(t_outline - t_bake, 2),
            "seconds_albedo": round(time.monotonic() - t_albedo, 2),
            "max_offset_mm": round(float(offsets.norm(dim=1).max()) * 1000, 2),
            "albedo_ratio": [round(float(r), 4) for r in ratio],
            "paper_light_scale": [float(x) for x in light_scale], **fit_info, **model_info}
    return refined, light, info


# ---------------------------------------------------------------------------------------------
# Rendering the refined mesh
# ---------------------------------------------------------------------------------------------


def render_mesh(mesh: BakedAvatar, bones: np.ndarray, transl: Any, camera, lobes: Tensor,
                shadows: bool = True, supersample: int = 2) -> np.ndarray:
    """The posed mesh through the z-buffer rasteriser, shaded under an SG light with shadows.

    Args:
        mesh: canonical mesh (its per-vertex albedo, roughness, metallic).
        bones: (16, 4, 4) (:func:`palm.hand.lbs.bone_transforms`); transl: (3,).
        camera: :class:`palm.render.rays.Camera`. lobes: (K, 7) raw SG lobes.
        shadows: per-lobe-group shadow visibility (:mod:`palm.render.shadow`); False: unshadowed.
        supersample: rendered at this factor per side and box-filtered down (anti-aliased edges).

    Returns:
        (H, W, 4) float32 linear RGB with straight alpha (1 on the hand, 0 elsewhere).
    """
    ss = max(1, int(supersample))
    if ss > 1:
        camera = camera.to("cpu")
        K = camera.K.clone().float()
        K[:2] *= ss  # pixel centres at u + 0.5 scale with the image
        from palm.render.rays import Camera

        camera = Camera(K, camera.Rt.clone(), int(camera.height) * ss, int(camera.width) * ss)
    posed = PosedMesh(mesh, bones, transl, camera.K.cpu(), camera.Rt.cpu())
    h, w = int(camera.height), int(camera.width)
    with torch.no_grad():
        world = posed.world()
        normals = posed.normals(world)
        sh = pixel_shading(posed, world, normals, mesh, lobes.detach().cpu(), h, w, shadows=shadows,
                           albedo=torch.as_tensor(mesh.albedo, dtype=torch.float32))
        rgb = sh["rgb"]
    image = np.zeros((h * w, 4), np.float32)
    covered = sh["mask"].reshape(-1).numpy()
    image[covered, :3] = rgb.numpy()
    image[covered, 3] = 1.0
    image = image.reshape(h, w, 4)
    if ss > 1:  # box filter of premultiplied colour, then back to straight alpha
        blocks = image.reshape(h // ss, ss, w // ss, ss, 4).mean(axis=(1, 3))
        alpha = blocks[..., 3:4]
        blocks[..., :3] = np.where(alpha > 0, blocks[..., :3] / np.maximum(alpha, 1e-8), 0)
        image = np.ascontiguousarray(blocks, dtype=np.float32)
    return image


def on_white(rgba: np.ndarray) -> np.ndarray:
    """(H, W, 4) linear straight-alpha -> (H, W, 3) sRGB in [0, 1] over white (the metrics' convention)."""
    rgb = linear_to_srgb(np.clip(rgba[..., :3], 0, 1))
    a = rgba[..., 3:4]
    return (rgb * a + (1 - a)).astype(np.float32)
