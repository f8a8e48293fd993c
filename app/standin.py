"""A procedural stand-in hand rig, used only when ``palm.hand`` cannot load its rig.

Boxes for the palm and the 15 finger segments, rigidly skinned to the 16 MANO-order joints, with
forward kinematics from axis-angle. It has the ``palm.hand`` model interface the studio uses
(``__call__(pose, betas, left)`` -> ``bone_transforms``, ``rest``, ``faces``, ``skin_weights``,
``parents``, ``n_betas``) so the studio still opens on a broken install and says so in its log.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PARENTS = np.array([-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14], np.int32)
# finger base (x, z) in metres and segment lengths, MANO order: index, middle, pinky, ring, thumb
_FINGERS = [((0.085, 0.025), (0.035, 0.025, 0.02)), ((0.09, 0.0), (0.04, 0.028, 0.022)),
            ((0.075, -0.045), (0.028, 0.02, 0.018)), ((0.085, -0.022), (0.036, 0.026, 0.02)),
            ((0.025, 0.04), (0.035, 0.03, 0.025))]


def _rodrigues(aa: np.ndarray) -> np.ndarray:
    theta = float(np.linalg.norm(aa))
    if theta < 1e-8:
        return np.eye(3)
    k = aa / theta
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(theta) * kx + (1 - np.cos(theta)) * kx @ kx


def _box(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    faces = [[a, b, c] for a, b, c, d in quads] + [[a, c, d] for a, b, c, d in quads]
    return corners, np.array(faces)


@dataclass
class _Output:
    bone_transforms: np.ndarray


class StandInHand:
    name = "stand-in"
    n_betas = 10
    parents = PARENTS

    def __init__(self) -> None:
        joints = [np.zeros(3)]
        for (x, z), _ in _FINGERS:
            joints.append(np.array([x, 0.0, z]))
            joints.append(joints[-1] + [_FINGERS[len(joints) // 3 - 1][1][0], 0, 0])
            joints.append(joints[-1] + [_FINGERS[len(joints) // 3 - 1][1][1], 0, 0])
        self.joints = np.array(joints[:16])
        verts, faces, weights = [], [], []
        parts = [(0, np.array([-0.01, -0.012, -0.055]), np.array([0.09, 0.012, 0.045]))]
        for f, ((x, z), lengths) in enumerate(_FINGERS):
            start = x
            for s, length in enumerate(lengths):
                w = 0.008 - 0.001 * s
                parts.append((1 + 3 * f + s, np.array([start, -w, z - w]), np.array([start + length, w, z + w])))
                start += length
        for joint, lo, hi in parts:
            v, fc = _box(lo, hi)
            faces.append(fc + sum(len(a) for a in verts))
            verts.append(v)
            wt = np.zeros((len(v), 16))
            wt[:, joint] = 1.0
            weights.append(wt)
        self._verts = np.concatenate(verts).astype(np.float32)
        self.faces = np.concatenate(faces).astype(np.int64)
        self.skin_weights = np.concatenate(weights).astype(np.float32)

    def rest(self, betas=None):
        return self._verts[None], self.joints[None].astype(np.float32)

    def __call__(self, pose, betas=None, transl=None, left: bool = False) -> _Output:
        pose = np.asarray(pose, np.float64).reshape(16, 3)
        g = np.zeros((16, 4, 4))
        for j in range(16):
            local = np.eye(4)
            local[:3, :3] = _rodrigues(pose[j])
            p = PARENTS[j]
            local[:3, 3] = self.joints[j] - (self.joints[p] if p >= 0 else 0.0)
            g[j] = local if p < 0 else g[p] @ local
        bones = g.copy()
        for j in range(16):
            bones[j, :3, 3] = g[j, :3, 3] - g[j, :3, :3] @ self.joints[j]
        if left:
            s = np.diag([-1.0, 1.0, 1.0, 1.0])
            bones = s @ bones @ s
        return _Output(bones[None].astype(np.float32))
