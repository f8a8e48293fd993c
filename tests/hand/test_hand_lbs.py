"""Our LBS against smplx's own implementation on the same MANO-format arrays."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from palm.hand import load_hand
from palm.hand.lbs import MIRROR_X, axis_angle_to_matrix, bone_transforms, skin_vertices


def _raw(path):
    with open(path, "rb") as fh:
        return pickle.load(fh, encoding="latin1")


def test_lbs_matches_smplx_lbs(mano_file):
    import smplx.lbs

    raw = _raw(mano_file)
    hand = load_hand("mano", mano_file)
    gen = torch.Generator().manual_seed(1)
    b = 4
    pose = torch.randn(b, 16, 3, generator=gen) * 0.6
    betas = torch.randn(b, 10, generator=gen)
    out = hand(pose, betas)

    n_v = raw["v_template"].shape[0]
    t = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float32)
    parents = torch.as_tensor(raw["kintree_table"][0].astype(np.int64))
    parents[0] = -1
    verts, joints = smplx.lbs.lbs(
        betas, pose.reshape(b, 48), t(raw["v_template"]), t(raw["shapedirs"]),
        t(raw["posedirs"].reshape(-1, 135).T), t(raw["J_regressor"].toarray()), parents, t(raw["weights"]),
    )  # fmt: skip
    assert verts.shape == (b, n_v, 3)
    assert torch.allclose(out.vertices, verts, atol=1e-5, rtol=0)
    assert torch.allclose(out.joints, joints, atol=1e-5, rtol=0)
    # the pose does move the mesh (the comparison is not between two rest meshes)
    assert (out.vertices - hand.rest(betas)[0]).abs().max() > 1e-2


def test_forward_matches_smplx_mano_layer(mano_file):
    import smplx

    layer = smplx.MANO(str(mano_file), is_rhand=True, use_pca=False, flat_hand_mean=True)
    hand = load_hand("mano", mano_file)
    gen = torch.Generator().manual_seed(2)
    pose = torch.randn(3, 16, 3, generator=gen) * 0.5
    betas = torch.randn(3, 10, generator=gen)
    transl = torch.randn(3, 3, generator=gen) * 0.1
    ref = layer(betas=betas, global_orient=pose[:, 0], hand_pose=pose[:, 1:].reshape(3, 45), transl=transl)
    out = hand(pose, betas, transl)
    assert torch.allclose(out.vertices, ref.vertices, atol=1e-5, rtol=0)
    assert torch.allclose(out.joints, ref.joints[:, :16], atol=1e-5, rtol=0)
    from smplx.vertex_ids import vertex_ids

    # fingertip keypoints are MANO's own tip vertices, in smplx's order thumb, index, middle, ring, pinky
    assert hand.tip_vertex_ids.tolist() == list(vertex_ids["mano"].values())
    assert torch.allclose(out.keypoints[:, [4, 8, 12, 16, 20]], ref.vertices[:, hand.tip_vertex_ids], atol=1e-5)


def test_axis_angle_matrix_is_a_rotation():
    r = axis_angle_to_matrix(torch.randn(50, 3, generator=torch.Generator().manual_seed(3)))
    eye = torch.eye(3).expand(50, 3, 3)
    assert torch.allclose(r @ r.transpose(1, 2), eye, atol=1e-5)
    assert torch.allclose(torch.linalg.det(r), torch.ones(50), atol=1e-5)
    # rotating the axis leaves it fixed; the angle is the vector's norm
    v = torch.tensor([[0.0, 0.0, np.pi / 2]])
    assert torch.allclose(axis_angle_to_matrix(v)[0] @ torch.tensor([1.0, 0, 0]), torch.tensor([0.0, 1, 0]), atol=1e-6)


@pytest.mark.parametrize("source", ["open", "mano"])
def test_bone_transforms_skin_the_rest_hand(source, mano_file):
    hand = load_hand(source, mano_file if source == "mano" else None)
    if hand.posedirs.shape[-1]:
        hand.posedirs.zero_()  # bone transforms alone reproduce LBS only without pose correctives
    gen = torch.Generator().manual_seed(4)
    pose = torch.randn(2, 16, 3, generator=gen) * 0.4
    betas = torch.randn(2, hand.n_betas, generator=gen)
    transl = torch.randn(2, 3, generator=gen) * 0.1
    out = hand(pose, betas, transl)
    rest_v, rest_j = hand.rest(betas)
    t = torch.einsum("vj,bjxy->bvxy", hand.skin_weights, out.bone_transforms)
    skinned = torch.einsum("bvxy,bvy->bvx", t[..., :3, :3], rest_v) + t[..., :3, 3]
    assert torch.allclose(skinned, out.vertices, atol=1e-5)
    # joint frames carry the posed joints, and map each rest joint to its posed position
    assert torch.allclose(out.global_transforms[..., :3, 3], out.joints, atol=1e-6)
    moved = torch.einsum("bjxy,bjy->bjx", out.bone_transforms[..., :3, :3], rest_j) + out.bone_transforms[..., :3, 3]
    assert torch.allclose(moved, out.joints, atol=1e-5)


@pytest.mark.parametrize("left", [False, True])
def test_numpy_bone_transforms_pose_the_canonical_right_mesh(left):
    """``bone_transforms`` (numpy, one pose) skins the right-hand canonical mesh into the rig's own
    posed hand; for a left hand the mirror is folded into the bones (``B_left @ MIRROR_X``)."""
    hand = load_hand("open")
    gen = torch.Generator().manual_seed(5)
    pose = torch.randn(16, 3, generator=gen) * 0.4
    betas = torch.randn(hand.n_betas, generator=gen)
    bones = bone_transforms(hand, pose.numpy(), betas.numpy(), left=left)
    assert bones.shape == (16, 4, 4) and bones.dtype == np.float32
    out = hand(pose[None], betas[None], left=left)
    np.testing.assert_allclose(bones @ (MIRROR_X if left else np.eye(4)), out.bone_transforms[0].numpy(), atol=1e-6)
    rest = hand.rest(betas[None])[0][0].numpy()
    normals = np.tile([[0.0, 0.0, 1.0]], (len(rest), 1))
    posed, posed_n = skin_vertices(rest, normals, hand.skin_weights.numpy(), bones)
    np.testing.assert_allclose(posed, out.vertices[0].numpy(), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(posed_n, axis=1), 1.0, atol=1e-5)
