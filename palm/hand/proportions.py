"""Hand proportions the rig's betas cannot express: finger segment lengths and thicknesses, palm scale.

The rig's shape space is almost only overall size, while real hands (and the synthetic subjects,
:mod:`palm.data.synth.shape`) differ in the length of each finger segment, their thickness and the
palm's proportions. :class:`Proportions` holds those as multiplicative scales (1 = the rig's) and
:func:`proportioned_rest` applies them to any skinned flat hand (the rig's vertices, or an avatar's
baked mesh with its skinning weights):

- each finger segment ``j`` (from joint ``j`` to its child joint, or to the fingertip for a distal
  segment) is stretched along its axis ``d_j`` by ``L_j`` and its cross-section scaled by ``T_j``;
- the palm (joint 0) gets one affine map ``A`` about the wrist in the palm frame
  (:func:`palm_frame`: length, width, thickness);
- the joints follow the kinematic tree, ``J'_c = J_0 + A (J_c - J_0)`` for the wrist's children
  and ``J'_c = J'_p + L_p (J_c - J_p)`` for the others, and every vertex moves with its bones,
  blended by its skinning weights::

      v' = w_v0 [J_0 + A (v - J_0)] + sum_{j >= 1} w_vj [J'_j + L_j ((v - J_j) . d_j) d_j
                                                        + T_j (v - J_j - ((v - J_j) . d_j) d_j)]

:func:`proportioned_keypoints` is the same map for the joints and fingertips alone, in torch and
differentiable, and :func:`posed_keypoints` poses them, for fitting lengths to keypoints
(:func:`palm.detail.fit_proportions`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from palm.hand.lbs import rigid_chain

#: MANO joints of each finger, in the order thumb, index, middle, ring, pinky (``FINGERS`` order).
FINGER_JOINTS = ((13, 14, 15), (1, 2, 3), (4, 5, 6), (10, 11, 12), (7, 8, 9))


@dataclass(frozen=True)
class Proportions:
    """Per-subject proportions on top of the rig's betas (all multiplicative, 1 = the rig's).

    Attributes:
        bone_length: (5, 3) length scale of each finger segment (thumb..pinky; proximal, middle,
            distal; the thumb's are its metacarpal, proximal and distal segments).
        bone_thickness: (5, 3) cross-section scale of each finger segment.
        palm: (3,) palm scale along its length (wrist to middle knuckle), width and thickness.
    """

    bone_length: tuple[tuple[float, float, float], ...]
    bone_thickness: tuple[tuple[float, float, float], ...]
    palm: tuple[float, float, float]

    @staticmethod
    def identity() -> Proportions:
        ones = tuple((1.0, 1.0, 1.0) for _ in range(5))
        return Proportions(ones, ones, (1.0, 1.0, 1.0))


def palm_frame(joints: np.ndarray) -> np.ndarray:
    """(3, 3) rows: palm axis (wrist to middle knuckle), width (towards the index), palm normal."""
    axis = joints[4] - joints[0]
    axis /= np.linalg.norm(axis)
    width = joints[1] - joints[7]  # pinky knuckle -> index knuckle
    width -= (width @ axis) * axis
    width /= np.linalg.norm(width)
    return np.stack([axis, width, np.cross(axis, width)])


def proportioned_rest(vertices: np.ndarray, joints: np.ndarray, weights: np.ndarray, parents: np.ndarray,
                      tips: np.ndarray, proportions: Proportions) -> tuple[np.ndarray, np.ndarray]:
    """A skinned flat hand with ``proportions`` applied (module notes).

    Args:
        vertices: (V, 3) flat-hand vertices. joints: (16, 3) its rest joints. weights: (V, 16)
            skinning weights. parents: (16,) kinematic tree, parents first. tips: (5, 3) fingertip
            points (thumb..pinky), the far ends of the distal segments.
        proportions: the scales.

    Returns:
        ``(vertices (V, 3), joints (16, 3))`` float64: the new surface and the moved joints ``J'``.
    """
    v = np.asarray(vertices, np.float64)
    J = np.asarray(joints, np.float64)
    W = np.asarray(weights, np.float64)
    n_j = J.shape[0]
    L = np.ones(n_j)
    T = np.ones(n_j)
    end = np.zeros((n_j, 3))  # the far end of each finger segment
    for f, chain in enumerate(FINGER_JOINTS):
        for k, j in enumerate(chain):
            L[j] = proportions.bone_length[f][k]
            T[j] = proportions.bone_thickness[f][k]
            end[j] = J[chain[k + 1]] if k < 2 else tips[f]
    F = palm_frame(J)
    A = F.T @ np.diag(proportions.palm) @ F
    Jn = J.copy()
    for c in range(1, n_j):  # parents come before their children
        p = parents[c]
        Jn[c] = Jn[0] + A @ (J[c] - J[0]) if p == 0 else Jn[p] + L[p] * (J[c] - J[p])
    out = W[:, :1] * (Jn[0] + (v - J[0]) @ A.T)
    for j in range(1, n_j):
        d = end[j] - J[j]
        d /= np.linalg.norm(d)
        x = v - J[j]
        a = x @ d
        radial = x - a[:, None] * d
        out += W[:, j : j + 1] * (Jn[j] + (L[j] * a)[:, None] * d + T[j] * radial)
    return out, Jn


def proportioned_keypoints(joints: Tensor, tips: Tensor, parents: Tensor, length: Tensor,
                           palm: Tensor) -> tuple[Tensor, Tensor]:
    """Joints and fingertips of :func:`proportioned_rest`, differentiable in the scales.

    Args:
        joints: (16, 3) rest joints. tips: (5, 3) fingertips. parents: (16,) long.
        length: (5, 3) segment length scales. palm: (3,) palm scales (length, width, thickness).

    Returns:
        ``(joints (16, 3), tips (5, 3))`` moved.
    """
    F = torch.as_tensor(palm_frame(joints.detach().cpu().double().numpy()), dtype=joints.dtype,
                        device=joints.device)
    A = F.T @ torch.diag(palm) @ F
    L = torch.ones(joints.shape[0], dtype=joints.dtype, device=joints.device)
    for f, chain in enumerate(FINGER_JOINTS):
        L = L.index_put((torch.tensor(list(chain)),), length[f])
    out = [joints[0]]
    for c in range(1, joints.shape[0]):
        p = int(parents[c])
        out.append(joints[0] + A @ (joints[c] - joints[0]) if p == 0 else out[p] + L[p] * (joints[c] - joints[p]))
    new = torch.stack(out)
    distal = [chain[2] for chain in FINGER_JOINTS]
    new_tips = new[distal] + L[distal, None] * (tips - joints[distal])
    return new, new_tips


def posed_keypoints(rotations: Tensor, joints: Tensor, tips: Tensor, parents: Tensor, order: Tensor) -> Tensor:
    """(21, 3) keypoints of a skeleton posed about its own rest joints (before translation).

    Args:
        rotations: (16, 3, 3) local rotations of the pose. joints: (16, 3) rest joints. tips:
            (5, 3) rest fingertips (they move with their distal segments). parents: (16,) long.
        order: (21,) the rig's ``keypoint_index`` (joints then tips -> keypoint order).
    """
    g = rigid_chain(rotations[None], joints[None], parents)[0]
    distal = [chain[2] for chain in FINGER_JOINTS]
    tips_posed = torch.einsum("fab,fb->fa", g[distal, :3, :3], tips - joints[distal]) + g[distal, :3, 3]
    return torch.cat([g[:, :3, 3], tips_posed])[order]
