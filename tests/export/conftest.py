"""A small articulated toy hand with the ``palm.hand.HandModel`` interface, for the export tests.

The export writers only need the interface (rest mesh, faces, skin weights, parents, LBS
transforms), so the tests do not depend on the real rig: the toy hand is a palm box plus one
chain of three boxes per finger, MANO joint order and parents, blended skin weights, and
MANO-style LBS (``G_j = G_parent [R(theta_j) | J_j - J_parent]``).
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

PARENTS = np.array([-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14], np.int64)
#: (base joint, z offset) of the five chains: index, middle, pinky, ring, thumb.
_FINGERS = ((1, 0.025), (4, 0.005), (7, -0.035), (10, -0.015), (13, 0.045))
_BONE = 0.025


def _rodrigues(aa: torch.Tensor) -> torch.Tensor:
    """(..., 3) axis-angle -> (..., 3, 3) rotation."""
    angle = aa.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    k = aa / angle
    kx, ky, kz = k.unbind(-1)
    zero = torch.zeros_like(kx)
    kmat = torch.stack([zero, -kz, ky, kz, zero, -kx, -ky, kx, zero], -1).reshape(*aa.shape[:-1], 3, 3)
    s, c = torch.sin(angle)[..., None], torch.cos(angle)[..., None]
    eye = torch.eye(3, dtype=aa.dtype).expand_as(kmat)
    return eye + s * kmat + (1 - c) * kmat @ kmat


def _box(lo, hi):
    x0, y0, z0 = lo
    x1, y1, z1 = hi
    v = np.array(
        [[x0, y0, z0], [x1, y0, z0], [x1, y1, z0], [x0, y1, z0], [x0, y0, z1], [x1, y0, z1], [x1, y1, z1], [x0, y1, z1]]
    )
    f = np.array(
        [
            [0, 2, 1],
            [0, 3, 2],
            [4, 5, 6],
            [4, 6, 7],
            [0, 1, 5],
            [0, 5, 4],
            [3, 7, 6],
            [3, 6, 2],
            [0, 4, 7],
            [0, 7, 3],
            [1, 2, 6],
            [1, 6, 5],
        ]
    )
    return v, f


class ToyHand:
    """Boxes on a 16-joint MANO-ordered skeleton; fingers along +x, palm normal along -y."""

    name = "toy"
    n_betas = 2

    def __init__(self):
        joints = np.zeros((16, 3))
        for base, z in _FINGERS:
            for k in range(3):
                joints[base + k] = (0.06 + k * _BONE, 0.0, z)
        joints[13:16, 0] -= 0.04  # the thumb starts lower
        self._joints = joints
        verts, faces, weights = [], [], []
        v, f = _box((-0.01, -0.012, -0.045), (0.06, 0.012, 0.055))
        verts.append(v), faces.append(f), weights.append(np.tile(np.eye(16)[0], (8, 1)))
        for base, _ in _FINGERS:
            for k in range(3):
                j = base + k
                lo = joints[j] + (0.001, -0.008, -0.008)
                hi = joints[j] + (_BONE - 0.001, 0.008, 0.008)
                v, f = _box(lo, hi)
                w = np.zeros((8, 16))
                w[:, j] = 0.7
                w[:, PARENTS[j]] += 0.15
                w[:, 0] += 0.1
                w[:, (j + 5) % 16] += 0.03
                w[:, (j + 7) % 16] += 0.02  # a fifth influence: exercises the top-4 renormalisation
                faces.append(f + sum(len(x) for x in verts))
                verts.append(v), weights.append(w)
        self._verts = np.concatenate(verts)
        self.faces = torch.as_tensor(np.concatenate(faces), dtype=torch.long)
        self.skin_weights = torch.as_tensor(np.concatenate(weights), dtype=torch.float32)
        self.parents = torch.as_tensor(PARENTS)
        self.uv = None

    def _shaped(self, betas):
        scale = 1.0 if betas is None else 1.0 + 0.05 * float(torch.as_tensor(betas).reshape(-1)[0])
        return (
            torch.as_tensor(self._verts * scale, dtype=torch.float32)[None],
            torch.as_tensor(self._joints * scale, dtype=torch.float32)[None],
        )

    def rest(self, betas=None):
        return self._shaped(betas)

    def __call__(self, pose, betas=None, transl=None, left=False):
        verts, joints = self._shaped(betas)
        pose = torch.as_tensor(pose, dtype=torch.float32).reshape(1, 16, 3)
        rot = _rodrigues(pose)[0]
        g = []
        for j in range(16):
            local = torch.eye(4)
            local[:3, :3] = rot[j]
            p = PARENTS[j]
            local[:3, 3] = joints[0, j] - (joints[0, p] if p >= 0 else 0)
            g.append(local if p < 0 else g[p] @ local)
        g = torch.stack(g)
        if transl is not None:
            g[:, :3, 3] += torch.as_tensor(transl, dtype=torch.float32).reshape(3)
        rest_inv = torch.eye(4).repeat(16, 1, 1)
        rest_inv[:, :3, 3] = -joints[0]
        bones = g @ rest_inv
        blend = torch.einsum("vj,jab->vab", self.skin_weights, bones)
        homo = torch.cat([verts[0], torch.ones(len(verts[0]), 1)], 1)
        posed = torch.einsum("vab,vb->va", blend, homo)[:, :3]
        return SimpleNamespace(
            vertices=posed[None], joints=g[None, :, :3, 3], bone_transforms=bones[None], global_transforms=g[None]
        )


@pytest.fixture(scope="session")
def toy_hand():
    return ToyHand()


@pytest.fixture(scope="session")
def toy_avatar(toy_hand):
    from palm.bake import bake_from_hand

    return bake_from_hand(toy_hand)


@pytest.fixture(scope="session")
def bent_pose():
    """Index finger bent 60 degrees at the MCP, middle at the PIP, a small global rotation."""
    pose = np.zeros((16, 3), np.float32)
    pose[0] = (0.0, 0.3, 0.0)
    pose[1] = (0.0, 0.0, -np.pi / 3)
    pose[5] = (0.0, 0.0, -np.pi / 4)
    return pose


@pytest.fixture(scope="session")
def three_lobes():
    """A three-lobe studio light (key, fill, sky) as raw SG lobes (3, 7); the key (lobe 0) is the
    brightest. Cheap to shade: the renders that test coverage, not light, use it."""
    return np.array(
        [
            [0.4, 0.8, 0.45, 8.0, 3.0, 2.9, 2.7],
            [-0.6, 0.2, 0.5, 3.0, 0.8, 0.85, 1.0],
            [0.0, 1.0, 0.0, 0.8, 0.35, 0.38, 0.42],
        ],
        np.float32,
    )
