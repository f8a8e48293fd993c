"""Subjects of the synthetic set: shape, skin albedo and roughness maps (see :mod:`palm.data.synth`)."""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from palm.data.synth.config import FINGERS
from palm.data.synth.rig import unit
from palm.data.synth.shading import welded_normals
from palm.data.synth.shape import Proportions, sample_proportions


@dataclass
class SubjectSpec:
    """The random draw of one subject."""

    sid: str
    betas: list[float]
    """The rig's shape coefficients drawn for the subject (before :attr:`proportions`; the dataset
    registers the rig's best fit to the final shape, see :func:`palm.data.synth.shape.project_betas`)."""
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
    proportions: Proportions = field(default_factory=Proportions.identity)
    redness: float = 0.5
    """Extra haemoglobin at the knuckles and fingertips (relative)."""
    nail_roughness: float = 0.22
    vein_strength: float = 0.0
    """Visibility of the dorsal veins (lighter, thinner skin shows them more)."""
    oiliness: float = 0.5
    """Amplitude of the low-frequency roughness variation."""


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

    Overall size is the rig's first shape coefficient with sd 0.5 (6.5 % of the hand length; the
    rig's unit is 13 %), clipped to +-2; the rig's other coefficients (thickness) are N(0, 1),
    clipped to +-2.5; proportions come from :func:`palm.data.synth.shape.sample_proportions`.
    """
    melanin = float(np.exp(np.log(0.03) + stratum * (np.log(1.1) - np.log(0.03))))
    lightness = 1.0 - stratum
    betas = np.clip(rng.normal(0.0, 1.0, n_betas), -2.5, 2.5)
    if n_betas:
        betas[0] = np.clip(0.5 * betas[0], -2.0, 2.0)
    spec = SubjectSpec(
        sid=f"{index:04d}",
        betas=betas.round(4).tolist(),
        melanin=round(melanin, 4),
        haemoglobin=round(float(rng.uniform(0.22, 0.5)), 4),
        carotene=round(float(rng.uniform(0.6, 1.2)), 4),
        palm_melanin_ratio=round(float(rng.uniform(0.22, 0.4)), 4),
        freckles=round(float(rng.uniform(0.0, 1.0) * lightness**2), 4),
        crease_strength=round(float(rng.uniform(0.15, 0.32)), 4),
        roughness=round(float(rng.uniform(0.35, 0.6)), 4),
        metallic=round(float(rng.uniform(0.0, 0.04)), 4),
        seed=int(rng.integers(0, 2**31 - 1)),
        palm_lines=rng.normal(0.0, 0.03, 12).round(4).tolist(),
    )
    more = np.random.default_rng([spec.seed, 7])
    return dataclasses.replace(
        spec,
        proportions=sample_proportions(more),
        redness=round(float(more.uniform(0.25, 1.0)), 4),
        nail_roughness=round(float(more.uniform(0.14, 0.3)), 4),
        vein_strength=round(float(more.uniform(0.3, 1.0) * (0.25 + 0.75 * lightness)), 4),
        oiliness=round(float(more.uniform(0.2, 1.0)), 4),
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


def _polyline_distance(x: np.ndarray, poly: np.ndarray, step: float = 1e-4) -> np.ndarray:
    """(N,) distance from points (N, 3) to a polyline (M, 3), to within ``step / 2`` (metres).

    The polyline is resampled every ``step`` and the nearest sample found with a KD-tree.
    """
    from scipy.spatial import cKDTree

    dense = [poly[:1]]
    for a, b in itertools.pairwise(poly):
        k = max(1, int(np.ceil(np.linalg.norm(b - a) / step)))
        dense.append(a + (b - a) * (np.arange(1, k + 1) / k)[:, None])
    dist, _ = cKDTree(np.concatenate(dense)).query(x, k=1)
    return np.asarray(dist)


def _bezier(p0, p1, p2, n: int = 24) -> np.ndarray:
    t = np.linspace(0, 1, n)[:, None]
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2


def skin_fields(
    points: np.ndarray, normals: np.ndarray, keypoints: np.ndarray, spec: SubjectSpec
) -> dict[str, np.ndarray]:
    """Albedo, roughness and relief of a subject's skin at points of its flat (rest) hand.

    Args:
        points: (N, 3) rest-pose surface points. normals: (N, 3) unit normals there.
        keypoints: (21, 3) rest-pose keypoints (MediaPipe order).
        spec: the subject.

    Returns:
        ``albedo`` (N, 3) linear in [0.03, 0.8], ``roughness`` (N,) in [0.09, 0.99], ``height`` (N,)
        metres of relief along the normal (creases and nail folds negative, nail plates and veins
        positive; shading detail only, the mesh does not move), and the region weights ``palm``,
        ``nail``, ``crease``, ``knuckle``, ``tip``, ``vein`` (N,) for inspection.
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
    dorsum = 1.0 - palm
    height = np.zeros(len(x))

    # Nearest finger segment of every point (for nails, creases, knuckles and fingertips).
    segs = []
    for chain in FINGERS:
        for j in range(3):
            segs.append((chain[j], chain[j + 1]))
    params = np.zeros((len(x), len(segs)))
    dists = np.zeros((len(x), len(segs)))
    for s, (a, b) in enumerate(segs):
        params[:, s], dists[:, s] = _segment_param(x, kp[a], kp[b])
    nearest = dists.argmin(axis=1)

    # Nails: distal dorsal part of the last segment of each finger; a pale crescent (lunula) at the
    # proximal end, a white free edge at the distal end, a groove (the nail fold) around the plate.
    nail = np.zeros(len(x))
    nail_edge = np.zeros(len(x))
    lunula = np.zeros(len(x))
    fold = np.zeros(len(x))
    tip = np.zeros(len(x))
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
        across = _smoothstep(0.42, 0.55, facing)
        along = _smoothstep(0.3, 0.42, t) * (1 - _smoothstep(1.02, 1.12, t))
        m = across * along
        nail = np.maximum(nail, np.where(on, m, 0.0))
        nail_edge = np.maximum(nail_edge, np.where(on, m * _smoothstep(0.88, 1.0, t), 0.0))
        lunula = np.maximum(
            lunula, np.where(on, m * (1 - _smoothstep(0.36, 0.46, t)) * _smoothstep(0.6, 0.8, facing), 0.0)
        )
        # the fold: a thin band just outside the plate (proximal and lateral borders)
        rim = np.exp(-(((facing - 0.45) / 0.05) ** 2)) * along + np.exp(-(((t - 0.33) / 0.025) ** 2)) * across
        fold = np.maximum(fold, np.where(on, np.minimum(rim, 1.0) * (1 - _smoothstep(0.9, 1.02, t)), 0.0))
        tip = np.maximum(tip, np.where(nearest == s, _smoothstep(0.45, 0.95, t), 0.0))
    height += 0.00012 * nail - 0.0002 * fold * (1 - nail)

    # Flexion creases across the finger base, PIP and DIP (double lines) on the palmar side;
    # redder, darker knuckles with fine wrinkles on the back at PIP and DIP.
    crease = np.zeros(len(x))
    flex = np.zeros(len(x))
    knuckle = np.zeros(len(x))
    wrinkle = np.zeros(len(x))
    for f, chain in enumerate(FINGERS):
        base = kp[chain[0]] + (0.4 if f else 0.25) * (kp[chain[1]] - kp[chain[0]])
        # (joint position, crease strength, segments around it, bone direction, dorsal wrinkles)
        for j_pos, strength, seg_ids, bone, dorsal in (
            (base, 0.9, (3 * f,), kp[chain[1]] - kp[chain[0]], False),
            (kp[chain[1]], 1.0, (3 * f, 3 * f + 1), kp[chain[2]] - kp[chain[0]], True),
            (kp[chain[2]], 0.8, (3 * f + 1, 3 * f + 2), kp[chain[3]] - kp[chain[1]], True),
        ):
            sd = (x - j_pos) @ unit(bone) + rng.normal(0.0, 0.0004)
            member = np.isin(nearest, seg_ids)
            gap, second = rng.uniform(0.0008, 0.0016), rng.uniform(0.3, 1.0)
            lines = np.minimum(
                np.exp(-(((sd - gap) / 0.0007) ** 2)) + second * np.exp(-(((sd + gap) / 0.0007) ** 2)), 1.0
            )
            flex = np.maximum(flex, np.where(member, strength * palm * lines, 0.0))
            if dorsal:
                waves = np.exp(-((sd / 0.004) ** 2)) * (0.5 + 0.5 * np.sin(2 * np.pi * sd / 0.0016))
                knuckle = np.maximum(knuckle, np.where(member, dorsum * np.exp(-((sd / 0.006) ** 2)), 0.0))
                wrinkle = np.maximum(wrinkle, np.where(member, dorsum * waves, 0.0))
    crease = np.maximum(flex, 0.1 * wrinkle)
    height -= 0.0003 * flex + 0.00008 * wrinkle
    # The knuckles of the fist (MCP joints, and the thumb's MCP): a round patch on the back.
    for k in (2, 5, 9, 13, 17):
        rel = x - kp[k]
        planar = np.linalg.norm(rel - (rel @ n_palm)[:, None] * n_palm, axis=-1)
        knuckle = np.maximum(knuckle, 0.8 * dorsum * np.exp(-((planar / 0.009) ** 2)))

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
    level = (x - wrist) @ n_palm
    in_palm = (np.abs(level) < 0.03) & (palm > 0.5)
    x_plane = x - level[:, None] * n_palm
    palm_line = np.zeros(len(x))
    for poly in lines:
        planar = _polyline_distance(x_plane[in_palm], poly)
        palm_line[in_palm] = np.maximum(palm_line[in_palm], np.exp(-((planar / 0.0009) ** 2)))
    crease = np.maximum(crease, palm_line)
    height -= 0.00045 * palm_line

    # Dorsal veins: four curves from the wrist towards the gaps between the knuckles.
    vein = np.zeros(len(x))
    back = (np.abs(level) < 0.03) & (dorsum > 0.5)
    for i, r in enumerate((0.3, 0.05, -0.2, -0.42)):
        w0, w1 = rng.normal(0.0, 0.06, 2)
        poly = _bezier(palm_pt(0.02, 0.1 * r + w0), palm_pt(0.4, 0.6 * r + w1), palm_pt(0.78, 1.1 * r))
        planar = _polyline_distance(x_plane[back], poly)
        reach = _smoothstep(0.0, 0.15, ((x[back] - wrist) @ axis) / L)  # fade in from the wrist seal
        vein[back] = np.maximum(vein[back], np.exp(-((planar / 0.002) ** 2)) * reach)
    vein *= spec.vein_strength
    height += 0.0004 * vein

    # Noise: blotchy redness (12 mm), mottling (3 mm), freckles and relief (1.2 mm), oily patches (25 mm).
    lo, hi = x.min(0) - 0.01, x.max(0) + 0.01
    red = value_noise(x, 0.012, rng, lo, hi)
    mottle = value_noise(x, 0.003, rng, lo, hi)
    fine = value_noise(x, 0.0012, rng, lo, hi)
    oily = value_noise(x, 0.025, rng, lo, hi)
    spots = _smoothstep(0.55 - 0.35 * spec.freckles, 0.75 - 0.3 * spec.freckles, fine) * spec.freckles
    height += 0.00004 * fine

    mel = spec.melanin * (1 + (spec.palm_melanin_ratio - 1) * palm) * (1 + 0.12 * mottle)
    mel = mel * (1 + 1.6 * spots * dorsum) * (1 + 0.35 * knuckle * min(1.0, spec.melanin * 3))
    hem = spec.haemoglobin * (1 + 0.35 * palm) * (1 + 0.2 * red)
    hem = hem * (1 + spec.redness * (0.9 * knuckle + 0.7 * tip)) * (1 - 0.25 * vein)
    car = spec.carotene * (1 + 0.5 * palm)  # the thick palmar skin is yellower
    albedo = skin_albedo(mel, hem, car).astype(np.float64)
    albedo *= 1 - vein[:, None] * np.array([0.2, 0.1, -0.02])  # bluish where the veins show
    albedo *= (1 - spec.crease_strength * crease)[:, None]
    nail_bed = skin_albedo(spec.melanin * 0.3, spec.haemoglobin * 1.6, spec.carotene * 0.4) * 1.05 + 0.02
    pale = np.array([0.72, 0.68, 0.62])
    nail_albedo = nail_bed * (1 - 0.6 * lunula[:, None]) + 0.6 * lunula[:, None] * pale
    nail_albedo = nail_albedo * (1 - nail_edge[:, None]) + pale * nail_edge[:, None]
    albedo = albedo * (1 - nail[:, None]) + nail_albedo * nail[:, None]
    albedo *= (1 - 0.25 * fold * (1 - nail))[:, None]

    rough = spec.roughness * (1 + 0.1 * palm) * (1 + 0.08 * fine) * (1 + 0.25 * spec.oiliness * oily)
    rough = rough * (1 + 0.2 * knuckle) * (1 - 0.12 * tip * palm) + 0.08 * crease
    rough = rough * (1 - nail) + spec.nail_roughness * (1 + 0.5 * nail_edge) * nail
    return {
        "albedo": np.clip(albedo, 0.03, 0.8).astype(np.float32),
        "roughness": np.clip(rough, 0.09, 0.99).astype(np.float32),
        "height": height.astype(np.float32),
        "palm": palm.astype(np.float32),
        "nail": nail.astype(np.float32),
        "crease": crease.astype(np.float32),
        "knuckle": knuckle.astype(np.float32),
        "tip": tip.astype(np.float32),
        "vein": vein.astype(np.float32),
    }


def subject_material(hand: Any, spec: SubjectSpec, texture_size: int, betas: Any = None) -> dict[str, Any]:
    """The subject's albedo/roughness/relief texture maps and per-vertex values.

    Args:
        hand: the rig, or the subject's :class:`palm.data.synth.shape.ShapedHand`.
        spec: the subject. texture_size: texture side in texels.
        betas: the shape coefficients that give the subject's flat hand (default ``spec.betas``).

    Returns:
        ``albedo_map`` (T, T, 3), ``roughness_map`` (T, T, 1), ``height_map`` (T, T) metres and
        ``bump_map`` (T, T, 2) (the height's derivatives ``dh/du, dh/dv`` in metres per unit of UV;
        see :func:`palm.data.synth.shading.bumped_normals`) float32 tensors (all None without UVs),
        ``vertex_albedo`` (V, 3), ``vertex_roughness`` (V,).
    """
    from palm.render.raster import interpolate, rasterize_uv

    betas = torch.tensor([spec.betas if betas is None else list(np.asarray(betas, np.float32))], dtype=torch.float32)
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
        "height_map": None,
        "bump_map": None,
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
    height = np.zeros((T, T), np.float32)
    albedo[covered] = fields_t["albedo"]
    rough[covered] = fields_t["roughness"]
    height[covered] = fields_t["height"]
    # Fill texels outside the UV islands with the nearest island texel (no dark seams when filtering).
    _, (ri, ci) = ndimage.distance_transform_edt(~covered, return_indices=True)
    albedo, rough, height = albedo[ri, ci], rough[ri, ci], height[ri, ci]
    # texel x = u T, y = (1 - v) T: dh/du = T dh/dx, dh/dv = -T dh/dy
    dh_dy, dh_dx = np.gradient(height.astype(np.float64))
    bump = np.stack([T * dh_dx, -T * dh_dy], axis=-1).astype(np.float32)
    result["albedo_map"] = torch.from_numpy(albedo)
    result["roughness_map"] = torch.from_numpy(rough[..., None])
    result["height_map"] = torch.from_numpy(height)
    result["bump_map"] = torch.from_numpy(bump)
    return result
