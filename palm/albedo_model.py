"""The albedo model: how skin colour varies over the hand, across the prior's training subjects.

A photo shows one side of the hand. What the other side looks like has to come from the prior,
and PALM-Net's albedo field, conditioned on an appearance code fitted to one view, gives the
unseen back of a hand about the palm's colour (docs/personalization.md, "What holds the held-out
subjects' other views"). Real skin is not like that: palms carry a fraction of the dorsal
melanin, knuckles are redder, nails paler. This module keeps that structure explicitly, as a
linear model of log albedo over the rig's UV atlas, fitted to the training subjects' own albedo
maps (the synthetic data writes them, ``<sid>/albedo_map.png``):

    log a(u) = mean(u) + sum_k c_k basis_k(u),    c ~ N(0, I)

(``basis_k`` is the k-th principal direction times its standard deviation). The photo-detail
stage (:mod:`palm.detail`) fits ``c`` to the albedo the photo shows on the seen vertices (a
ridge solve, :func:`fit_coefficients`) and takes :func:`predict` as the start of its albedo fit,
which is also what the unseen side keeps. The model is part of the prior folder
(``albedo.safetensors``); a prior without it keeps the field's albedo.

Not in the paper (PALM-Net's captures have no albedo maps).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from palm.errors import PalmError
from palm.io import atomic_write

FILE = "albedo.safetensors"
MAP_FILE = "albedo_map.png"
ALBEDO_FLOOR = 0.01  # linear albedo below this is clamped before the log


@dataclass
class AlbedoModel:
    """Log-albedo mean and principal directions in the rig's UV atlas.

    Attributes:
        mean: ``(3, R, R)`` mean log linear albedo; row 0 of the image is ``v = 1`` (the top of the
            albedo map, as the data writes it).
        basis: ``(K, 3, R, R)`` directions times their standard deviation.
        explained_variance_ratio: ``(K,)``.
        subjects: the subjects it was fitted to.
        hand: the name of the rig whose UV atlas it lives in (a model is used only with that rig).
    """

    mean: Tensor
    basis: Tensor
    explained_variance_ratio: Tensor
    subjects: list[str] = field(default_factory=list)
    hand: str = "open"

    @property
    def n_components(self) -> int:
        return int(self.basis.shape[0])


def read_albedo_map(path: str | os.PathLike) -> np.ndarray:
    """A subject's ``albedo_map.png`` (linear albedo, sRGB-encoded) -> ``(H, W, 3)`` linear float32."""
    from palm.data.palm_dataset import read_rgb
    from palm.render.color import srgb_to_linear

    return srgb_to_linear(read_rgb(path)).astype(np.float32)


def build_albedo_model(maps: list[np.ndarray], res: int = 128, n_components: int = 8,
                       subjects: list[str] | None = None, hand: str = "open") -> AlbedoModel:
    """PCA of the log albedo maps (each ``(H, W, 3)`` linear), area-averaged to ``res x res``."""
    from palm.fields.latent import fit_pca

    if len(maps) < 2:
        raise ValueError("an albedo model needs at least two subjects' maps")
    rows = []
    for m in maps:
        t = torch.as_tensor(np.asarray(m, np.float32)).permute(2, 0, 1)[None]
        t = F.interpolate(t, size=(res, res), mode="area")[0]
        rows.append(t.clamp_min(ALBEDO_FLOOR).log().reshape(-1))
    space = fit_pca(torch.stack(rows), min(n_components, len(maps) - 1))
    basis = space.basis * space.explained_variance.clamp_min(0).sqrt()[:, None]
    return AlbedoModel(mean=space.mean.float().reshape(3, res, res), basis=basis.float().reshape(-1, 3, res, res),
                       explained_variance_ratio=space.explained_variance_ratio.float(), subjects=list(subjects or []),
                       hand=hand)


def build_from_dataset(root: str | os.PathLike, subjects: list[str], res: int = 128,
                       n_components: int = 8, hand: str = "open") -> AlbedoModel | None:
    """The model of ``subjects``' albedo maps in a dataset; None when fewer than two have one."""
    found = [s for s in subjects if (Path(root) / s / MAP_FILE).is_file()]
    if len(found) < 2:
        return None
    maps = [read_albedo_map(Path(root) / s / MAP_FILE) for s in found]
    return build_albedo_model(maps, res, n_components, found, hand)


def save_albedo_model(path: str | os.PathLike, model: AlbedoModel) -> None:
    from safetensors.torch import save_file

    tensors = {"mean": model.mean.contiguous(), "basis": model.basis.contiguous(),
               "explained_variance_ratio": model.explained_variance_ratio.contiguous()}
    with atomic_write(path) as tmp:
        save_file({k: v.half() for k, v in tensors.items()}, str(tmp),
                  metadata={"subjects": ",".join(model.subjects), "hand": model.hand})


def load_albedo_model(path: str | os.PathLike) -> AlbedoModel:
    """Read :func:`save_albedo_model`'s file.

    Raises:
        PalmError: unreadable, missing tensors, wrong shapes or non-finite values.
    """
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            keys = set(f.keys())
            missing = {"mean", "basis", "explained_variance_ratio"} - keys
            if missing:
                raise PalmError(path, f"not an albedo model: missing {sorted(missing)}")
            t = {k: f.get_tensor(k).float() for k in ("mean", "basis", "explained_variance_ratio")}
            meta = f.metadata() or {}
    except PalmError:
        raise
    except Exception as exc:  # noqa: BLE001 - safetensors raises several error types for corrupt files
        raise PalmError(path, f"cannot read the albedo model ({exc})") from None
    mean, basis, ratio = t["mean"], t["basis"], t["explained_variance_ratio"]
    if mean.ndim != 3 or mean.shape[0] != 3 or mean.shape[1] != mean.shape[2] or mean.shape[1] < 2:
        raise PalmError(path, f"mean must be (3, R, R), got {tuple(mean.shape)}")
    if basis.ndim != 4 or tuple(basis.shape[1:]) != tuple(mean.shape) or tuple(ratio.shape) != (basis.shape[0],):
        raise PalmError(path, f"basis must be (K, 3, R, R) and the ratios (K,), got {tuple(basis.shape)}, "
                              f"{tuple(ratio.shape)}")
    if not all(bool(torch.isfinite(x).all()) for x in (mean, basis, ratio)):
        raise PalmError(path, "non-finite values")
    subjects = [s for s in str(meta.get("subjects", "")).split(",") if s]
    return AlbedoModel(mean, basis, ratio, subjects, str(meta.get("hand", "open")))


# ---------------------------------------------------------------------------------------------
# Using it on a mesh
# ---------------------------------------------------------------------------------------------


def surface_uv(points: np.ndarray, rest_vertices: np.ndarray, faces: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """UV of the rig surface point nearest to each of ``points``.

    The rig's surface is sampled at its vertices, edge midpoints and face centroids (UVs
    interpolated linearly, as the renderer does), then matched by nearest neighbour.

    Args:
        points: (N, 3) canonical points (e.g. a baked mesh's vertices). rest_vertices: (V, 3) the
            rig's flat hand in the same space. faces: (F, 3). uv: (V, 2).

    Returns:
        (N, 2) float32 texture coordinates.
    """
    from scipy.spatial import cKDTree

    v = np.asarray(rest_vertices, np.float64)
    f = np.asarray(faces, np.int64)
    t = np.asarray(uv, np.float64)
    edges = np.unique(np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), axis=1), axis=0)
    pos = np.concatenate([v, v[edges].mean(1), v[f].mean(1)])
    tex = np.concatenate([t, t[edges].mean(1), t[f].mean(1)])
    _, idx = cKDTree(pos).query(np.asarray(points, np.float64), k=1)
    return tex[idx].astype(np.float32)


def sample(model: AlbedoModel, uv: np.ndarray) -> tuple[Tensor, Tensor]:
    """Bilinear samples of the model at ``uv (N, 2)``: ``(mean (N, 3), basis (K, N, 3))``."""
    grid = torch.as_tensor(np.asarray(uv, np.float32)).clone()
    grid = torch.stack([grid[:, 0] * 2 - 1, 1 - grid[:, 1] * 2], 1)[None, None]  # v = 1 is the top row
    stack = torch.cat([model.mean[None], model.basis])  # (K+1, 3, R, R)
    out = F.grid_sample(stack, grid.expand(len(stack), -1, -1, -1), mode="bilinear", padding_mode="border",
                        align_corners=False)[:, :, 0].permute(0, 2, 1)  # (K+1, N, 3)
    return out[0], out[1:]


def fit_coefficients(mean: Tensor, basis: Tensor, log_albedo: Tensor, weight: Tensor, noise: float = 0.09) -> Tensor:
    """Ridge fit of the coefficients to observed log albedo.

    Minimises ``sum_n w_n |log_albedo_n - mean_n - sum_k c_k basis_kn|^2 / (noise^2 sum_n w_n) + |c|^2``:
    the seen side as a whole is one observation whose mean squared log error is ``noise^2``. The
    errors of neighbouring vertices are not independent (one photo fixes only albedo x light,
    and shading the mesh does not explain is spread over regions), so counting vertices as
    independent observations would fit the small components to those errors (held-out synthetic
    subjects: 0.115 log-RMSE on the unseen vertices at ``noise`` 0.09 against 0.15 at 0.015).

    Args:
        mean: (N, 3). basis: (K, N, 3). log_albedo: (N, 3). weight: (N,) >= 0 (0: unseen).

    Returns:
        (K,) coefficients in standard deviations (zeros when nothing is seen).
    """
    w = weight.double().clamp_min(0)
    if float(w.sum()) <= 0:
        return torch.zeros(basis.shape[0])
    B = basis.permute(1, 2, 0).reshape(-1, basis.shape[0]).double()  # (N*3, K)
    r = (log_albedo - mean).reshape(-1).double()
    w = (w / (w.sum() * noise**2)).repeat_interleave(3)
    A = B.T @ (w[:, None] * B) + torch.eye(B.shape[1], dtype=torch.float64)
    return torch.linalg.solve(A, B.T @ (w * r)).float()


def predict(mean: Tensor, basis: Tensor, coeffs: Tensor) -> Tensor:
    """``(N, 3)`` linear albedo ``exp(mean + sum_k c_k basis_k)``."""
    return (mean + torch.einsum("k,knc->nc", coeffs, basis)).exp()


def fit_to_mesh(model: AlbedoModel, uv: np.ndarray, albedo: Tensor, weight: Tensor, limit: float = 3.0,
                noise: float = 0.09) -> tuple[Tensor, Tensor]:
    """The model's albedo for a mesh, fitted to what is seen of it.

    Args:
        uv: (N, 2) the vertices' coordinates in the model's atlas (:func:`surface_uv`).
        albedo: (N, 3) observed linear albedo (any value where ``weight`` is 0). weight: (N,) how
            much of each vertex is seen (0 to 1).
        limit: the coefficients stay within this many standard deviations.

    Returns:
        ``(albedo (N, 3), coeffs (K,))``: the model's prediction for every vertex.
    """
    mean, basis = sample(model, uv)
    log_obs = torch.as_tensor(albedo, dtype=torch.float32).clamp_min(ALBEDO_FLOOR).log()
    coeffs = fit_coefficients(mean, basis, log_obs, torch.as_tensor(weight, dtype=torch.float32), noise)
    coeffs = coeffs.clamp(-limit, limit)
    return predict(mean, basis, coeffs).clamp(ALBEDO_FLOOR, 1.0), coeffs


def observed_albedo(pixels: dict[str, Tensor], n_vertices: int, min_shading: float = 0.05) -> tuple[Tensor, Tensor]:
    """The linear albedo the photo shows at each vertex, and how much of the vertex is seen.

    ``pixels`` are :func:`palm.detail.hand_pixels` of the mesh in the photo's view. Per hand pixel
    the albedo that explains it is ``(linear(photo) - S) / D``; pixels whose diffuse shading is
    below ``min_shading`` times the median (deep shadow) are left out. Each pixel is spread over
    its triangle's vertices by its barycentrics.

    Returns:
        ``(albedo (V, 3), weight (V,))``: weight = summed barycentrics, capped at 1 (0: unseen).
    """
    from palm.render.color import srgb_to_linear

    target, vid, bary, D, S = (pixels[k] for k in ("target", "vid", "bary", "D", "S"))
    lit = D.min(1).values > min_shading * D.mean(1).median() if len(D) else torch.zeros(0, dtype=torch.bool)
    est = ((srgb_to_linear(target) - S) / D.clamp_min(1e-4))[lit].clamp(0.0, 1.0)
    vid, bary = vid[lit].reshape(-1), bary[lit].reshape(-1)
    num = torch.zeros(n_vertices, 3).index_add_(0, vid, bary[:, None] * est.repeat_interleave(3, 0))
    weight = torch.zeros(n_vertices).index_add_(0, vid, bary)
    return num / weight.clamp_min(1e-6)[:, None], weight.clamp(max=1.0)


def mesh_uv(prior, mesh, betas: Any) -> np.ndarray | None:
    """(V, 2) a baked mesh's (:class:`palm.bake.BakedAvatar`) vertices in the prior's albedo-model
    atlas, or None when the prior has no model or its rig is not the one the model was made on (or
    has no UVs)."""
    model, hand = getattr(prior, "albedo_model", None), prior.model.hand
    if model is None or hand.uv is None or getattr(hand, "name", None) != model.hand:
        return None
    with torch.no_grad():
        rest, _ = hand.rest(torch.as_tensor(np.asarray(betas, np.float32))[None].to(hand.v_template))
    return surface_uv(mesh.vertices, rest[0].cpu().numpy(), hand.faces.cpu().numpy(), hand.uv.cpu().numpy())


__all__ = ["AlbedoModel", "build_albedo_model", "build_from_dataset", "fit_coefficients", "fit_to_mesh",
           "load_albedo_model", "mesh_uv", "observed_albedo",
           "predict", "read_albedo_map", "sample", "save_albedo_model", "surface_uv"]
