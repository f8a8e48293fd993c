"""The open rig and the HandModel interface: rest pose, orders, frames, mirroring, shapes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import trimesh

from palm.config import CANONICAL_BOX_MAX, CANONICAL_BOX_MIN
from palm.hand import (
    JOINT_NAMES,
    KEYPOINT_FROM_JOINT,
    KEYPOINT_NAMES,
    PARENTS,
    load_hand,
    load_pose,
    mirror_pose,
)


@pytest.fixture(scope="module")
def hand():
    return load_hand("open")


def _pose(name: str) -> torch.Tensor:
    return torch.as_tensor(load_pose(name), dtype=torch.float32)[None]


@pytest.mark.parametrize("source", ["open", "mano"])
def test_rest_pose_reproduces_template(source, mano_file):
    h = load_hand(source, mano_file if source == "mano" else None)
    out = h(torch.zeros(1, 16, 3))
    assert torch.allclose(out.vertices[0], h.v_template, atol=1e-6)
    assert torch.allclose(out.joints[0], h.J_regressor @ h.v_template, atol=1e-6)
    betas = torch.randn(2, h.n_betas, generator=torch.Generator().manual_seed(0))
    rest_v, rest_j = h.rest(betas)
    shaped = h(torch.zeros(2, 16, 3), betas)
    assert torch.allclose(shaped.vertices, rest_v, atol=1e-6)
    assert torch.allclose(shaped.joints, rest_j, atol=1e-6)
    assert not torch.allclose(rest_v[0], rest_v[1])
    assert torch.allclose(out.bone_transforms[0], torch.eye(4).expand(16, 4, 4), atol=1e-6)


def test_open_rig_contents(hand):
    assert hand.name == "open" and hand.n_betas >= 10
    assert hand.faces.dtype == torch.long and hand.faces.shape[1] == 3
    assert hand.uv is not None and hand.uv.shape == (hand.n_vertices, 2)
    assert float(hand.uv.min()) >= 0 and float(hand.uv.max()) <= 1
    assert torch.allclose(hand.skin_weights.sum(1), torch.ones(hand.n_vertices), atol=1e-5)
    assert tuple(hand.parents.tolist()) == PARENTS
    assert torch.allclose(hand.J_regressor.sum(1), torch.ones(16), atol=1e-5)


def test_canonical_frame_and_box(hand):
    v, j = hand.v_template.numpy(), (hand.J_regressor @ hand.v_template).numpy()
    assert np.all(v >= np.array(CANONICAL_BOX_MIN)) and np.all(v <= np.array(CANONICAL_BOX_MAX))
    assert 0.09 <= j[0, 0] <= 0.10  # wrist at x ~ +0.1
    tips = v[hand.tip_vertex_ids.numpy()]  # thumb, index, middle, ring, pinky
    length = j[0, 0] - tips[2, 0]
    assert 0.175 <= length <= 0.195  # wrist joint to middle fingertip, metres
    assert np.all(tips[1:, 0] < j[0, 0] - 0.12)  # fingers point towards -x
    assert np.all(np.diff(tips[1:, 2]) < 0)  # z decreases from index to pinky ...
    assert tips[0, 2] > tips[1, 2]  # ... and the thumb is the +z-most
    # flexing each finger's base joint about +z curls the fingertip towards -y: the palm side
    bent = torch.zeros(1, 16, 3)
    bent[0, [1, 4, 7, 10], 2] = 0.5
    moved = (hand(bent).keypoints[0] - hand(torch.zeros(1, 16, 3)).keypoints[0]).numpy()
    assert np.all(moved[[8, 12, 16, 20], 1] < -0.02)


def test_joint_and_keypoint_order(hand):
    assert len(JOINT_NAMES) == 16 and len(KEYPOINT_NAMES) == 21 and len(KEYPOINT_FROM_JOINT) == 21
    out = hand(torch.zeros(1, 16, 3))
    j, kp, v = out.joints[0], out.keypoints[0], out.vertices[0]
    assert torch.equal(kp[0], j[0])
    fingers = {"thumb": (13, 1), "index": (1, 5), "middle": (4, 9), "ring": (10, 13), "pinky": (7, 17)}
    for name, (joint0, kp0) in fingers.items():
        chain = kp[kp0 : kp0 + 4]
        assert torch.equal(chain[0], j[joint0]) and JOINT_NAMES[joint0] == f"{name}1"
        assert KEYPOINT_NAMES[kp0 + 3] == f"{name}_tip"
        # along each finger the keypoints get farther from the wrist, the tip the farthest
        dist = (chain - j[0]).norm(dim=-1)
        assert torch.all(dist[1:] > dist[:-1]), name
        # the tip is the vertex farthest along the distal bone among that bone's vertices
        distal = joint0 + 2
        d = (j[distal] - j[distal - 1]) / (j[distal] - j[distal - 1]).norm()
        own = hand.skin_weights.argmax(1) == distal
        assert torch.allclose(chain[3], v[own][((v[own] - j[distal]) @ d).argmax()])
    assert torch.equal(kp[4], v[hand.tip_vertex_ids[0]])  # thumb tip keypoint index 4


def test_mirroring_round_trip(hand):
    gen = torch.Generator().manual_seed(5)
    pose = torch.randn(2, 16, 3, generator=gen) * 0.3
    betas = torch.randn(2, hand.n_betas, generator=gen)
    transl = torch.randn(2, 3, generator=gen) * 0.05
    assert torch.equal(mirror_pose(mirror_pose(pose)), pose)
    right = hand(pose, betas)
    left = hand(mirror_pose(pose), betas, left=True)
    flip = torch.tensor([-1.0, 1.0, 1.0])
    assert torch.allclose(left.vertices, right.vertices * flip, atol=1e-6)
    assert torch.allclose(left.keypoints, right.keypoints * flip, atol=1e-6)
    m = torch.diag(torch.tensor([-1.0, 1.0, 1.0, 1.0]))
    assert torch.allclose(left.bone_transforms, m @ right.bone_transforms @ m, atol=1e-6)
    assert torch.allclose(left.global_transforms, m @ right.global_transforms @ m, atol=1e-6)
    assert torch.equal(left.faces, right.faces[:, [0, 2, 1]])
    # transl is applied in the left hand's own world
    moved = hand(mirror_pose(pose), betas, transl, left=True)
    assert torch.allclose(moved.vertices, left.vertices + transl[:, None], atol=1e-6)
    # left rotations are proper rotations and the left mesh stays outward-facing
    assert torch.allclose(torch.linalg.det(left.global_transforms[..., :3, :3]), torch.ones(2, 16), atol=1e-5)
    for out, is_left in ((right, False), (left, True)):
        sv, sf = hand.sealed_mesh(out.vertices[0], left=is_left)
        assert trimesh.Trimesh(sv.numpy(), sf.numpy(), process=False).volume > 0


@pytest.mark.parametrize("pose_name", ["flat", "fist"])
def test_sealed_mesh_is_watertight(hand, pose_name):
    verts, faces = hand.sealed_mesh(hand(_pose(pose_name)).vertices[0])
    mesh = trimesh.Trimesh(verts.numpy(), faces.numpy(), process=False)
    assert mesh.is_watertight and mesh.is_winding_consistent
    assert 2e-4 < mesh.volume < 6e-4  # an adult hand is about 300-500 cm^3
    assert not trimesh.Trimesh(hand.v_template.numpy(), hand.faces.numpy(), process=False).is_watertight


def test_shape_directions_change_size_smoothly(hand):
    steps = torch.linspace(-3, 3, 13)
    betas = torch.zeros(13, hand.n_betas)
    betas[:, 0] = steps
    v, j = hand.rest(betas)
    tips = v[:, hand.tip_vertex_ids[2]]
    length = (j[:, 0] - tips).norm(dim=-1)
    width = (j[:, 1] - j[:, 7]).norm(dim=-1)
    for size in (length, width):
        d = torch.diff(size)
        assert torch.all(d > 0)  # monotone: beta_0 grows the hand
        assert (d.max() - d.min()) < 0.2 * d.mean()  # continuous, close to linear steps
    assert 0.005 < float(length[7] - length[6]) < 0.03  # one std changes the length by mm-cm
    # every direction moves the surface, by a plausible amount for one standard deviation
    for k in range(hand.n_betas):
        disp = hand.shapedirs[..., k].norm(dim=-1).max()
        assert 1e-5 < float(disp) < 0.03, k
