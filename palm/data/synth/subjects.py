"""Subjects of the synthetic set: shape, skin albedo and roughness maps (see :mod:`palm.data.synth`)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from palm.data.synth.config import FINGERS
from palm.data.synth.rig import unit
from palm.data.synth.shading import welded_normals


@dataclass
class SubjectSpec:
    """The random draw of one subject."""

    sid: str
    betas: list[float]
    melanin: float
    haemoglobin: float
    carotene: float
    palm_melanin_ratio: float
    freckles: float
    crease_strength: float
    roughness: float
    metallic: float
    seed: int
    palm_lines: list[float] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# Skin
# ---------------------------------------------------------------------------------------------

_S_MEL = (0.60, 0.75, 1.00)
_S_HEM = (0.06, 0.95, 0.80)
_S_CAR = (0.0, 0.05, 0.35)


def skin_albedo(melanin: Any, haemoglobin: Any, carotene: Any = 1.0) -> np.ndarray:
    """Linear RGB diffuse albedo of skin from chromophore concentrations (two-parameter model).

    Args:
        melanin, haemoglobin, carotene: arrays broadcastable to each other (any shape ``S``).

    Returns:
        (*S, 3) float32 linear albedo.
    """
    m = np.asarray(melanin, np.float64)[..., None]
    h = np.asarray(haemoglobin, np.float64)[..., None]
    c = np.asarray(carotene, np.float64)[..., None]
    optical = 3.0 * m * np.asarray(_S_MEL) + h * np.asarray(_S_HEM) + c * np.asarray(_S_CAR)
    return (0.82 * np.exp(-optical)).astype(np.float32)


def sample_subject(rng: np.random.Generator, index: int, stratum: float, n_betas: int) -> SubjectSpec:
    """Draw one subject.

    Args:
        rng: the subject's generator.
        index: subject number (its id is the 4-digit ``index``).
        stratum: in [0, 1): position of the subject on the light-to-dark melanin scale.
        n_betas: shape coefficients of the rig.
    """
    melanin = float(np.exp(np.log(0.03) + stratum * (np.log(1.1) - np.log(0.03))))
    lightness = 1.0 - stratum
    return SubjectSpec(
        sid=f"{index:04d}",
        betas=np.clip(rng.normal(0.0, 1.0, n_betas), -2.5, 2.5).round(4).tolist(),
        melanin=round(melanin, 4),
        haemoglobin=round(float(rng.uniform(0.22, 0.5)), 4),
        carotene=round(float(rng.uniform(0.6, 1.2)), 4),
        palm_melanin_ratio=round(float(rng.uniform(0.22, 0.4)), 4),
        freckles=round(float(rng.uniform(0.0, 1.0) * lightness**2), 4),
        crease_strength=round(float(rng.uniform(0.25, 0.45)), 4),
        roughness=round(float(rng.uniform(0.35, 0.6)), 4),
        metallic=round(float(rng.uniform(0.0, 0.04)), 4),
        seed=int(rng.integers(0, 2**31 - 1)),
        palm_lines=rng.normal(0.0, 0.03, 12).round(4).tolist(),
    )


def value_noise(
    points: np.ndarray, cell: float, rng: np.random.Generator, lo: np.ndarray, hi: np.ndarray
) -> np.ndarray:
    """Trilinear value noise in [-1, 1] on a random lattice of spacing ``cell`` over a box.

    Args:
        points: (N, 3). cell: lattice spacing (metres). lo, hi: (3,) box containing the points.

    Returns:
        (N,) float32.
    """
    dims = np.ceil((hi - lo) / cell).astype(int) + 2
    lattice = rng.uniform(-1.0, 1.0, size=tuple(dims)).astype(np.float32)
    g = (points - lo) / cell
    i0 = np.clip(np.floor(g).astype(int), 0, dims - 2)
    f = np.clip(g - i0, 0.0, 1.0)
    f = f * f * (3 - 2 * f)  # smoothstep fade
    out = np.zeros(len(points), np.float32)
    for dx in (0, 1):
        for dy in (0, 1):
            for dz in (0, 1):
                w = (
                    (f[:, 0] if dx else 1 - f[:, 0])
                    * (f[:, 1] if dy else 1 - f[:, 1])
                    * (f[:, 2] if dz else 1 - f[:, 2])
                )
                out += w * lattice[i0[:, 0] + dx, i0[:, 1] + dy, i0[:, 2] + dz]
    return out


def _smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _segment_param(x: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Parameter along segment ``a -> b`` (unclamped) and distance to the clamped segment."""
    ab = b - a
    t = (x - a) @ ab / max(float(ab @ ab), 1e-12)
    closest = a + np.clip(t, 0, 1)[:, None] * ab
    return t, np.linalg.norm(x - closest, axis=-1)


def _polyline_distance(x: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """(N,) distance from points (N, 3) to a polyline (M, 3)."""
    best = np.full(len(x), np.inf)
    for a, b in itertools.pairwise(poly):
        best = np.minimum(best, _segment_param(x, a, b)[1])
    return best


def _bezier(p0, p1, p2, n: int = 24) -> np.ndarray:
    t = np.linspace(0, 1, n)[:, None]
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2


def skin_fields(
    points: np.ndarray, normals: np.ndarray, keypoints: np.ndarray, spec: SubjectSpec
) -> dict[str, np.ndarray]:
    """Albedo and roughness of a subject's skin at points of its flat (rest) hand.

    Args:
        points: (N, 3) rest-pose surface points. normals: (N, 3) unit normals there.
        keypoints: (21, 3) rest-pose keypoints (MediaPipe order).
        spec: the subject.

    Returns:
        ``albedo`` (N, 3) linear in [0.03, 0.8], ``roughness`` (N,) in [0.09, 0.99], and the region
        weights ``palm``, ``nail``, ``crease`` (N,) for inspection.
    """
    rng = np.random.default_rng(spec.seed)
    kp = keypoints.astype(np.float64)
    x = points.astype(np.float64)
    n = unit(normals.astype(np.float64))
    wrist, idx_mcp, mid_mcp, pinky_mcp = kp[0], kp[5], kp[9], kp[17]
    n_palm = unit(np.cross(idx_mcp - wrist, pinky_mcp - wrist))  # right hand: out of the palm
    axis = unit(mid_mcp - wrist)
    side = unit(np.cross(n_palm, axis))
    if side @ (idx_mcp - pinky_mcp) < 0:
        side = -side  # toward the index / thumb
    palm = _smoothstep(-0.3, 0.35, n @ n_palm)

    # Nearest finger segment of every point (for nails and finger creases).
    segs = []
    for chain in FINGERS:
        for j in range(3):
            segs.append((chain[j], chain[j + 1]))
    params = np.zeros((len(x), len(segs)))
    dists = np.zeros((len(x), len(segs)))
    for s, (a, b) in enumerate(segs):
        params[:, s], dists[:, s] = _segment_param(x, kp[a], kp[b])
    nearest = dists.argmin(axis=1)

    # Nails: distal dorsal part of the last segment of each finger.
    nail = np.zeros(len(x))
    nail_edge = np.zeros(len(x))
    for f in range(5):
        s = 3 * f + 2
        a, b = kp[segs[s][0]], kp[segs[s][1]]
        bone = unit(b - a)
        dorsal = -n_palm
        if f == 0:  # the thumb's nail faces away from the palm and outward
            dorsal = unit(0.8 * unit(side - (side @ bone) * bone) - 0.6 * n_palm)
        dorsal = unit(dorsal - (dorsal @ bone) * bone)
        t = params[:, s]
        on = (nearest == s) | ((nearest == s - 1) & (t > 0.0))
        facing = n @ dorsal
        m = _smoothstep(0.42, 0.55, facing) * _smoothstep(0.3, 0.42, t) * (1 - _smoothstep(1.02, 1.12, t))
        nail = np.maximum(nail, np.where(on, m, 0.0))
        nail_edge = np.maximum(nail_edge, np.where(on, m * _smoothstep(0.88, 1.0, t), 0.0))

    # Flexion creases: across the finger at PIP and DIP (double) and the finger base.
    crease = np.zeros(len(x))
    knuckle = np.zeros(len(x))
    for f, chain in enumerate(FINGERS):
        base = kp[chain[0]] + (0.4 if f else 0.25) * (kp[chain[1]] - kp[chain[0]])
        # (joint position, crease strength, segments around it, bone direction, dorsal wrinkles)
        for j_pos, strength, seg_ids, bone, dorsal in (
            (base, 0.9, (3 * f,), kp[chain[1]] - kp[chain[0]], False),
            (kp[chain[1]], 1.0, (3 * f, 3 * f + 1), kp[chain[2]] - kp[chain[0]], True),
            (kp[chain[2]], 0.8, (3 * f + 1, 3 * f + 2), kp[chain[3]] - kp[chain[1]], True),
        ):
            sd = (x - j_pos) @ unit(bone)
            member = np.isin(nearest, seg_ids)
            lines = np.exp(-(((sd - 0.0011) / 0.0006) ** 2)) + np.exp(-(((sd + 0.0011) / 0.0006) ** 2))
            crease = np.maximum(crease, np.where(member, strength * palm * np.minimum(lines, 1.0), 0.0))
            if dorsal:
                wrinkles = np.exp(-((sd / 0.004) ** 2)) * (0.5 + 0.5 * np.sin(2 * np.pi * sd / 0.0016))
                knuckle = np.maximum(knuckle, np.where(member, (1 - palm) * np.exp(-((sd / 0.006) ** 2)), 0.0))
                crease = np.maximum(crease, np.where(member, 0.2 * (1 - palm) * wrinkles, 0.0))

    # The three main palm lines as quadratic curves in the palm plane (subject-jittered).
    L = float(np.linalg.norm(mid_mcp - wrist))
    W = float(np.linalg.norm(idx_mcp - pinky_mcp))
    j = np.asarray(spec.palm_lines + [0.0] * 12)[:12]

    def palm_pt(s: float, r: float) -> np.ndarray:
        return wrist + s * L * axis + r * W * side

    lines = [
        _bezier(palm_pt(0.80 + j[0], -0.62), palm_pt(0.78 + j[1], -0.1 + j[2]), palm_pt(0.93 + j[3], 0.25)),  # heart
        _bezier(palm_pt(0.66 + j[4], 0.55), palm_pt(0.6 + j[5], 0.0 + j[6]), palm_pt(0.5 + j[7], -0.45)),  # head
        _bezier(palm_pt(0.66 + j[8], 0.55), palm_pt(0.35 + j[9], 0.2 + j[10]), palm_pt(0.05, 0.42 + j[11])),  # life
    ]
    height = (x - wrist) @ n_palm
    in_palm = (np.abs(height) < 0.03) & (palm > 0.5)
    x_plane = x - height[:, None] * n_palm
    for poly in lines:
        planar = _polyline_distance(x_plane, poly)
        crease = np.maximum(crease, np.where(in_palm, np.exp(-((planar / 0.0009) ** 2)), 0.0))

    # Noise: blotchy redness (12 mm), mottling (3 mm), freckles (1.2 mm).
    lo, hi = x.min(0) - 0.01, x.max(0) + 0.01
    red = value_noise(x, 0.012, rng, lo, hi)
    mottle = value_noise(x, 0.003, rng, lo, hi)
    fine = value_noise(x, 0.0012, rng, lo, hi)
    spots = _smoothstep(0.55 - 0.35 * spec.freckles, 0.75 - 0.3 * spec.freckles, fine) * spec.freckles

    mel = spec.melanin * (1 + (spec.palm_melanin_ratio - 1) * palm) * (1 + 0.12 * mottle)
    mel = mel * (1 + 1.6 * spots * (1 - palm)) * (1 + 0.35 * knuckle * min(1.0, spec.melanin * 3))
    hem = spec.haemoglobin * (1 + 0.35 * palm) * (1 + 0.2 * red)
    albedo = skin_albedo(mel, hem, spec.carotene).astype(np.float64)
    albedo *= (1 - spec.crease_strength * crease)[:, None]
    nail_albedo = skin_albedo(spec.melanin * 0.25, spec.haemoglobin * 1.3, spec.carotene * 0.5) * 1.05 + 0.04
    nail_albedo = nail_albedo * (1 - nail_edge[:, None]) + np.array([0.72, 0.68, 0.62]) * nail_edge[:, None]
    albedo = albedo * (1 - nail[:, None]) + nail_albedo * nail[:, None]

    rough = spec.roughness * (1 + 0.1 * palm) * (1 + 0.08 * fine) + 0.08 * crease
    rough = rough * (1 - nail) + 0.22 * nail
    return {
        "albedo": np.clip(albedo, 0.03, 0.8).astype(np.float32),
        "roughness": np.clip(rough, 0.09, 0.99).astype(np.float32),
        "palm": palm.astype(np.float32),
        "nail": nail.astype(np.float32),
        "crease": crease.astype(np.float32),
    }


def subject_material(hand: Any, spec: SubjectSpec, texture_size: int) -> dict[str, Any]:
    """The subject's albedo/roughness texture maps and per-vertex values.

    Returns:
        ``albedo_map`` (T, T, 3) and ``roughness_map`` (T, T, 1) float32 tensors (None without UVs),
        ``vertex_albedo`` (V, 3), ``vertex_roughness`` (V,), ``keypoints`` (21, 3) rest keypoints.
    """
    from palm.render.raster import interpolate, rasterize_uv

    betas = torch.tensor([spec.betas], dtype=torch.float32)
    zero = torch.zeros(1, 16, 3)
    with torch.no_grad():
        out = hand(pose=zero, betas=betas)
        verts = out.vertices
        normals = welded_normals(verts, hand)[0]
    kp = out.keypoints[0].numpy()
    fields_v = skin_fields(verts[0].numpy(), normals.numpy(), kp, spec)
    result: dict[str, Any] = {
        "vertex_albedo": torch.from_numpy(fields_v["albedo"]),
        "vertex_roughness": torch.from_numpy(fields_v["roughness"]),
        "albedo_map": None,
        "roughness_map": None,
    }
    if hand.uv is None:
        return result
    from scipy import ndimage

    T = texture_size
    frags = rasterize_uv(hand.uv.cpu(), hand.faces.cpu(), T)
    pos = interpolate(verts[0], hand.faces, frags)[0]
    nrm = interpolate(normals, hand.faces, frags)[0]
    covered = frags.mask[0].numpy()
    fields_t = skin_fields(pos.numpy()[covered], nrm.numpy()[covered], kp, spec)
    albedo = np.zeros((T, T, 3), np.float32)
    rough = np.zeros((T, T), np.float32)
    albedo[covered] = fields_t["albedo"]
    rough[covered] = fields_t["roughness"]
    # Fill texels outside the UV islands with the nearest island texel (no dark seams when filtering).
    _, (ri, ci) = ndimage.distance_transform_edt(~covered, return_indices=True)
    albedo, rough = albedo[ri, ci], rough[ri, ci]
    result["albedo_map"] = torch.from_numpy(albedo)
    result["roughness_map"] = torch.from_numpy(rough[..., None])
    return result
