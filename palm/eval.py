"""Evaluation of personalised avatars (spec sections 10.2 and 11): render, score, tabulate.

Protocols:

* **InterHand2.6M** (Supp. Table 2): per evaluation sequence, personalise on the first of its 20
  images, then render the avatar in each of the 20 images' camera and hand pose (shape from the
  personalisation) under the fitted environment and score them. InterHand2.6M ships no masks:
  each image's mask is U^2-Net-p saliency refined with the registered hand's silhouette
  (:func:`palm.data.photo.segment.segment_hand`), standing in for the paper's SAM masks.
* **Synthetic** (``palm data synth`` folders): per held-out subject, personalise on its first
  image (first frame, first view); every other image is a novel pose/view. Images lit by the
  personalisation image's environment are rendered under the *fitted* light ("seen" rows);
  images lit by another environment are rendered under that environment's SG lobes, as stored in
  the dataset ("novel env" rows).

Scores (:func:`palm.train.views.image_metrics`, the same as personalisation's ``report.json``):
masked PSNR, SSIM and LPIPS (:mod:`palm.metrics`) of the PBR render over a white background
against the image with a white background, and the silhouette IoU of the render against the
image's mask, at the working resolution (a square crop around the image's mask, at most
``work_res`` pixels; the personalisation config's ``work_res`` by default). Averages: per
sequence/subject, then over sequences/subjects. Tables are Markdown (:func:`format_markdown`) and JSON.

Registration (:func:`registered`): every scored image uses the avatar's own shape and the
personalisation's translation correction; other views of the personalisation frame also use its
corrected pose (the dataset's registration belongs to the true hand, not the avatar's shape).

This module also makes the tiny random priors the tests and the benchmark use when no trained
prior is at hand (:func:`make_tiny_prior`) and renders a "subject the prior can represent"
(:func:`prior_sample`), which gives a self-consistent personalisation target.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from palm.errors import PalmError
from palm.jobs import Emit, Log, null_emit

METRICS = ("psnr_masked", "ssim_masked", "lpips_masked", "iou")
#: ``format`` of the ``eval.json`` that ``palm eval --out DIR`` writes (it marks DIR as an evaluation folder).
EVAL_FORMAT = "palm-eval-v1"


# ---------------------------------------------------------------------------------------------
# Scoring one avatar on images
# ---------------------------------------------------------------------------------------------


def score_sample(prior, avatar, sample, light=None, *, work_res: int | None, lpips: bool = True) -> dict[str, float]:
    """Render ``avatar`` in ``sample``'s camera and pose and score it (spec section 11).

    Args:
        prior: :class:`palm.prior.Prior`.
        avatar: :class:`palm.avatar.Avatar` (codes, light, betas are used).
        sample: :class:`palm.data.types.FrameSample` with ``mask`` and ``hand``.
        light: (K, 7) SG lobes to light it with (default: the avatar's fitted light).
        work_res: longest side of the scoring crop around the mask (None: the crop unresized), as
            ``PersonalizeConfig.work_res``.
        lpips: also compute LPIPS.

    Returns:
        ``{"psnr_masked", "ssim_masked", "lpips_masked", "iou"}`` (NaN where undefined).
    """
    import torch

    from palm.model import Frame
    from palm.train.views import image_metrics, render_outputs

    model = prior.model
    dev = model.light.device
    view = scoring_view(sample, avatar.betas, work_res)
    frame = Frame(
        shape_code=avatar.shape_code.to(dev), appearance_code=avatar.appearance_code.to(dev),
        pose=torch.as_tensor(view.pose, device=dev), betas=torch.as_tensor(view.betas, device=dev),
        transl=torch.as_tensor(view.transl, device=dev),
    )
    lobes = avatar.light if light is None else torch.as_tensor(light, dtype=torch.float32)
    mesh = avatar.extra.get("mesh")
    if mesh is not None:  # the refined mesh of the photo-detail stage: what the user sees, rasterised
        from palm.detail import on_white, render_mesh
        from palm.hand.lbs import bone_transforms

        rgba = render_mesh(mesh, bone_transforms(model.hand, view.pose, view.betas, joints=mesh.joints), view.transl,
                           view.camera, lobes)
        return image_metrics(on_white(rgba), view, lpips=lpips, opacity=rgba[..., 3])
    out = render_outputs(model, view.camera.to(dev), frame, lobes.to(dev), pbr=True)
    return image_metrics(out["rgb"], view, lpips=lpips, opacity=out["opacity"])


def scoring_view(sample, betas, work_res: int | None):
    """The :class:`palm.train.views.PersonalizeView` an avatar of shape ``betas`` is scored in:
    ``sample``'s image, mask, camera and hand registration, cropped as :func:`score_sample` does."""
    import torch

    from palm.train.views import PersonalizeView, crop_view

    if sample.mask is None or sample.hand is None:
        raise PalmError(sample.meta.get("path", sample.subject), "scoring needs a mask and hand parameters")
    view = PersonalizeView(
        image=np.asarray(sample.image, np.float32), mask=np.asarray(sample.mask, bool),
        camera=sample.camera.to_camera(torch.float32), pose=np.asarray(sample.hand.pose, np.float32),
        betas=np.asarray(betas, np.float32), transl=np.asarray(sample.hand.transl, np.float32),
        name=str(sample.meta.get("path", "")),
    )
    return crop_view(view, work_res)


def registered(sample, avatar, first, hand, data_hand=None):
    """``sample`` with the hand registration the avatar is scored in.

    The avatar was fitted to ``first``: its own pose and translation (the paper stage's small
    correction of ``first``'s registration, for the avatar's shape) replace the dataset's for
    ``first``'s frame (another view of the same hand). In other frames the avatar keeps where it
    sat against the registered hand in ``first``, in the registered hand's root frame: with root
    rotations ``R``, world root joints ``p`` (registered) and ``p'`` (the avatar's),
    ``R_f' = R_f R_1^T R_1'`` and ``p_f' = p_f + R_f R_1^T (p_1' - p_1)``; the fingers take the
    frame's registered angles. The two root joints differ: the dataset registers the true hand,
    whose skeleton the avatar's shape puts a little elsewhere (the proportions fit, the rig's
    betas). Turning the first frame's translation correction alone (as if both roots were one
    point) put held-out subject 0023's hand 2-5 pixels off in its other poses (15.8 dB relit,
    19.0 with the roots told apart); scoring with the registration unchanged, a 1 mm offset alone
    costs about 5 dB at 256 px.

    Args:
        sample, first: :class:`palm.data.types.FrameSample` (``first``: the personalisation image).
        avatar: :class:`palm.avatar.Avatar` fitted to ``first``.
        hand: the avatar's rig (``prior.model.hand``): its root joint for the avatar's betas, unless
            the avatar's baked mesh carries its own skeleton (``joints``).
        data_hand: the hand model of the dataset's registration (default ``hand``; for synthetic
            subjects with their own flat hands, :func:`palm.train.trainer.subject_hands`).
    """
    if sample.hand is None or first.hand is None:
        return sample
    if sample.subject == first.subject and sample.frame == first.frame:
        pose, transl = np.asarray(avatar.pose, np.float32), np.asarray(avatar.transl, np.float64)
    else:
        from scipy.spatial.transform import Rotation

        mesh = avatar.extra.get("mesh")
        root = (np.asarray(mesh.joints, np.float64)[0] if mesh is not None and getattr(mesh, "joints", None) is not None
                else rest_root(hand, avatar.betas))
        data_hand = hand if data_hand is None else data_hand
        p1 = rest_root(data_hand, first.hand.betas) + np.asarray(first.hand.transl, np.float64)
        pf = rest_root(data_hand, sample.hand.betas) + np.asarray(sample.hand.transl, np.float64)
        r1, rf, r1_avatar = root_rotation(first.hand.pose), root_rotation(sample.hand.pose), root_rotation(avatar.pose)
        turn = rf @ r1.T
        pose = np.array(sample.hand.pose, np.float32).reshape(16, 3)
        pose[0] = Rotation.from_matrix(turn @ r1_avatar).as_rotvec()
        transl = pf + turn @ (root + np.asarray(avatar.transl, np.float64) - p1) - root
    return dataclasses.replace(sample, hand=dataclasses.replace(sample.hand, pose=pose, transl=transl.astype(np.float32)))


def rest_root(hand, betas) -> np.ndarray:
    """(3,) rest root joint of ``hand`` for ``betas`` (float64)."""
    import torch

    b = torch.as_tensor(np.asarray(betas, np.float32)[: int(hand.n_betas)])[None]
    with torch.no_grad():
        _, joints = hand.rest(b.to(hand.v_template))
    return joints[0, 0].double().cpu().numpy()


def root_rotation(pose) -> np.ndarray:
    """(3, 3) rotation of a hand pose's root joint (``pose``: (16, 3) or (48,) axis-angle)."""
    import torch

    from palm.hand.lbs import axis_angle_to_matrix

    rotvec = torch.as_tensor(np.asarray(pose, np.float64).reshape(-1, 3)[0])
    return axis_angle_to_matrix(rotvec[None])[0].numpy()


def score_res(cfg) -> int | None:
    """The scoring crop of a personalisation config: the detail stage's when it has one."""
    return cfg.detail.res if cfg.detail is not None else cfg.work_res


def mean_scores(rows: Iterable[dict[str, float]]) -> dict[str, float]:
    """Mean of each metric over ``rows`` (NaNs ignored; NaN when no value)."""
    rows = list(rows)
    out = {}
    for k in METRICS:
        vals = [r[k] for r in rows if k in r and r[k] is not None and math.isfinite(r[k])]
        out[k] = float(np.mean(vals)) if vals else float("nan")
    out["n"] = len(rows)
    return out


# ---------------------------------------------------------------------------------------------
# Protocols
# ---------------------------------------------------------------------------------------------


def eval_synthetic(
    data: str | Path,
    prior,
    cfg,
    preset: str = "fast",
    subjects: Sequence[str] | None = None,
    max_images: int | None = None,
    out_dir: str | Path | None = None,
    emit: Emit = null_emit,
    cancel=None,
) -> dict[str, Any]:
    """Synthetic protocol (module docstring). Returns the result table (JSON-ready dict).

    Args:
        data: a ``palm data synth`` folder (PALM layout).
        prior: :class:`palm.prior.Prior`.
        cfg: :class:`palm.config.PersonalizeConfig` (its ``work_res`` is the fitting and scoring crop).
        subjects: subject ids to evaluate (default: all in ``data``).
        max_images: at most this many evaluation images per subject (default: all).
        out_dir: when given, each subject's avatar is written to ``out_dir/avatars/<sid>``.
    """
    from palm.data.palm_dataset import PalmDataset
    from palm.train.personalize import personalize
    from palm.train.trainer import subject_hands

    ds = PalmDataset(data, subjects=list(subjects) if subjects else None)
    data_hand = subject_hands(prior.model.hand, data)
    t0 = time.monotonic()
    groups: list[dict[str, Any]] = []
    for sid in ds.subjects:
        items = [it for it in ds.index() if it[0] == sid]
        if not items:
            continue
        first = ds.load(*items[0])
        emit(Log(f"personalising subject {sid} on {first.meta.get('path', '')}"))
        avatar = personalize(first, prior, cfg, None if out_dir is None else Path(out_dir) / "avatars" / sid,
                             emit, cancel, preset=preset)
        rows_seen, rows_novel = [], []
        rest = items[1:] if max_images is None else items[1:1 + max_images]
        for it in rest:
            s = ds.load(*it)
            novel = s.env_name is not None and first.env_name is not None and s.env_name != first.env_name
            if novel and s.env_lobes is None:
                continue  # no stored lighting to relight with
            reg = registered(s, avatar, first, prior.model.hand, data_hand)
            score = score_sample(prior, avatar, reg, light=s.env_lobes if novel else None, work_res=score_res(cfg))
            score["image"] = f"{it[0]}/{it[1]}/{it[2]}"
            (rows_novel if novel else rows_seen).append(score)
        report = avatar.extra.get("report", {})
        groups.append({
            "name": sid,
            "input": {k: report.get(k) for k in METRICS},
            "seen": mean_scores(rows_seen),
            "novel_env": mean_scores(rows_novel),
            "images": rows_seen + rows_novel,
            "seconds": report.get("seconds"),
        })
    return _table("synthetic", groups, ("input", "seen", "novel_env"), preset, prior, time.monotonic() - t0,
                  {"data": str(data)})


def eval_interhand(
    root: str | Path,
    prior,
    cfg,
    preset: str = "fast",
    sequences: Sequence[str] | None = None,
    max_images: int | None = None,
    out_dir: str | Path | None = None,
    emit: Emit = null_emit,
    cancel=None,
) -> dict[str, Any]:
    """InterHand2.6M protocol of Supp. Table 2 (module docstring). Returns the result table.

    Args:
        root: the InterHand2.6M folder (``images/`` and ``annotations/``).
        sequences: names of evaluation sequences (default: the 12 of the paper).
        max_images: score at most this many of the 20 images per sequence.
    """
    from palm.data.interhand import EVAL_SEQUENCES, InterHandDataset, eval_sequence
    from palm.train.personalize import personalize

    ds = InterHandDataset(root, split="test")
    seqs = [eval_sequence(s) for s in sequences] if sequences else list(EVAL_SEQUENCES)
    t0 = time.monotonic()
    groups = []
    for seq in seqs:
        samples = [with_mask(s, prior.model.hand) for s in ds.eval_samples(seq)]
        if max_images is not None:
            samples = samples[:max_images]
        emit(Log(f"personalising {seq.name}"))
        avatar = personalize(samples[0], prior, cfg, None if out_dir is None else Path(out_dir) / "avatars" / seq.name,
                             emit, cancel, preset=preset)
        rows = []
        for s in samples:
            score = score_sample(prior, avatar, registered(s, avatar, samples[0], prior.model.hand), work_res=score_res(cfg))
            score["image"] = str(s.meta.get("path", s.frame))
            rows.append(score)
        report = avatar.extra.get("report", {})
        groups.append({"name": seq.name, "input": {k: report.get(k) for k in METRICS}, "seen": mean_scores(rows),
                       "images": rows, "seconds": report.get("seconds")})
    return _table("interhand", groups, ("input", "seen"), preset, prior, time.monotonic() - t0, {"root": str(root)})


def with_mask(sample, hand):
    """The sample with a hand mask: its own, else U^2-Net-p refined by the registered hand's silhouette."""
    if sample.mask is not None:
        return sample
    if sample.hand is None:
        raise PalmError(sample.meta.get("path", sample.subject), "no mask and no hand registration")
    from palm.data.photo.fit import HandFit
    from palm.data.photo.segment import segment_hand

    fit = HandFit(pose=sample.hand.pose, betas=sample.hand.betas[: int(hand.n_betas)], transl=sample.hand.transl,
                  K=sample.camera.K, Rt=sample.camera.Rt, width=sample.width, height=sample.height, left=False)
    mask = segment_hand(sample.image, fit=fit, hand=hand)
    return dataclasses.replace(sample, mask=mask, meta={**sample.meta, "mask_source": "u2netp+fit"})


def _table(protocol: str, groups: list[dict[str, Any]], columns: tuple[str, ...], preset: str, prior, seconds: float,
           extra: dict[str, Any]) -> dict[str, Any]:
    mean = {}
    for col in columns:
        rows = [g[col] for g in groups if g.get(col) and (col == "input" or g[col].get("n", 0) > 0)]
        mean[col] = mean_scores(rows)
        mean[col]["n"] = len(rows)
    return {"protocol": protocol, "preset": preset, "prior_hash": prior.content_hash, "columns": list(columns),
            "groups": groups, "mean": mean, "seconds": round(seconds, 1), **extra}


def format_markdown(table: dict[str, Any]) -> str:
    """The result table as Markdown: one row per sequence/subject and column group, then the mean."""
    cols = table["columns"]
    lines = [f"### {table['protocol']} evaluation (preset {table['preset']}, prior {table['prior_hash']})", "",
             "| sequence | images | PSNR | SSIM | LPIPS |", "|---|---|---|---|---|"]

    def fmt(v, digits):
        return "-" if v is None or not math.isfinite(v) else f"{v:.{digits}f}"

    def row(name, col, s):
        n = s.get("n", 1) if col != "input" else 1
        return f"| {name} | {col} ({n}) | {fmt(s.get('psnr_masked'), 2)} | {fmt(s.get('ssim_masked'), 4)} | " \
               f"{fmt(s.get('lpips_masked'), 4)} |"

    for g in table["groups"]:
        for col in cols:
            if g.get(col) is not None and (col == "input" or g[col].get("n", 0) > 0):
                lines.append(row(g["name"], col, g[col]))
    for col in cols:
        if table["mean"][col].get("n", 0) > 0:
            lines.append(row("**mean**", col, table["mean"][col]))
    return "\n".join(lines) + "\n"


def table_json(table: dict[str, Any]) -> dict[str, Any]:
    """A JSON-safe copy (NaN and infinity become None)."""

    def clean(x):
        if isinstance(x, float):
            return x if math.isfinite(x) else None
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        if isinstance(x, np.generic):
            return clean(x.item())
        return x

    return clean(table)


# ---------------------------------------------------------------------------------------------
# Tiny priors and self-consistent samples (tests, benchmarks)
# ---------------------------------------------------------------------------------------------


def tiny_model_config():
    """A very small PalmNet config (CPU preset shrunk further) for tests: 4-level grids, 32-wide MLPs."""
    from palm.config import PRESETS, HashGridConfig, LightConfig, PBRConfig

    m = PRESETS["cpu"].model
    grid = HashGridConfig(n_levels=4, log2_hashmap_size=12, base_resolution=8, per_level_scale=2.0, start_level=4,
                          start_step=0, update_steps=1)
    return dataclasses.replace(
        m, hash_geometry=grid, hash_radiance=grid,
        geometry=dataclasses.replace(m.geometry, hidden_dim=32),
        radiance=dataclasses.replace(m.radiance, hidden_dim=32, sh_degree=2, sh_start_step=0, sh_full_step=1),
        material=dataclasses.replace(m.material, hidden_dim=32),
        sampler=dataclasses.replace(m.sampler, n_steps=48, importance_samples=4, secondary_samples=8,
                                    secondary_importance=1),
        light=LightConfig(n_lobes=8),
        pbr=PBRConfig(n_resamples=16, light_grid=(4, 4), global_illumination=False),
    )


def make_tiny_prior(path: str | Path, n_subjects: int = 3, seed: int = 0, code_std: float = 1.0,
                    appearance_gain: float = 4.0) -> str:
    """Write a random (untrained) tiny prior with PCA spaces to ``path``; returns its content hash.

    The geometry is the network's initial SDF (clipped to the hand by the occupancy grid); subject
    codes are ``N(0, code_std^2)`` so that the PCA directions change the rendered colour.
    """
    import torch

    from palm.fields.latent import fit_pca
    from palm.hand import load_hand
    from palm.model import PalmNet
    from palm.prior import save_prior

    torch.manual_seed(seed)
    model = PalmNet(tiny_model_config(), load_hand("open"), n_subjects=n_subjects)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        model.codes.shape.weight.copy_(torch.randn(model.codes.shape.weight.shape, generator=g) * code_std)
        model.codes.appearance.weight.copy_(torch.randn(model.codes.appearance.weight.shape, generator=g) * code_std)
        # an untrained radiance MLP barely reacts to its conditioning: amplify the appearance-code
        # columns of its first layer so that different codes give visibly different colours
        first = model.radiance.layers[0]
        first = getattr(first, "linear", first)
        n_a = model.cfg.latent.appearance_dim
        first.weight[:, -n_a:] *= appearance_gain
        for layer in list(model.radiance.layers)[1:]:
            getattr(layer, "linear", layer).weight.mul_(appearance_gain)
        # the same for the material network (albedo), whose Lipschitz bounds are raised to match
        mat_layers = list(model.material.mlp.layers)
        mat_layers[0].linear.weight[:, -n_a:] *= appearance_gain
        for layer in mat_layers[1:]:
            layer.linear.weight.mul_(appearance_gain)
        for layer in mat_layers:
            layer.c.fill_(2.0 * float(layer.linear.weight.abs().sum(1).max()))
    k = model.cfg.latent.n_pca
    model.pca = {"shape": fit_pca(model.codes.shape.weight, k), "appearance": fit_pca(model.codes.appearance.weight, k)}
    return save_prior(path, model, {"training": {"note": "random tiny prior for tests"}})


def prior_sample(prior, shape_coeffs=None, appearance_coeffs=None, pose=None, res: int = 48, light=None,
                 distance: float = 0.45, subject: str = "prior", pbr: bool = True):
    """A :class:`palm.data.types.FrameSample` rendered by the prior itself (a representable subject).

    The hand (``pose``, default flat) is seen from ``distance`` metres along +z (world up +y);
    the mask is the rendered opacity > 0.5, the image the render over white.
    """
    import torch

    from palm.data.types import CameraParams, FrameSample, HandParams
    from palm.model import Frame
    from palm.render.rays import Camera

    model = prior.model
    dev = model.light.device
    z_s, z_a = prior.codes_from_coeffs(shape_coeffs, appearance_coeffs)
    pose_t = torch.zeros(16, 3) if pose is None else torch.as_tensor(pose, dtype=torch.float32)
    betas = torch.zeros(model.hand.n_betas)
    with torch.no_grad():
        verts = model.hand(pose_t[None].to(dev), betas[None].to(dev)).vertices[0].cpu()
    centre = 0.5 * (verts.amin(0) + verts.amax(0))
    cam = Camera.look_at(centre + torch.tensor([0.0, 0.0, distance]), centre, up=(0.0, 1.0, 0.0), fov_deg=30.0,
                         height=res, width=res)
    frame = Frame(z_s.to(dev), z_a.to(dev), pose_t.to(dev), betas.to(dev), torch.zeros(3, device=dev))
    lobes = (model.light.detach() if light is None else torch.as_tensor(light, dtype=torch.float32)).to(dev)
    with torch.no_grad():
        out = model.render_image(cam.to(dev), frame, light=lobes, pbr=pbr)
    image = (out["rgb_pbr"] if pbr else out["rgb_rf"]).clamp(0, 1).cpu().numpy().astype(np.float32)
    mask = out["opacity"][..., 0].cpu().numpy() > 0.5
    cp = CameraParams(cam.K.double().numpy(), cam.Rt.double().numpy(), res, res)
    hand = HandParams(pose=pose_t.numpy().astype(np.float32), betas=betas.numpy().astype(np.float32),
                      transl=np.zeros(3, np.float32))
    return FrameSample(subject=subject, frame=0, view="cam", image=image, mask=mask, camera=cp, hand=hand,
                       env_lobes=lobes.cpu().numpy(), meta={"path": f"{subject}.png"})
