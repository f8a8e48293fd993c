"""Linear blend skinning of MANO-format hands: the rig's torch kernels and the numpy posing of meshes.

Conventions (MANO, ``flat_hand_mean=True``): the pose is ``(B, J, 3)`` axis-angle, row 0 the global
orientation about the root joint, rows 1.. each joint's rotation relative to its parent in the
flat hand's frame (all rest rotations are the identity, so the zero pose is the flat template).

:func:`lbs` is the rig's own skinning (torch, batched). :func:`bone_transforms` asks a hand model for
the bone matrices of one pose (numpy) and :func:`skin_vertices` applies bones to any mesh bound to the
rig (a baked avatar, an exported mesh, the viewport's vertices).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

#: ``diag(-1, 1, 1, 1)``: the mirror ``x -> -x`` between right and left hands (4x4, float32).
MIRROR_X = np.diag([-1.0, 1.0, 1.0, 1.0]).astype(np.float32)


def axis_angle_to_matrix(rotvec: Tensor) -> Tensor:
    """Rodrigues' formula.

    Args:
        rotvec: (..., 3) axis-angle vectors (angle = norm, radians).

    Returns:
        (..., 3, 3) rotation matrices.
    """
    # the epsilon keeps the gradient finite at zero rotation (same choice as MANO's own code)
    angle = torch.linalg.norm(rotvec + 1e-8, dim=-1, keepdim=True)
    axis = rotvec / angle
    cos, sin = torch.cos(angle)[..., None], torch.sin(angle)[..., None]
    x, y, z = axis.unbind(-1)
    zero = torch.zeros_like(x)
    k = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=-1).reshape(*rotvec.shape[:-1], 3, 3)
    eye = torch.eye(3, dtype=rotvec.dtype, device=rotvec.device)
    return eye + sin * k + (1 - cos) * (k @ k)


def mirror_pose(pose: Tensor) -> Tensor:
    """Mirror axis-angle poses between right and left hands: ``(x, y, z) -> (x, -y, -z)``.

    Args:
        pose: (..., 3).

    Returns:
        (..., 3) mirrored pose (its own inverse).
    """
    sign = torch.tensor([1.0, -1.0, -1.0], dtype=pose.dtype, device=pose.device)
    return pose * sign


def shape_blend(v_template: Tensor, shapedirs: Tensor, betas: Tensor) -> Tensor:
    """Shaped flat hand.

    Args:
        v_template: (V, 3). shapedirs: (V, 3, NB). betas: (B, NB).

    Returns:
        (B, V, 3) ``v_template + shapedirs @ betas``.
    """
    return v_template[None] + torch.einsum("bl,vcl->bvc", betas, shapedirs)


def rigid_chain(rotations: Tensor, joints: Tensor, parents: Tensor) -> Tensor:
    """Forward kinematics: joint frames of the posed hand.

    Args:
        rotations: (B, J, 3, 3) local rotations. joints: (B, J, 3) rest joints.
        parents: (J,) long, ``parents[0] = -1``, every parent before its child.

    Returns:
        (B, J, 4, 4) global joint frames ``G_j`` (rotation of the joint, posed joint position).
    """
    b, n = joints.shape[:2]
    rel = joints.clone()
    rel[:, 1:] = joints[:, 1:] - joints[:, parents[1:]]
    local = torch.zeros(b, n, 4, 4, dtype=joints.dtype, device=joints.device)
    local[..., :3, :3] = rotations
    local[..., :3, 3] = rel
    local[..., 3, 3] = 1.0
    parent_list = parents.tolist()  # one host copy, not one per joint
    frames = [local[:, 0]]
    for j in range(1, n):
        frames.append(frames[parent_list[j]] @ local[:, j])
    return torch.stack(frames, dim=1)


def skinning_transforms(frames: Tensor, rest_joints: Tensor) -> Tensor:
    """(B, J, 4, 4) bone transforms ``A_j = G_j T(-J_j)`` (rest -> posed) of joint frames ``G_j``
    (:func:`rigid_chain`) about rest joints (B, J, 3): what LBS blends."""
    a = frames.clone()
    a[..., :3, 3] = frames[..., :3, 3] - torch.einsum("bjxy,bjy->bjx", frames[..., :3, :3], rest_joints)
    return a


def lbs(
    betas: Tensor,
    pose: Tensor,
    v_template: Tensor,
    shapedirs: Tensor,
    posedirs: Tensor,
    j_regressor: Tensor,
    parents: Tensor,
    weights: Tensor,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """MANO's skinning: shape blend, joint regression, pose correctives, forward kinematics, LBS.

    Args:
        betas: (B, NB). pose: (B, J, 3) axis-angle. v_template: (V, 3).
        shapedirs: (V, 3, NB). posedirs: (V, 3, P) with ``P = 9 (J - 1)`` or ``P = 0`` (none).
        j_regressor: (J, V). parents: (J,) long. weights: (V, J).

    Returns:
        vertices (B, V, 3), joints (B, J, 3) posed, bone_transforms (B, J, 4, 4) mapping the shaped
        flat hand to the posed hand, global_transforms (B, J, 4, 4) posed joint frames ``G_j``.
    """
    v_shaped = shape_blend(v_template, shapedirs, betas)
    rest_joints = torch.einsum("jv,bvc->bjc", j_regressor, v_shaped)
    rot = axis_angle_to_matrix(pose)
    v_posed = v_shaped
    if posedirs.shape[-1] > 0:
        eye = torch.eye(3, dtype=pose.dtype, device=pose.device)
        feature = (rot[:, 1:] - eye).reshape(pose.shape[0], -1)
        v_posed = v_shaped + torch.einsum("bp,vcp->bvc", feature, posedirs)
    g = rigid_chain(rot, rest_joints, parents)
    a = skinning_transforms(g, rest_joints)
    t = torch.einsum("vj,bjxy->bvxy", weights, a)
    verts = torch.einsum("bvxy,bvy->bvx", t[..., :3, :3], v_posed) + t[..., :3, 3]
    return verts, g[..., :3, 3], a, g


def bone_transforms(hand: Any, pose: Any, betas: Any = None, left: bool = False,
                    joints: Any = None) -> np.ndarray:
    """Bone matrices that move the canonical (right, flat, shaped) mesh into ``pose``.

    A left hand is the rig's mirrored left hand (``hand(..., left=True)``, bones ``M B M`` with
    ``M = diag(-1, 1, 1, 1)``, see :mod:`palm.hand.model`); the mesh being posed stays the
    right-hand canonical mesh, so the mirror is folded into the matrices: ``B_left @ M``. Skinning
    with them mirrors the points too, hence the triangle winding of the result must be reversed.

    Args:
        hand: a ``palm.hand.HandModel`` (or anything called as ``hand(pose=, betas=[, left=])`` that
            returns ``bone_transforms``).
        pose: (16, 3) or (48,) axis-angle, row 0 the global orientation (tensor or array).
        betas: (n_betas,) or (1, n_betas) shape coefficients, or None (mean shape).
        left: pose the mirrored left hand.
        joints: (16, 3) rest joints of the mesh being posed (a baked avatar's ``joints``, which
            :func:`palm.hand.proportions.proportioned_rest` may have moved); None: the rig's for ``betas``.

    Returns:
        (16, 4, 4) float32.
    """
    pose_t = torch.as_tensor(pose, dtype=torch.float32).detach().cpu().reshape(1, 16, 3)
    if joints is not None:  # the same chain about the mesh's own skeleton (the rig's right-hand convention)
        rest = torch.as_tensor(np.asarray(joints, np.float64)).reshape(1, 16, 3)
        p = (mirror_pose(pose_t) if left else pose_t).double()
        g = rigid_chain(axis_angle_to_matrix(p), rest, torch.as_tensor(hand.parents).long().cpu())
        bones = skinning_transforms(g, rest)[0].numpy().astype(np.float32)
        return MIRROR_X @ bones if left else bones  # (M B M) M, as the rig path below
    betas_t = None if betas is None else torch.as_tensor(betas, dtype=torch.float32).detach().cpu().reshape(1, -1)
    with torch.no_grad():
        out = hand(pose=pose_t, betas=betas_t, left=True) if left else hand(pose=pose_t, betas=betas_t)
    bones = out.bone_transforms.detach().cpu().numpy().reshape(16, 4, 4).astype(np.float32)
    return bones @ MIRROR_X if left else bones


def skin_vertices(
    vertices: np.ndarray, normals: np.ndarray, weights: np.ndarray, bones: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Linear blend skinning of points and normals (numpy, float64 inside).

    Normals are moved by each vertex's blended 3x3 (exact for rigid bones, the usual LBS
    approximation in between) and renormalised.

    Args:
        vertices: (V, 3) canonical positions.
        normals: (V, 3) canonical unit normals (zeros stay zero).
        weights: (V, J) skin weights (rows sum to 1).
        bones: (J, 4, 4) bone transforms (:func:`bone_transforms`).

    Returns:
        Posed (V, 3) positions and (V, 3) unit normals, float32.
    """
    blend = np.einsum("vj,jab->vab", np.asarray(weights, np.float64), np.asarray(bones, np.float64))  # (V, 4, 4)
    posed = np.einsum("vab,vb->va", blend[:, :3, :3], np.asarray(vertices, np.float64)) + blend[:, :3, 3]
    n = np.einsum("vab,vb->va", blend[:, :3, :3], np.asarray(normals, np.float64))
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
    return posed.astype(np.float32), n.astype(np.float32)
