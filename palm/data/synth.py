"""The synthetic multi-subject hand dataset: subjects, poses, a 7-camera rig, SG lighting, PALM layout.

``generate(out, SynthConfig(...))`` renders ``n_subjects x n_poses x n_views`` images with the
project's reference renderer and writes them in the PALM layout (:mod:`palm.data.palm_dataset`).

Subjects (:func:`sample_subject`) differ the way real hands do:

* shape: the hand rig's shape coefficients ``betas ~ N(0, 1)``, clipped to +-2.5;
* skin albedo: a two-chromophore model (:func:`skin_albedo`): epidermal melanin ``m`` and dermal
  haemoglobin ``h`` attenuate a bright dermis, ``a = 0.82 exp(-(3 m s_m + h s_h + c s_c))`` with
  per-channel absorption ``s_m = (0.60, 0.75, 1.00)`` (melanin, rising to the blue),
  ``s_h = (0.06, 0.95, 0.80)`` (haemoglobin: green/blue) and a constant carotene-like ``c s_c``
  (``s_c = (0, 0.05, 0.35)``). Subjects' ``m`` is stratified over ``[0.03, 1.1]`` (log scale):
  light to dark skin. The map (:func:`skin_fields`) adds lighter, pinker palms (0.3x melanin on the
  palmar side), nails (distal dorsal fingertips: pale pink plate, lower roughness, white free edge),
  flexion creases across PIP/DIP/finger bases and the three main palm lines, darker dorsal
  knuckles with fine wrinkles, and 3D value noise at 12 mm (redness), 3 mm (mottling) and 1.2 mm
  (freckles, stronger for lighter subjects);
* roughness ``0.35 .. 0.6`` per subject (palms rougher, nails 0.22) and metallic ``0 .. 0.04``
  (the engine BRDF's only other specular control: ``F0 = 0.04 (1 - m) + a m``).

Poses: a preset (``palm.hand.POSE_PRESETS``) with probability ``preset_probability``, otherwise a
random convex mix of presets plus N(0, 0.08 rad) noise, clipped per component to the presets'
range widened by 0.15 rad (the joint limits); a uniformly random global orientation; the hand's
bounding-box centre is placed at the world origin (translation jitter 1 cm).

Cameras: 7 like PALM's rig (``MCU_01`` .. ``MCU_07``) on a sphere of radius ``camera_distance``
around the origin, looking at it with world +y up, per-subject jitter of 4 deg, 3 cm, 3 % focal and
1 % principal point. ``n_views < 7`` uses the first cameras.

Lighting: one environment per frame from the SG presets (``palm.render.envmap.load_environment``),
rotated about +y by a random angle, scaled so that the 95th percentile over normals of a white
Lambertian surface's radiance is ``exposure``. The background shows the environment itself (the
source HDR map when :mod:`palm.render.envmap` can find it, else the SG radiance).

Reference renderer (what a pixel is; :func:`render_view`). The rig mesh (its faces plus the
wrist seal) is rasterised (:mod:`palm.render.raster`, one sample at each pixel centre). Per pixel:
position, smooth normal (vertex normals welded across UV seams; flat on seal faces), unit view
direction ``v`` toward the camera centre, albedo and roughness from the subject's UV maps
(bilinear; seal faces use interpolated per-vertex albedo), and the subject's metallic. The SG
lobes are split into groups (:func:`lobe_groups`: each of the ``shadow_groups`` = 7 strongest lobes
alone, the others together) and the radiance is

    L = sum_g V_g(x) * shade_sg(n, v, albedo, roughness, metallic, lobes_g)

i.e. exactly the engine's Lambert + GGX BRDF under the SG light (:func:`palm.render.brdf.shade_sg`,
deterministic) with one shadow factor per group. ``V_g`` is computed per vertex and interpolated
barycentrically (:func:`lobe_visibility`): binary visibility toward 48 directions (the axes of
the 16 strongest lobes and 32 Fibonacci-sphere directions) from orthographic 96 x 96 shadow maps of
the sealed mesh clustered on a 3 mm grid (normal offset 1 texel, depth bias 2.5 texels), averaged
with weights ``S_g(w) max(n . w, 0)`` where ``S_g`` is the group's SG radiance. So a sun-like lobe
casts hard shadows, the sky gives ambient occlusion; there is no interreflection.
Anti-aliasing: pixels whose ``supersample``^2 sub-pixel samples are all covered keep the centre
sample; partly covered pixels average their shaded and background samples in linear RGB. The
image is ``clamp(sRGB(L))`` over the background (the environment seen through the pixel, in the
same rotation and exposure). Mask, depth, normals, albedo images and keypoints come from the
pixel-centre rasterisation (no anti-aliasing), so the mask is exactly the silhouette of the
registered hand.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from palm.data.palm_dataset import DEPTH_MAX_M, POSE_ABSOLUTE, frame_name
from palm.data.types import CameraParams
from palm.errors import PalmError
from palm.imageio import to_srgb8, to_u8, write_png
from palm.io import atomic_dir, atomic_write, write_json
from palm.jobs import ETA, CancelToken, Emit, Log, Progress, check_cancel, null_emit
from palm.render.sg import lobe_groups, normalise_exposure

GENERATOR_VERSION = "1.0"
CAMERA_IDS = tuple(f"MCU_{i:02d}" for i in range(1, 8))
#: Nominal (azimuth, elevation) in degrees of the 7 rig cameras around the hand.
RIG_ANGLES = ((0.0, 15.0), (75.0, 30.0), (-75.0, 30.0), (150.0, 10.0), (-150.0, 10.0), (25.0, 65.0), (180.0, 55.0))
#: Finger chains in MediaPipe keypoint indices (thumb, index, middle, ring, pinky).
FINGERS = ((1, 2, 3, 4), (5, 6, 7, 8), (9, 10, 11, 12), (13, 14, 15, 16), (17, 18, 19, 20))


@dataclass(frozen=True)
class SynthConfig:
    """Everything that defines a synthetic dataset (stored in its ``meta.json``)."""

    n_subjects: int = 20
    n_poses: int = 3
    n_views: int = 7
    resolution: int = 128
    seed: int = 0
    envs: tuple[str, ...] | None = None
    """Environment presets / SG or HDR files to draw from; None = every installed preset."""
    supersample: int = 2
    hand: str = "open"
    """``open`` (the embedded rig) or a path to the user's MANO_RIGHT.pkl."""
    texture_size: int = 512
    camera_distance: float = 0.5
    hand_extent: float = 0.22
    """Metres that ``fill`` of the image side spans at the camera distance."""
    fill: float = 0.9
    shadow_resolution: int = 96
    shadow_lobe_axes: int = 16
    """Shadow maps along the axes of this many strongest lobes ..."""
    shadow_uniform_dirs: int = 32
    """... plus this many Fibonacci-sphere directions (see :func:`lobe_visibility`)."""
    shadow_proxy_cell: float = 0.003
    """Occluder = the sealed mesh clustered on a grid of this cell (metres)."""
    shadow_bias_texels: float = 2.5
    shadow_groups: int = 7
    """Lobes with their own visibility (the strongest); the others share one (see :func:`lobe_groups`)."""
    exposure: float = 1.0
    preset_probability: float = 0.5
    background: str = "env"
    """``env`` (the environment), ``black`` or ``white``."""
    torch_threads: int | None = 1
    """Intra-op threads while generating (restored afterwards): the renderer runs many small tensor
    ops, for which extra threads cost more than they give. None = leave torch's setting."""


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


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


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
    n = _unit(normals.astype(np.float64))
    wrist, idx_mcp, mid_mcp, pinky_mcp = kp[0], kp[5], kp[9], kp[17]
    n_palm = _unit(np.cross(idx_mcp - wrist, pinky_mcp - wrist))  # right hand: out of the palm
    axis = _unit(mid_mcp - wrist)
    side = _unit(np.cross(n_palm, axis))
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
        bone = _unit(b - a)
        dorsal = -n_palm
        if f == 0:  # the thumb's nail faces away from the palm and outward
            dorsal = _unit(0.8 * _unit(side - (side @ bone) * bone) - 0.6 * n_palm)
        dorsal = _unit(dorsal - (dorsal @ bone) * bone)
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
            sd = (x - j_pos) @ _unit(bone)
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


def _welded_normals(vertices: torch.Tensor, hand: Any) -> torch.Tensor:
    """(B, V, 3) smooth vertex normals, averaged across UV seams (welded) when the rig says how."""
    from palm.render.raster import vertex_normals

    weld = getattr(hand, "weld_index", None)
    if weld is None:
        return vertex_normals(vertices, hand.faces)
    weld = weld.to(vertices.device)
    n_groups = int(weld.max()) + 1
    faces_w = weld[hand.faces.to(vertices.device)]
    pos = torch.zeros(vertices.shape[0], n_groups, 3, dtype=vertices.dtype, device=vertices.device)
    pos[:, weld] = vertices
    return vertex_normals(pos, faces_w)[:, weld]


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
        normals = _welded_normals(verts, hand)[0]
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


# ---------------------------------------------------------------------------------------------
# Poses, cameras, lighting
# ---------------------------------------------------------------------------------------------


def preset_poses() -> tuple[list[str], np.ndarray]:
    """Names and (P, 16, 3) poses of the shipped presets."""
    from palm.hand import POSE_PRESETS, load_pose

    names = list(POSE_PRESETS)
    if not names:
        raise PalmError("assets/poses", "no pose presets installed")
    return names, np.stack([np.asarray(load_pose(n), np.float32).reshape(16, 3) for n in names])


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """Axis-angle (3,) of a uniformly random rotation."""
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    if q[0] < 0:
        q = -q
    angle = 2 * np.arccos(np.clip(q[0], -1, 1))
    axis = q[1:] / max(np.linalg.norm(q[1:]), 1e-12)
    return (axis * angle).astype(np.float32)


def sample_pose(
    rng: np.random.Generator, presets: np.ndarray, names: list[str], p_preset: float
) -> tuple[np.ndarray, str]:
    """A (16, 3) hand pose: a preset or a random mix within the presets' joint ranges.

    Returns:
        pose (16, 3) float32 (row 0 = random global orientation) and its description.
    """
    pose = np.zeros((16, 3), np.float32)
    if rng.uniform() < p_preset:
        k = int(rng.integers(len(names)))
        pose[1:] = presets[k, 1:]
        label = f"preset:{names[k]}"
    else:
        lo = presets[:, 1:].min(0) - 0.15
        hi = presets[:, 1:].max(0) + 0.15
        w = rng.dirichlet(np.full(len(names), 0.7))
        mix = np.einsum("p,pjc->jc", w, presets[:, 1:]) + rng.normal(0.0, 0.08, (15, 3))
        pose[1:] = np.clip(mix, lo, hi)
        label = "random"
    pose[0] = random_rotation(rng)
    return pose, label


def look_at_rt(eye: np.ndarray, target: np.ndarray, up: tuple[float, float, float] = (0.0, 1.0, 0.0)) -> np.ndarray:
    """(4, 4) OpenCV world->camera of a camera at ``eye`` looking at ``target`` (world up appears up)."""
    up = np.asarray(up, dtype=np.float64)
    z = _unit(target - eye)
    x = np.cross(z, up)
    if np.linalg.norm(x) < 1e-6:
        x = np.cross(z, np.array([0.0, 0.0, 1.0]))
    x = _unit(x)
    y = np.cross(z, x)
    Rt = np.eye(4)
    Rt[:3, :3] = np.stack([x, y, z])
    Rt[:3, 3] = -Rt[:3, :3] @ eye
    return Rt


def rig_cameras(rng: np.random.Generator, cfg: SynthConfig) -> dict[str, CameraParams]:
    """The subject's calibrated cameras (first ``cfg.n_views`` of the 7-camera rig)."""
    res = cfg.resolution
    cams = {}
    for cam_id, (az, el) in list(zip(CAMERA_IDS, RIG_ANGLES))[: cfg.n_views]:
        a = math.radians(az + rng.uniform(-4, 4))
        e = math.radians(el + rng.uniform(-4, 4))
        d = cfg.camera_distance + rng.uniform(-0.03, 0.03)
        eye = d * np.array([math.cos(e) * math.sin(a), math.sin(e), math.cos(e) * math.cos(a)])
        target = rng.uniform(-0.005, 0.005, 3)
        f = cfg.fill * res * cfg.camera_distance / cfg.hand_extent * rng.uniform(0.97, 1.03)
        cx, cy = res / 2 + rng.uniform(-0.01, 0.01, 2) * res
        K = np.array([[f, 0.0, cx], [0.0, f, cy], [0.0, 0.0, 1.0]])
        cams[cam_id] = CameraParams(K, look_at_rt(eye, target), res, res)
    return cams


def rotation_y(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def shadow_directions(lobes: torch.Tensor, n_axes: int, n_uniform: int) -> torch.Tensor:
    """Directions tested for shadows: the axes of the ``n_axes`` strongest lobes + a Fibonacci sphere.

    Returns:
        (D, 3) unit directions, ``D = min(n_axes, K) + n_uniform``.
    """
    from palm.render.sg import fibonacci_sphere, sg_integral

    xi = lobes[:, :3] / lobes[:, :3].norm(dim=-1, keepdim=True).clamp(min=1e-12)
    energy = sg_integral(lobes).abs().sum(dim=-1)  # (K,)
    top = torch.argsort(energy, descending=True)[: min(n_axes, lobes.shape[0])]
    return torch.cat([xi[top], fibonacci_sphere(n_uniform, dtype=lobes.dtype).to(lobes.device)], dim=0)


def lobe_visibility(
    vertices: torch.Tensor,
    normals: torch.Tensor,
    hand: Any,
    lobes: torch.Tensor,
    groups: list[torch.Tensor],
    cfg: SynthConfig,
) -> torch.Tensor:
    """Per-vertex visibility of each lobe group (see the module notes).

    ``V_g(x) = sum_d S_g(w_d) c_d(x) vis_d(x) / sum_d S_g(w_d) c_d(x)`` over the shadow directions
    ``w_d`` (:func:`shadow_directions`), with the group's radiance
    ``S_g(w) = sum_{k in g} mean(mu_k) exp(lambda_k (w . xi_k - 1))``, the cosine
    ``c_d(x) = max(n(x) . w_d, 0)`` and the binary shadow-map visibility ``vis_d(x)``; 1 where the
    denominator vanishes (the group does not light the point).

    Args:
        vertices: (V, 3) posed world vertices. normals: (V, 3). lobes: (K, 7). groups: index tensors.

    Returns:
        (V, G) in [0, 1].
    """
    from palm.render.raster import cluster_mesh, shadow_visibility

    sealed_v, sealed_f = hand.sealed_mesh(vertices)
    proxy_v, proxy_f = cluster_mesh(sealed_v, sealed_f, cfg.shadow_proxy_cell)
    dirs = shadow_directions(lobes, cfg.shadow_lobe_axes, cfg.shadow_uniform_dirs)  # (D, 3)
    vis = shadow_visibility(
        vertices, normals, proxy_v, proxy_f, dirs, resolution=cfg.shadow_resolution, bias_texels=cfg.shadow_bias_texels
    )  # (V, D)
    xi = lobes[:, :3] / lobes[:, :3].norm(dim=-1, keepdim=True).clamp(min=1e-12)
    lam = lobes[:, 3:4].abs()
    amp = lobes[:, 4:7].abs().mean(dim=-1, keepdim=True)
    radiance = amp * torch.exp(lam * (xi @ dirs.T - 1.0))  # (K, D)
    shape = torch.stack([radiance[g].sum(0) for g in groups])  # (G, D)
    cos = (normals @ dirs.T).clamp(min=0)  # (V, D)
    den = cos @ shape.T  # (V, G)
    num = (cos * vis) @ shape.T
    return torch.where(
        den > 1e-12 * shape.sum(-1).clamp(min=1e-30), num / den.clamp(min=1e-30), torch.ones_like(den)
    ).clamp(0.0, 1.0)


# ---------------------------------------------------------------------------------------------
# Shading and rendering
# ---------------------------------------------------------------------------------------------


def shade_groups(
    normal: torch.Tensor,
    view: torch.Tensor,
    albedo: torch.Tensor,
    roughness: torch.Tensor,
    metallic: torch.Tensor,
    lobes: torch.Tensor,
    groups: list[torch.Tensor],
    visibility: torch.Tensor,
) -> torch.Tensor:
    """``sum_g V_g shade_sg(n, v, a, r, m, lobes_g)``: the engine's BRDF under each shadowed lobe group.

    Args:
        normal, view: (N, 3) unit vectors (``view`` points to the camera).
        albedo: (N, 3) linear. roughness, metallic: (N, 1).
        lobes: (K, 7). groups: G index tensors. visibility: (N, G).

    Returns:
        (N, 3) linear radiance.
    """
    from palm.render.brdf import shade_sg

    out = torch.zeros_like(albedo)
    for g, idx in enumerate(groups):
        if not bool((visibility[:, g] > 0).any()):
            continue
        out = out + visibility[:, g : g + 1] * shade_sg(normal, view, albedo, roughness, metallic, lobes[idx])
    return out


@dataclass
class FrameScene:
    """A posed subject under one light, shared by all views of a frame."""

    vertices: torch.Tensor  # (V, 3) world
    normals: torch.Tensor  # (V, 3)
    faces: torch.Tensor  # (F + S, 3): rig faces then the wrist seal
    n_rig_faces: int
    uv: torch.Tensor | None
    vertex_albedo: torch.Tensor  # (V, 3)
    vertex_roughness: torch.Tensor  # (V,)
    albedo_map: torch.Tensor | None
    roughness_map: torch.Tensor | None
    metallic: float
    lobes: torch.Tensor  # (K, 7)
    groups: list[torch.Tensor]
    visibility: torch.Tensor  # (V, G)
    background: Any  # callable dirs (N,3) -> (N,3) linear radiance


def _surface(
    scene: FrameScene, K: np.ndarray, Rt: torch.Tensor, centre: torch.Tensor, h: int, w: int
) -> dict[str, torch.Tensor]:
    """Rasterise the scene and gather the shading inputs of every covered pixel (row-major)."""
    from palm.render.raster import interpolate, rasterize_pinhole, sample_texture

    dev, dt = scene.vertices.device, scene.vertices.dtype
    frags = rasterize_pinhole(scene.vertices, scene.faces, torch.as_tensor(K, dtype=dt, device=dev), Rt, h, w)
    mask = frags.mask[0]
    fid = frags.face_id[0][mask]
    seal = fid >= scene.n_rig_faces
    attrs = [scene.vertices, scene.normals, scene.vertex_albedo, scene.vertex_roughness[:, None], scene.visibility]
    if scene.uv is not None:
        attrs.append(scene.uv)
    packed = interpolate(torch.cat(attrs, dim=-1), scene.faces, frags)[0][mask]
    G = scene.visibility.shape[1]
    pos, nrm = packed[:, 0:3], packed[:, 3:6]
    alb, rough, vis = packed[:, 6:9], packed[:, 9:10], packed[:, 10 : 10 + G]
    if scene.uv is not None and scene.albedo_map is not None:
        uv = packed[:, 10 + G : 12 + G]
        alb = torch.where(seal[:, None], alb, sample_texture(scene.albedo_map, uv))
        rough = torch.where(seal[:, None], rough, sample_texture(scene.roughness_map, uv))
    tri = scene.vertices[scene.faces[fid]]
    flat = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    nrm = torch.where(seal[:, None], flat, nrm)
    nrm = nrm / nrm.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    view = centre - pos
    view = view / view.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    return {
        "mask": mask,
        "normal": nrm,
        "albedo": alb,
        "roughness": rough,
        "vis": vis,
        "view": view,
        "depth": frags.depth[0][mask],
    }


def _shade(scene: FrameScene, surf: dict[str, torch.Tensor], select: torch.Tensor | None = None) -> torch.Tensor:
    """Radiance of the covered pixels of ``surf`` (or of the ``select`` subset of them)."""
    keys = ("normal", "view", "albedo", "roughness", "vis")
    n, v, a, r, vis = (surf[k] if select is None else surf[k][select] for k in keys)
    m = torch.full_like(r, scene.metallic)
    return shade_groups(n, v, a, r, m, scene.lobes, scene.groups, vis)


def render_view(scene: FrameScene, cam: CameraParams, supersample: int) -> dict[str, np.ndarray]:
    """Render one camera (see the module notes).

    Anti-aliasing: pixels whose ``supersample`` x ``supersample`` sub-pixel samples are all covered
    are shaded once at their centre; pixels partly covered average their shaded samples with the
    background samples (in linear RGB).

    Returns:
        ``rgb`` (H, W, 3) float32 linear, ``mask`` (H, W) bool, ``depth`` (H, W) metres (0 = bg),
        ``normal_gl`` (H, W, 3) (zeros on bg), ``albedo`` (H, W, 3) linear (zeros on bg),
        ``shade`` (H, W) grey preview of the registered hand.
    """
    from palm.render.rays import pixel_rays

    H, W = cam.height, cam.width
    dev, dt = scene.vertices.device, scene.vertices.dtype
    Rt = torch.as_tensor(cam.Rt, dtype=dt, device=dev)
    centre = torch.as_tensor(cam.centre, dtype=dt, device=dev)

    base = _surface(scene, cam.K, Rt, centre, H, W)
    mask = base["mask"]
    depth = torch.zeros(H, W, dtype=dt, device=dev)
    depth[mask] = base["depth"]
    n_cam = base["normal"] @ Rt[:3, :3].T
    n_gl = torch.zeros(H, W, 3, dtype=dt, device=dev)
    n_gl[mask] = n_cam * torch.tensor([1.0, -1.0, -1.0], dtype=dt, device=dev)
    albedo = torch.zeros(H, W, 3, dtype=dt, device=dev)
    albedo[mask] = base["albedo"]
    shade = torch.zeros(H, W, dtype=dt, device=dev)
    shade[mask] = 0.25 + 0.7 * (base["normal"] * base["view"]).sum(-1).clamp(min=0)

    s = max(1, int(supersample))
    _, dirs = pixel_rays(CameraParams(cam.K, cam.Rt, H, W).to_camera(dtype=dt).to(dev))
    rgb = scene.background(dirs).reshape(H, W, 3).to(dt)
    if s == 1:
        rgb[mask] = _shade(scene, base)
    else:
        Ks = cam.K.copy()
        Ks[:2] *= s
        fine = _surface(scene, Ks, Rt, centre, H * s, W * s)
        cover = fine["mask"].to(dt).reshape(H, s, W, s).mean(dim=(1, 3))
        full = (cover >= 1.0) & mask
        mixed = (cover > 0) & ~full
        rgb[full] = _shade(scene, base, full[mask])
        if bool(mixed.any()):
            # Sub-pixel samples of the mixed pixels: shade the covered ones, look up the background for the rest.
            pix_of_sample = torch.arange(H * W, device=dev).reshape(H, 1, W, 1).expand(H, s, W, s).reshape(H * s, W * s)
            in_mixed = mixed.reshape(-1)[pix_of_sample]  # (sH, sW)
            sel_fg = in_mixed[fine["mask"]]  # covered samples that belong to mixed pixels
            fg_pix = pix_of_sample[fine["mask"]][sel_fg]
            acc = torch.zeros(H * W, 3, dtype=dt, device=dev)
            acc.index_add_(0, fg_pix, _shade(scene, fine, sel_fg))
            bg_mask = in_mixed & ~fine["mask"]
            _, fine_dirs = pixel_rays(CameraParams(Ks, cam.Rt, H * s, W * s).to_camera(dtype=dt).to(dev))
            bg_pix = pix_of_sample[bg_mask]
            acc.index_add_(0, bg_pix, scene.background(fine_dirs[bg_mask.reshape(-1)]).to(dt))
            rgb.view(-1, 3)[mixed.reshape(-1)] = acc[mixed.reshape(-1)] / (s * s)
    return {
        "rgb": rgb.cpu().numpy().astype(np.float32),
        "mask": mask.cpu().numpy(),
        "depth": depth.cpu().numpy().astype(np.float32),
        "normal_gl": n_gl.cpu().numpy().astype(np.float32),
        "albedo": albedo.cpu().numpy().astype(np.float32),
        "shade": shade.cpu().numpy().astype(np.float32),
    }


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------


def write_npy(path: Path, obj: Any) -> None:
    """``np.save`` of a dict (the release's pickled-dict ``.npy`` format), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp:
        np.save(tmp, obj, allow_pickle=True)


def _write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_png(path, array)


def encode_normals(n_gl: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """RGB = (n + 1) / 2 * 255 on the mask, 0 elsewhere (foreground never encodes as 0,0,0)."""
    rgb = to_u8((n_gl + 1.0) / 2.0)
    rgb[~mask] = 0
    return rgb


def encode_depth(depth: np.ndarray) -> np.ndarray:
    return np.clip(np.round(depth / DEPTH_MAX_M * 65535.0), 0, 65535).astype(np.uint16)


# ---------------------------------------------------------------------------------------------
# Environments
# ---------------------------------------------------------------------------------------------


class _Environments:
    """Loads each environment once: SG lobes and, where found, the source HDR for the background."""

    def __init__(self, names: tuple[str, ...] | None):
        from palm.render.environment import list_presets

        self.names = list(names) if names else list_presets()
        if not self.names:
            raise PalmError("assets/envmaps", "no environment presets installed (pass --envs with SG/HDR files)")
        self._cache: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = {}

    def get(self, name: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        if name not in self._cache:
            from palm.imageio import HDR_EXTENSIONS, load_hdr
            from palm.render.environment import load_environment
            from palm.render.envmap import downsample_equirect

            loaded = load_environment(name)
            lobes, info = loaded if isinstance(loaded, tuple) else (loaded, {})
            hdr = None
            for candidate in self._hdr_candidates(name, info):
                if candidate.suffix.lower() in HDR_EXTENSIONS and candidate.is_file():
                    hdr = downsample_equirect(load_hdr(candidate), 128)
                    break
            self._cache[name] = (torch.as_tensor(lobes, dtype=torch.float32), hdr)
        return self._cache[name]

    @staticmethod
    def _hdr_candidates(name: str, info: dict[str, Any]) -> list[Path]:
        from palm.assets import ROOT

        out = [Path(name)]
        for key in ("path", "source", "source_path", "hdr"):
            if isinstance(info.get(key), str):
                p = Path(info[key])
                out += [p, ROOT.parent / "shared" / "data" / "hdri" / "blender_studiolights" / p.name]
        out.append(ROOT.parent / "shared" / "data" / "hdri" / "blender_studiolights" / f"{name}.exr")
        return out


def _background_fn(mode: str, lobes: torch.Tensor, hdr: torch.Tensor | None, rot: np.ndarray, scale: float):
    """dirs (N, 3) world -> (N, 3) linear radiance of the background."""
    from palm.render.envmap import dir_to_uv
    from palm.render.sg import sg_eval

    R = torch.as_tensor(rot, dtype=torch.float32)

    def fn(dirs: torch.Tensor) -> torch.Tensor:
        if mode == "black":
            return torch.zeros_like(dirs)
        if mode == "white":
            return torch.ones_like(dirs)
        if hdr is None:
            return sg_eval(lobes, dirs)
        local = dirs @ R.to(dirs.dtype)  # R^T d: back into the map's frame
        uv = dir_to_uv(local)
        img = hdr.permute(2, 0, 1)[None].to(dirs.dtype)
        grid = torch.stack([uv[:, 0] * 2 - 1, (1 - uv[:, 1]) * 2 - 1], dim=-1).reshape(1, 1, -1, 2)
        out = torch.nn.functional.grid_sample(img, grid, mode="bilinear", padding_mode="border", align_corners=False)
        return out[0, :, 0].T * scale

    return fn


# ---------------------------------------------------------------------------------------------
# The generator
# ---------------------------------------------------------------------------------------------


def _check_replaceable(out: Path) -> None:
    """Refuse to replace an existing folder unless it is empty or an earlier synthetic dataset."""
    if not out.exists():
        return
    if not out.is_dir():
        raise PalmError(out, "exists and is not a folder")
    if not any(out.iterdir()):
        return
    meta = out / "meta.json"
    try:
        ours = json.loads(meta.read_text()).get("generator") == "palm.data.synth"
    except (OSError, ValueError, AttributeError):
        ours = False
    if not ours:
        raise PalmError(out, "folder exists and is not a synthetic dataset; choose a new or empty --out folder")


def load_rig(name: str) -> Any:
    """The hand rig: ``open`` or a path to a MANO file."""
    from palm.hand import load_hand

    if name == "open":
        return load_hand("open")
    return load_hand("mano", name)


def generate(
    out: str | os.PathLike,
    cfg: SynthConfig = SynthConfig(),
    emit: Emit = null_emit,
    cancel: CancelToken | None = None,
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """Render a synthetic dataset into ``out`` (written to a temporary folder, then renamed).

    Args:
        out: dataset folder (replaced when it exists, only after the new one is complete).
        cfg: what to generate.
        emit: progress callback (:class:`palm.jobs.Progress` after every frame).
        cancel: cancellation token checked between frames.
        device: torch device of the renderer.

    Returns:
        Summary ``{"root", "subjects", "frames", "views", "images", "seconds"}``.
    """
    previous = torch.get_num_threads()
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    try:
        return _generate(out, cfg, emit, cancel, device)
    finally:
        torch.set_num_threads(previous)


def _generate(
    out: str | os.PathLike, cfg: SynthConfig, emit: Emit, cancel: CancelToken | None, device: torch.device | str
) -> dict[str, Any]:
    t0 = time.monotonic()
    if not 1 <= cfg.n_views <= len(CAMERA_IDS):
        raise PalmError("--views", f"must be 1..{len(CAMERA_IDS)}, got {cfg.n_views}")
    if cfg.background not in ("env", "black", "white"):
        raise PalmError("background", f"unknown background '{cfg.background}' (env, black, white)")
    out = Path(out)
    _check_replaceable(out)
    device = torch.device(device)
    hand = load_rig(cfg.hand).to(device)
    names, presets = preset_poses()
    envs = _Environments(cfg.envs)
    rng = np.random.default_rng(cfg.seed)
    strata = (np.arange(cfg.n_subjects) + rng.uniform(0, 1, cfg.n_subjects)) / cfg.n_subjects
    strata = strata[rng.permutation(cfg.n_subjects)]
    specs = [
        sample_subject(np.random.default_rng([cfg.seed, i]), i, float(strata[i]), hand.n_betas)
        for i in range(cfg.n_subjects)
    ]
    total = cfg.n_subjects * cfg.n_poses
    eta = ETA(total)
    faces_all = (
        torch.cat([hand.faces, hand.seal_faces]) if getattr(hand, "seal_faces", None) is not None else hand.faces
    )
    meta_frames: dict[str, dict[str, Any]] = {}
    step = 0
    with atomic_dir(out) as root:
        for spec in specs:
            check_cancel(cancel)
            srng = np.random.default_rng([cfg.seed, int(spec.sid), 1])
            sdir = root / spec.sid
            material = subject_material(hand.cpu(), spec, cfg.texture_size)
            hand.to(device)
            cams = rig_cameras(srng, cfg)
            n = cfg.n_poses
            poses = np.zeros((n, 16, 3), np.float32)
            transl = np.zeros((n, 3), np.float32)
            kp3d = np.zeros((n, 21, 3), np.float32)
            kp2d = {c: np.zeros((n, 21, 2), np.float32) for c in cams}
            lighting: dict[str, Any] = {"frames": {}}
            betas = torch.tensor([spec.betas], dtype=torch.float32, device=device)
            for f in range(n):
                check_cancel(cancel)
                pose, label = sample_pose(srng, presets, names, cfg.preset_probability)
                with torch.no_grad():
                    posed = hand(pose=torch.from_numpy(pose)[None].to(device), betas=betas)
                    verts0 = posed.vertices[0]
                    centre = 0.5 * (verts0.amin(0) + verts0.amax(0))
                    t = (-centre.cpu().numpy() + srng.uniform(-0.01, 0.01, 3)).astype(np.float32)
                    posed = hand(
                        pose=torch.from_numpy(pose)[None].to(device),
                        betas=betas,
                        transl=torch.from_numpy(t)[None].to(device),
                    )
                    verts = posed.vertices[0]
                    normals = _welded_normals(verts[None], hand)[0]
                env_name = envs.names[int(srng.integers(len(envs.names)))]
                base_lobes, hdr = envs.get(env_name)
                angle = float(srng.uniform(0, 2 * math.pi))
                rot = rotation_y(angle)
                from palm.render.sg import sg_rotate

                lobes = sg_rotate(base_lobes, torch.as_tensor(rot, dtype=torch.float32))
                lobes, scale = normalise_exposure(lobes, cfg.exposure)
                lobes = lobes.to(device)
                groups = lobe_groups(lobes, cfg.shadow_groups)
                with torch.no_grad():
                    vis = lobe_visibility(verts, normals, hand, lobes, groups, cfg)
                scene = FrameScene(
                    vertices=verts,
                    normals=normals,
                    faces=faces_all.to(device),
                    n_rig_faces=int(hand.faces.shape[0]),
                    uv=None if hand.uv is None else hand.uv.to(device),
                    vertex_albedo=material["vertex_albedo"].to(device),
                    vertex_roughness=material["vertex_roughness"].to(device),
                    albedo_map=None if material["albedo_map"] is None else material["albedo_map"].to(device),
                    roughness_map=None if material["roughness_map"] is None else material["roughness_map"].to(device),
                    metallic=spec.metallic,
                    lobes=lobes,
                    groups=groups,
                    visibility=vis,
                    background=_background_fn(cfg.background, lobes.cpu(), hdr, rot, scale),
                )
                fname = frame_name(f)
                for cam_id, cam in cams.items():
                    with torch.no_grad():
                        views = render_view(scene, cam, cfg.supersample)
                    _write_png(sdir / "images" / cam_id / f"{fname}.png", to_srgb8(views["rgb"]))
                    _write_png(sdir / "masks" / cam_id / f"{fname}.png", views["mask"].astype(np.uint8) * 255)
                    _write_png(
                        sdir / "normals" / cam_id / f"{fname}.png", encode_normals(views["normal_gl"], views["mask"])
                    )
                    _write_png(sdir / "depth" / cam_id / f"{fname}.png", encode_depth(views["depth"]))
                    _write_png(sdir / "albedo" / cam_id / f"{fname}.png", to_srgb8(views["albedo"]))
                    rgba = np.dstack(
                        [np.repeat(to_u8(views["shade"])[..., None], 3, -1), views["mask"].astype(np.uint8) * 255]
                    )
                    _write_png(sdir / "mano" / cam_id / f"{fname}.png", rgba)
                    kp2d[cam_id][f] = cam.project(posed.keypoints[0].cpu().numpy().astype(np.float64))
                poses[f], transl[f] = pose, t
                kp3d[f] = posed.keypoints[0].cpu().numpy()
                lighting["frames"][fname] = {
                    "env": env_name,
                    "rotation_y": round(angle, 6),
                    "exposure_scale": scale,
                    "pose": label,
                    "lobes": lobes.cpu().numpy().round(6).tolist(),
                }
                meta_frames.setdefault(spec.sid, {})[fname] = {
                    "env": env_name,
                    "rotation_y": round(angle, 6),
                    "pose": label,
                }
                step += 1
                emit(Progress(step, total, message=f"subject {spec.sid} frame {fname}", eta_s=eta(step)))
            write_npy(sdir / "cameras.npy", {"cameras": {c: cam.to_dict() for c, cam in cams.items()}})
            write_npy(
                sdir / "poses.npy",
                {
                    "betas": np.asarray([spec.betas], np.float32),
                    "hand_pose": poses[:, 1:].reshape(n, 45),
                    "global_orient": poses[:, 0],
                    "transl": transl,
                },
            )
            write_npy(sdir / "keypoints.npy", {"keypoints_3d": kp3d, "keypoints_2d": kp2d})
            write_json(sdir / "lighting.json", lighting)
            if material["albedo_map"] is not None:
                _write_png(sdir / "albedo_map.png", to_srgb8(material["albedo_map"].numpy()))
                _write_png(sdir / "roughness_map.png", to_u8(material["roughness_map"].numpy()[..., 0]))
            write_json(
                sdir / "subject.json",
                {
                    **asdict(spec),
                    "hand": hand.name,
                    "albedo_map": "albedo_map.png" if material["albedo_map"] is not None else None,
                    "roughness_map": "roughness_map.png" if material["albedo_map"] is not None else None,
                    "albedo_encoding": "linear albedo stored sRGB-encoded, 8 bit; texel row 0 is v = 1",
                    "roughness_encoding": "roughness * 255, 8 bit",
                },
            )
        write_json(
            root / "meta.json",
            {
                "generator": "palm.data.synth",
                "generator_version": GENERATOR_VERSION,
                "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()},
                "seed": cfg.seed,
                "resolution": cfg.resolution,
                "subjects": [s.sid for s in specs],
                "cameras": list(CAMERA_IDS[: cfg.n_views]),
                "hand": hand.name,
                "n_betas": hand.n_betas,
                "hand_pose_convention": POSE_ABSOLUTE,
                "hand_pose_note": "hand_pose is absolute for a flat_hand_mean=True layer (the PALM release stores it "
                "relative to MANO's mean pose)",
                "depth_encoding": f"16-bit PNG, metres = value / 65535 * {DEPTH_MAX_M}, 0 = background, camera z",
                "normal_encoding": "RGB = (n + 1) / 2 * 255, OpenGL camera axes (x right, y up, z to viewer), 0 = background",
                "world_up": [0.0, 1.0, 0.0],
                "environments": {sid: frames for sid, frames in meta_frames.items()},
                "renderer": "rasterised rig mesh; L = sum_k V_k shade_sg(n, v, albedo, roughness, metallic, lobe_k); "
                "V_k per-vertex cosine-weighted shadow-map visibility of the lobe's directions",
            },
        )
        emit(Log(f"wrote {total * cfg.n_views} images to {out}", level="debug"))
    return {
        "root": str(out),
        "subjects": cfg.n_subjects,
        "frames": total,
        "views": cfg.n_views,
        "images": total * cfg.n_views,
        "seconds": round(time.monotonic() - t0, 2),
    }


def contact_sheet(root: str | os.PathLike, view: str = "MCU_01", frame: int = 0, cols: int = 5) -> np.ndarray:
    """Tile one image of every subject of a dataset (for looking at a generated set).

    Returns:
        (rows * H, cols * W, 3) uint8.
    """
    from palm.data.palm_dataset import PalmDataset

    ds = PalmDataset(root)
    tiles = [np.round(ds.load(sid, frame, view).image * 255).astype(np.uint8) for sid in ds.subjects]
    h, w = tiles[0].shape[:2]
    rows = -(-len(tiles) // cols)
    sheet = np.zeros((rows * h, cols * w, 3), np.uint8)
    for i, t in enumerate(tiles):
        r, c = divmod(i, cols)
        sheet[r * h : (r + 1) * h, c * w : (c + 1) * w] = t
    return sheet
