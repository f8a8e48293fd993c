"""Linear blend skinning of MANO-format hands (pure torch functions).

Conventions (MANO, ``flat_hand_mean=True``): the pose is ``(B, J, 3)`` axis-angle, row 0 the global
orientation about the root joint, rows 1.. each joint's rotation relative to its parent in the
flat hand's frame (all rest rotations are the identity, so the zero pose is the flat template).
"""

from __future__ import annotations

import torch
from torch import Tensor


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
    a = g.clone()
    a[..., :3, 3] = g[..., :3, 3] - torch.einsum("bjxy,bjy->bjx", g[..., :3, :3], rest_joints)
    t = torch.einsum("vj,bjxy->bvxy", weights, a)
    verts = torch.einsum("bvxy,bvy->bvx", t[..., :3, :3], v_posed) + t[..., :3, 3]
    return verts, g[..., :3, 3], a, g
