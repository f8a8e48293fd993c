"""Neural avatar -> :class:`BakedAvatar`: a skinned PBR mesh for the viewport and for export.

:func:`bake_from_hand` bakes the hand rig itself (its rest mesh with a constant skin material);
it is what the viewport and ``palm export`` use when no prior/avatar is given.
:func:`posed_avatar` poses a baked avatar (linear blend skinning by :mod:`palm.hand.lbs`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from palm.config import DetailConfig
from palm.hand.lbs import bone_transforms, mirror_pose, skin_vertices

#: The rig fill (``bake_from_prior``) of the bakes users see: avatars (the detail stage's
#: ``DetailConfig.rig_fill``) and the prior's subjects in the studio, ``palm render`` and ``palm export``.
RIG_FILL = DetailConfig.rig_fill


@dataclass
class BakedAvatar:
    """A canonical (flat hand, subject shape) skinned mesh with per-vertex PBR material."""

    vertices: np.ndarray
    """(V, 3) float32, canonical, metres."""
    faces: np.ndarray
    """(F, 3) int32."""
    normals: np.ndarray
    """(V, 3) float32, unit."""
    skin_weights: np.ndarray
    """(V, 16) float32, rows sum to 1."""
    albedo: np.ndarray
    """(V, 3) float32 linear RGB."""
    roughness: np.ndarray
    """(V,) float32."""
    metallic: np.ndarray
    """(V,) float32."""
    joints: np.ndarray
    """(16, 3) float32 rest joints (canonical)."""
    parents: np.ndarray
    """(16,) int32, ``parents[0] = -1``."""
    closed: bool | None = None
    """Whether the surface is watertight and wound outward (so back faces never show), as its
    maker knows it: True for marching-cubes bakes whose box holds the whole surface; None when
    unknown (:func:`closed_outward` decides, at a cost linear in the faces)."""


#: The array fields of :class:`BakedAvatar` (what :func:`save_baked` writes).
ARRAY_FIELDS = ("vertices", "faces", "normals", "skin_weights", "albedo", "roughness", "metallic", "joints",
                "parents")


def closed_outward(vertices: np.ndarray, faces: np.ndarray) -> bool:
    """Whether the mesh (V, 3), (F, 3) is closed and consistently wound outward: every directed
    edge appears once and its reverse once (a watertight, oriented surface), and the enclosed
    volume is positive. Such a mesh shows no back face from outside, so culling them is exact."""
    f = np.asarray(faces, np.int64).reshape(-1, 3)
    if len(f) == 0:
        return False
    directed = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    n = int(max(directed.max(), 0)) + 1
    keys = directed[:, 0] * n + directed[:, 1]
    if len(np.unique(keys)) != len(keys):
        return False  # an edge used twice in the same direction: open or inconsistently wound
    if not np.isin(directed[:, 1] * n + directed[:, 0], keys).all():
        return False  # a border edge: the surface is open
    v = np.asarray(vertices, np.float64)
    volume = np.einsum("ij,ij->i", v[f[:, 0]], np.cross(v[f[:, 1]], v[f[:, 2]])).sum() / 6.0
    return bool(volume > 0)


def encloses(verts: np.ndarray, counts: Any, step: float) -> bool:
    """Whether a marching-cubes surface (a connected piece) is closed: none of its vertices lies
    on the grid's border planes. A surface the box cuts open has its border edges in those planes
    (the only cells where a marching-cubes surface can end); skimage's 'descent' winds it outward.

    Args:
        verts: (V, 3) vertices in the grid's frame (``marching_cubes`` output, before any offset).
        counts: the grid's samples per axis (3,).
        step: the grid spacing (``marching_cubes``' ``spacing``).
    """
    v = np.asarray(verts, np.float64) / step
    top = np.asarray(counts, np.float64) - 1
    tol = 1e-6
    return bool(len(v)) and bool(((v > tol) & (v < top - tol)).all())


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted vertex normals.

    Args:
        vertices: (V, 3) positions.
        faces: (F, 3) vertex indices (counter-clockwise = outside).

    Returns:
        (V, 3) float32 unit normals (``+z`` for isolated vertices).
    """
    v = np.asarray(vertices, np.float64)
    f = np.asarray(faces, np.int64)
    face_n = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])  # length = 2 * area
    n = np.zeros_like(v)
    for k in range(3):
        np.add.at(n, f[:, k], face_n)
    length = np.linalg.norm(n, axis=1, keepdims=True)
    n = np.where(length > 0, n / np.maximum(length, 1e-30), np.array([0.0, 0.0, 1.0]))
    return n.astype(np.float32)


def bake_from_hand(
    hand: Any,
    betas: Any = None,
    albedo: tuple[float, float, float] = (0.80, 0.58, 0.48),
    roughness: float = 0.5,
) -> BakedAvatar:
    """The hand rig's rest mesh (flat hand, shape ``betas``) as a :class:`BakedAvatar`.

    Args:
        hand: a ``palm.hand.HandModel``.
        betas: (n_betas,) or (1, n_betas) shape coefficients, or None for the mean shape.
        albedo: constant linear-RGB albedo (a light skin tone by default).
        roughness: constant roughness; metallic is 0.

    Returns:
        The baked avatar (canonical, metres).
    """
    import torch

    if betas is None:
        betas = torch.zeros(1, int(hand.n_betas))
    betas = torch.as_tensor(np.asarray(to_numpy(betas), np.float32)).reshape(1, -1)
    with torch.no_grad():
        verts, joints = hand.rest(betas)
    verts = to_numpy(verts).reshape(-1, 3).astype(np.float32)
    joints = to_numpy(joints).reshape(16, 3).astype(np.float32)
    faces = to_numpy(hand.faces).astype(np.int32)
    weights = to_numpy(hand.skin_weights).astype(np.float32)
    weights = weights / np.maximum(weights.sum(axis=1, keepdims=True), 1e-12)
    n = len(verts)
    return BakedAvatar(
        vertices=verts,
        faces=faces,
        normals=vertex_normals(verts, faces),
        skin_weights=weights,
        albedo=np.tile(np.asarray(albedo, np.float32), (n, 1)),
        roughness=np.full(n, roughness, np.float32),
        metallic=np.zeros(n, np.float32),
        joints=joints,
        parents=to_numpy(hand.parents).astype(np.int32).reshape(16),
    )


def to_numpy(x: Any) -> np.ndarray:
    """A numpy view/copy of a tensor (any device) or array-like."""
    if hasattr(x, "detach"):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def apply_bones(avatar: BakedAvatar, bones: np.ndarray, left: bool = False) -> BakedAvatar:
    """A copy of ``avatar`` with bones applied to its vertices, normals and joints.

    Args:
        avatar: the canonical baked avatar.
        bones: (16, 4, 4) bone transforms (:func:`palm.hand.lbs.bone_transforms`).
        left: the bones mirror the hand (a left hand): the triangle winding is reversed so that the
            faces stay counter-clockwise seen from outside.

    Returns:
        The posed avatar (material, skin weights and parents shared with ``avatar``).
    """
    verts, normals = skin_vertices(avatar.vertices, avatar.normals, avatar.skin_weights, bones)
    joints = np.einsum("jab,jb->ja", bones[:, :3, :3], avatar.joints) + bones[:, :3, 3]
    faces = avatar.faces[:, [0, 2, 1]] if left else avatar.faces
    return replace(avatar, vertices=verts, normals=normals, joints=joints.astype(np.float32), faces=faces)


def mirror_baked(avatar: BakedAvatar) -> BakedAvatar:
    """The left hand of a (right-hand) canonical avatar: its mirror image through x = 0 (vertices,
    normals, joints), faces wound outward again. Posed about its own joints with the mirrored
    pose, ``bone_transforms(hand, mirror_pose(q), joints=mirrored.joints)``, it is the mirror image
    of the right hand posed with ``q`` (a left fist is a fist); its own skeleton and rotations are
    what a rigged export (glTF) of the left hand carries. Applied twice it is the identity."""
    m = np.array([-1.0, 1.0, 1.0], np.float32)
    return replace(avatar, vertices=avatar.vertices * m, normals=avatar.normals * m,
                   joints=avatar.joints * m, faces=np.ascontiguousarray(avatar.faces[:, [0, 2, 1]]))


def left_hand(avatar: BakedAvatar, pose: Any) -> tuple[BakedAvatar, np.ndarray | None]:
    """The left hand of ``avatar`` in ``pose`` (16, 3) or None: :func:`mirror_baked` and the
    mirrored pose it is posed with about its own joints, as a rigged export carries them."""
    import torch

    if pose is None:
        return mirror_baked(avatar), None
    return mirror_baked(avatar), mirror_pose(torch.as_tensor(np.asarray(to_numpy(pose), np.float32))).numpy()


def posed_avatar(
    avatar: BakedAvatar, pose: Any, hand: Any, betas: Any = None, left: bool = False
) -> BakedAvatar:
    """A display copy with ``pose`` baked into vertices, normals and joints.

    Args:
        avatar: the canonical baked avatar; hand: its rig.
        pose: (16, 3) axis-angle, or None (the avatar as is, canonical).
        betas: the rig's shape coefficients (the avatar's own), or None.
        left: pose it as a left hand (see :func:`palm.hand.lbs.bone_transforms`).
    """
    if pose is None:
        return avatar
    return apply_bones(avatar, bone_transforms(hand, pose, betas, left=left, joints=avatar.joints), left=left)


#: Radius (metres) of the cylinder :func:`silhouette_level` models: about a finger's.
SILHOUETTE_RADIUS = 0.008


def silhouette_level(beta: float, radius: float = SILHOUETTE_RADIUS) -> float:
    """SDF level (metres, > 0: outside the zero set) of the outline a VolSDF volume render draws.

    With the Laplace density ``sigma = exp(-d / beta) / (2 beta)`` outside the surface, a ray that
    passes a cylinder of radius ``r`` at distance ``h = r + d`` from its axis (``d << r``)
    accumulates ``exp(-d / beta) sqrt(2 pi h beta) / (2 beta)`` of optical depth (the path's
    distance to the surface is ``d + t^2 / 2h``). Its opacity is one half where that equals
    ``ln 2``: ``d = beta ln(sqrt(2 pi (r + d) / beta) / (2 ln 2))``, solved by a few fixed-point
    steps (within 0.06 beta of a numerical integration for beta up to 1.5 mm, tested). A soft prior
    (``beta`` 0.7 mm) draws its outline 1.3 mm outside the zero set; a mesh of the zero set is
    that much thinner than the hand the prior renders (and was fitted to). 0 when ``beta`` is so
    large that the formula turns negative.
    """
    if beta <= 0:
        return 0.0
    d = 0.0
    for _ in range(4):
        d = beta * math.log(math.sqrt(2.0 * math.pi * (radius + max(d, 0.0)) / beta) / (2.0 * math.log(2.0)))
    return max(0.0, d)


def rig_sdf(hand: Any, rest_vertices: Any, grid: Any, step: float) -> Any:
    """Signed distance (metres, negative inside) on a grid of cell ``step`` to the rig's sealed hand
    with vertices ``rest_vertices (V, 3)``: exact to the surface sampling within a band of four cells
    of the surface, else ``+-band`` (outside: the grid cells connected to the grid's border). The sign
    is the vote of the 8 nearest surface samples' sides, which holds at the sealed wrist's sharp rim.

    Args: grid: (X, Y, Z, 3) points. Returns: (X, Y, Z).
    """
    import torch
    from scipy.ndimage import label

    from palm.train.geometry import MeshSDF

    band = 4 * step
    v, f = hand.sealed_mesh(rest_vertices)
    mesh = MeshSDF(v, f, n_samples=200_000)
    p = grid.reshape(-1, 3).detach().cpu().float()
    dist, idx = mesh.tree.query(p.numpy(), k=8, distance_upper_bound=band)
    far = ~np.isfinite(dist[:, 0])
    idx = torch.from_numpy(np.where(np.isfinite(dist), idx, 0)).long()
    side = ((p[:, None] - mesh.samples[idx]) * mesh.sample_normals[idx]).sum(-1).numpy()  # (N, 8)
    inside = (np.where(np.isfinite(dist), np.sign(side), 0).sum(1) < 0)  # the nearest samples vote (sharp rims)
    sdf = np.where(inside, -1.0, 1.0) * np.where(far, band, dist[:, 0])
    parts, _ = label(far.reshape(grid.shape[:3]))
    border = np.unique(np.concatenate([np.ravel(parts[i]) for i in (0, -1)] + [np.ravel(parts[:, i]) for i in (0, -1)]
                                      + [np.ravel(parts[:, :, i]) for i in (0, -1)]))
    outside = np.isin(parts, border[border > 0]).reshape(-1)
    sdf = np.where(far, np.where(outside, band, -band), sdf)
    return torch.as_tensor(sdf.reshape(grid.shape[:3]), dtype=torch.float32)


def smooth_union(a: Any, b: Any, k: float) -> Any:
    """Polynomial smooth minimum of two SDFs (tensors of one shape), blending within ``k`` metres."""
    h = (k - (a - b).abs()).clamp(min=0) / k
    return a.minimum(b) - h * h * k / 4


def fill_from_rig(sdf: Any, rig: Any, level: float, rig_fill: float, step: float) -> Any:
    """The prior's ``sdf`` with the rig's hand (``rig``: :func:`rig_sdf` on the same grid of cell
    ``step``), ``rig_fill`` thinner at the extracted ``level``, filling what it lacks: their smooth
    union, blended within half a cell."""
    return smooth_union(sdf, rig.to(sdf) + level + rig_fill, 0.5 * step)


def bake_from_prior(
    prior: Any,
    shape_coeffs: Any = None,
    appearance_coeffs: Any = None,
    resolution: int = 64,
    betas: Any = None,
    shape_code: Any = None,
    appearance_code: Any = None,
    margin: float = 0.015,
    pose: Any = None,
    level: float | None = None,
    rig_fill: float | None = None,
) -> BakedAvatar:
    """Extract a subject's surface from the prior's SDF and bake its material and skinning.

    The SDF of the shape code is sampled on a grid over the canonical hand's bounding box (plus
    ``margin``), whose longest side has ``resolution`` cells; marching cubes gives the surface
    (the largest connected piece is kept). Albedo, roughness and metallic come from the material
    network at the vertices; skinning weights from the rig's skinning-weight field; joints from the
    rig in the same shape.

    Args:
        prior: a :class:`palm.prior.Prior`.
        shape_coeffs, appearance_coeffs: (K,) PCA coefficients (None = zeros, the mean subject).
        resolution: cells along the box's longest side (64 is a coarse preview, 160+ an export).
        betas: rig shape of the canonical space (None = mean shape).
        shape_code, appearance_code: (32,) codes that override the coefficients (personalised avatars).
        pose: (16, 3) axis-angle whose pose code conditions the fields (PALM-Net's geometry and
            material are pose-conditioned); None: the flat hand's. A personalised avatar is baked
            with its photo's pose, so the mesh has the surface the neural render of the photo had.
        level: the SDF level extracted (metres); None: :func:`silhouette_level` of the prior's
            density, the surface whose outline the volume render draws (0 is the zero set).
        rig_fill: when given (metres), the rig's own hand in ``betas``, this much thinner, fills
            what the prior's surface lacks (a smooth union of the two): fingertips that an
            under-trained prior leaves short and pointed come out the rig's length and roundness.
    """
    import torch

    model = prior.model
    dev = model.light.device
    z_s, z_a = prior.codes_from_coeffs(shape_coeffs, appearance_coeffs)
    if shape_code is not None:
        z_s = torch.as_tensor(to_numpy(shape_code), dtype=torch.float32, device=dev)
    if appearance_code is not None:
        z_a = torch.as_tensor(to_numpy(appearance_code), dtype=torch.float32, device=dev)
    hand = model.hand
    p_code = None if pose is None else torch.as_tensor(to_numpy(pose), dtype=torch.float32, device=dev).reshape(16, 3)
    if level is None:
        level = silhouette_level(float(model.beta.detach()))
    b = torch.zeros(1, hand.n_betas, device=dev) if betas is None else torch.as_tensor(
        to_numpy(betas), dtype=torch.float32, device=dev).reshape(1, -1)
    with torch.no_grad():
        rest_v, rest_j = hand.rest(b)
        lo = rest_v[0].min(0).values - margin
        hi = rest_v[0].max(0).values + margin
        step = float((hi - lo).max()) / resolution
        counts = [int(np.ceil(float(hi[i] - lo[i]) / step)) + 1 for i in range(3)]
        axes = [lo[i] + step * torch.arange(counts[i], device=dev) for i in range(3)]
        grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
        sdf = torch.cat([model.canonical_sdf(p, z_s, p_code)[0] for p in grid.split(65536)]).reshape(-1)
        if rig_fill is not None:
            rig = rig_sdf(hand, rest_v[0], grid.reshape(*counts, 3), step).reshape(-1)
            sdf = fill_from_rig(sdf, rig, level, rig_fill, step)
    volume = sdf.reshape(counts).cpu().numpy()
    verts, faces, closed = surface_from_volume(volume, level, step, lo.cpu().numpy(), getattr(prior, "path", "prior"))
    from palm.deform import SkinningField

    with torch.no_grad():
        v_t = torch.as_tensor(verts, dtype=torch.float32, device=dev)
        albedo, rough, metal = [], [], []
        for p in v_t.split(65536):
            _, a, r, m = model.query_canonical(p, z_s, z_a, p_code)
            albedo.append(a), rough.append(r), metal.append(m)
        skin = SkinningField.from_hand(rest_v[0], hand.skin_weights, model.cfg)
        weights = skin.query(v_t).clamp(min=0)
    weights = to_numpy(weights).astype(np.float32)
    weights /= np.maximum(weights.sum(1, keepdims=True), 1e-12)
    verts = verts.astype(np.float32)
    faces = faces.astype(np.int32)
    return BakedAvatar(
        vertices=verts,
        faces=faces,
        normals=vertex_normals(verts, faces),
        skin_weights=weights,
        albedo=to_numpy(torch.cat(albedo)).astype(np.float32),
        roughness=to_numpy(torch.cat(rough)).astype(np.float32),
        metallic=to_numpy(torch.cat(metal)).astype(np.float32),
        joints=to_numpy(rest_j[0]).astype(np.float32),
        parents=to_numpy(hand.parents).astype(np.int32).reshape(16),
        closed=closed,
    )


def surface_from_volume(volume: np.ndarray, level: float, step: float, corner: Any,
                        source: Any = "prior") -> tuple[np.ndarray, np.ndarray, bool]:
    """The hand's surface in an SDF grid: marching cubes at ``level``, the largest connected piece,
    whether the box held it whole (:func:`encloses`), moved to the grid's place.

    Args:
        volume: (X, Y, Z) SDF samples (negative inside), spacing ``step``.
        level: the iso-level (:func:`silhouette_level`).
        step: grid spacing in metres.
        corner: (3,) position of ``volume[0, 0, 0]``.
        source: what a grid with no surface is blamed on (the prior's path).

    Returns:
        ``(vertices (V, 3) float64, faces (F, 3) int64, closed)``; faces wound counter-clockwise
        seen from outside.

    Raises:
        PalmError: the level is outside the volume's range (no surface in the box).
    """
    from skimage.measure import marching_cubes

    from palm.errors import PalmError

    if not (volume.min() < level < volume.max()):
        raise PalmError(source, "the prior's SDF has no surface in the hand's box")
    # skimage's 'descent' (its default) winds the faces counter-clockwise seen from outside for an SDF that is
    # negative inside (checked: the normals point away from the hand, tests/export/test_export_mesh.py)
    verts, faces, _, _ = marching_cubes(volume, level=level, spacing=(step,) * 3, gradient_direction="descent")
    verts, faces = largest_component(verts, faces)
    closed = encloses(verts, np.asarray(volume.shape), step)
    return verts + np.asarray(corner, np.float64), faces, closed


def largest_component(verts: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Keep the connected piece with the most faces (drops floaters of an imperfect SDF)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(verts)
    rows = np.concatenate([faces[:, 0], faces[:, 1], faces[:, 2]])
    cols = np.concatenate([faces[:, 1], faces[:, 2], faces[:, 0]])
    _, labels = connected_components(coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n)), directed=False)
    face_label = labels[faces[:, 0]]
    keep_label = np.bincount(face_label).argmax()
    keep_faces = faces[face_label == keep_label]
    used = np.unique(keep_faces)
    remap = -np.ones(n, np.int64)
    remap[used] = np.arange(len(used))
    return verts[used], remap[keep_faces]


#: Largest mesh a baked-avatar file may hold (a 2048^3 marching-cubes hand stays far below).
MAX_BAKED_VERTICES = 4_000_000


def save_baked(path: Any, mesh: BakedAvatar) -> None:
    """Write ``mesh`` as a safetensors file (atomically); refuses non-finite values."""
    from safetensors.numpy import save_file

    from palm.errors import PalmError
    from palm.io import atomic_write

    arrays = {k: np.ascontiguousarray(getattr(mesh, k)) for k in ARRAY_FIELDS}
    for key, value in arrays.items():
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            raise PalmError(path, f"refusing to write non-finite values in '{key}'")
    with atomic_write(path) as tmp:
        save_file(arrays, str(tmp))


def load_baked(path: Any) -> BakedAvatar:
    """Read and validate a file of :func:`save_baked`: shapes, finiteness, face indices in range."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    from palm.errors import PalmError

    try:
        t = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise PalmError(path, f"not a readable safetensors file ({exc})") from None
    missing = [k for k in ARRAY_FIELDS if k not in t]
    if missing:
        raise PalmError(path, f"missing arrays: {', '.join(missing)}")
    v, f = t["vertices"], t["faces"]
    n = len(v) if v.ndim == 2 else 0
    expected = {"vertices": (n, 3), "faces": (len(f), 3), "normals": (n, 3), "albedo": (n, 3), "roughness": (n,),
                "metallic": (n,), "joints": (16, 3), "parents": (16,)}
    for key, shape in expected.items():
        if t[key].shape != shape:
            raise PalmError(path, f"'{key}' has shape {t[key].shape}, expected {shape}")
    if not 0 < n <= MAX_BAKED_VERTICES or f.dtype.kind not in "iu" or len(f) == 0 or f.min() < 0 or f.max() >= n:
        raise PalmError(path, f"not a mesh: {n} vertices, faces out of range or empty")
    if t["skin_weights"].shape != (n, 16):
        raise PalmError(path, f"'skin_weights' has shape {t['skin_weights'].shape}, expected {(n, 16)}")
    for key, value in t.items():
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            raise PalmError(path, f"'{key}' contains NaN or infinite values")
    return BakedAvatar(**{k: t[k].astype(np.int32 if k in ("faces", "parents") else np.float32)
                          for k in ARRAY_FIELDS})
