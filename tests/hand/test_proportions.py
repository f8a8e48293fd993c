"""Hand proportions (palm/hand/proportions.py), posing a mesh about its own skeleton, and their fit to keypoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from palm.config import DetailConfig
from palm.detail import fit_proportions
from palm.hand import load_hand
from palm.hand.lbs import axis_angle_to_matrix, bone_transforms, skin_vertices
from palm.hand.proportions import Proportions, posed_keypoints, proportioned_keypoints, proportioned_rest
from palm.render.raster import project_screen
from palm.render.views import framing_camera


@pytest.fixture(scope="module")
def rig():
    return load_hand("open")


def _rest(rig, betas):
    with torch.no_grad():
        v, J = rig.rest(torch.as_tensor(betas)[None])
    v, J = v[0].double().numpy(), J[0].double().numpy()
    return v, J, v[rig.tip_vertex_ids.numpy()]


def _props(seed, sd=0.06):
    rng = np.random.default_rng(seed)
    length = np.exp(rng.normal(0, sd, (5, 3)))
    palm = np.exp(rng.normal(0, sd, 2))
    ones = tuple((1.0, 1.0, 1.0) for _ in range(5))
    return Proportions(tuple(tuple(float(x) for x in r) for r in length), ones, (float(palm[0]), float(palm[1]), 1.0))


def test_the_keypoint_map_is_the_surface_map_at_the_joints_and_tips(rig):
    betas = np.random.default_rng(0).normal(size=rig.n_betas).astype(np.float32)
    v, J, tips = _rest(rig, betas)
    props = _props(1)
    v2, J2 = proportioned_rest(v, J, rig.skin_weights.double().numpy(), rig.parents.numpy(), tips, props)
    Jt, Tt = proportioned_keypoints(torch.as_tensor(J), torch.as_tensor(tips), rig.parents.long(),
                                    torch.tensor(props.bone_length, dtype=torch.float64),
                                    torch.tensor(props.palm, dtype=torch.float64))
    assert np.allclose(Jt.numpy(), J2, atol=1e-9)
    # a fingertip vertex moves (almost) with its distal segment: the tip map is the surface map there
    assert np.abs(Tt.numpy() - v2[rig.tip_vertex_ids.numpy()]).max() < 1e-3
    assert not np.allclose(J2, J)  # the proportions did move the joints


@pytest.mark.parametrize("left", [False, True])
def test_posing_about_the_rigs_own_joints_is_the_rig(rig, left):
    rng = np.random.default_rng(2)
    betas = rng.normal(size=rig.n_betas).astype(np.float32)
    pose = rng.normal(scale=0.4, size=(16, 3)).astype(np.float32)
    _, J, _ = _rest(rig, betas)
    a = bone_transforms(rig, pose, betas, left=left)
    b = bone_transforms(rig, pose, betas, left=left, joints=J)
    assert np.abs(a - b).max() < 1e-5


def test_posing_a_proportioned_mesh_keeps_its_segments_on_their_bones(rig):
    """Longer fingers posed about the moved joints stay attached: the posed fingertip lies where the
    proportioned skeleton's chain puts it, not where the rig's joints would."""
    betas = np.zeros(rig.n_betas, np.float32)
    v, J, tips = _rest(rig, betas)
    props = _props(3, sd=0.1)
    v2, J2 = proportioned_rest(v, J, rig.skin_weights.double().numpy(), rig.parents.numpy(), tips, props)
    pose = np.zeros((16, 3), np.float32)
    pose[3] = [0.0, 0.0, 1.2]  # bend the index finger's distal joint
    normals = np.zeros_like(v2)
    own, _ = skin_vertices(v2, normals, rig.skin_weights.numpy(), bone_transforms(rig, pose, betas, joints=J2))
    rigs, _ = skin_vertices(v2, normals, rig.skin_weights.numpy(), bone_transforms(rig, pose, betas))
    tip = rig.tip_vertex_ids.numpy()[1]
    _, Tt = proportioned_keypoints(torch.as_tensor(J), torch.as_tensor(tips), rig.parents.long(),
                                   torch.tensor(props.bone_length, dtype=torch.float64),
                                   torch.tensor(props.palm, dtype=torch.float64))
    from palm.hand.lbs import axis_angle_to_matrix, rigid_chain

    g = rigid_chain(axis_angle_to_matrix(torch.as_tensor(pose, dtype=torch.float64)[None]),
                    torch.as_tensor(J2)[None], rig.parents.long())[0]
    expect = (g[3, :3, :3] @ (Tt[1] - torch.as_tensor(J2[3])) + g[3, :3, 3]).numpy()
    assert np.linalg.norm(own[tip] - expect) < 1.5e-3
    assert np.linalg.norm(rigs[tip] - expect) > np.linalg.norm(own[tip] - expect) + 1e-3


def _keypoints_of(rig, J, tips, props, pose):
    Jn, Tn = proportioned_keypoints(torch.as_tensor(J), torch.as_tensor(tips), rig.parents.long(),
                                    torch.tensor(props.bone_length, dtype=torch.float64),
                                    torch.tensor(props.palm, dtype=torch.float64))
    rot = axis_angle_to_matrix(torch.as_tensor(pose, dtype=torch.float64))
    return posed_keypoints(rot, Jn, Tn, rig.parents.long(), rig.keypoint_index), Jn, Tn


def test_posed_keypoints_of_the_rigs_own_skeleton_are_the_rigs(rig):
    rng = np.random.default_rng(7)
    betas = rng.normal(size=rig.n_betas).astype(np.float32)
    pose = rng.normal(scale=0.4, size=(16, 3)).astype(np.float32)
    _, J, tips = _rest(rig, betas)
    ours, _, _ = _keypoints_of(rig, J, tips, Proportions.identity(), pose)
    with torch.no_grad():
        theirs = rig(torch.as_tensor(pose)[None], torch.as_tensor(betas)[None]).keypoints[0]
    # the rig's tips are skinned vertices (blended weights), ours ride their distal bone rigidly
    assert np.abs(ours.numpy()[:21] - theirs.numpy()).max() < 2e-3
    joints_only = [i for i, j in enumerate(rig.keypoint_index.tolist()) if j < 16]
    assert np.abs(ours.numpy()[joints_only] - theirs.numpy()[joints_only]).max() < 1e-5


def test_fit_recovers_finger_lengths_and_palm_from_keypoints(rig):
    """Keypoints of a hand with known proportions, slightly curled and seen from the front: the fit
    puts the skeleton on them, and the finger lengths (knuckle to tip) and palm come back far
    closer to the truth than the rig's."""
    betas = np.zeros(rig.n_betas, np.float32)
    _, J, tips = _rest(rig, betas)
    truth = _props(4)
    pose = np.zeros((16, 3), np.float32)
    pose[[2, 5, 8, 11], 2] = 0.3
    points, _, _ = _keypoints_of(rig, J, tips, truth, pose)
    cam = framing_camera(points.float().numpy(), 256, 0.0, 0.0)
    kp = project_screen(points.float(), cam.K, cam.Rt).reshape(-1, 3)[:, :2].numpy()
    props, shift, before, after = fit_proportions(rig, J, tips, pose, np.zeros(3), cam.K, cam.Rt, kp, DetailConfig())
    assert not shift.any()  # a photo's 2D keypoints do not place the hand in depth
    assert after < 0.1 * before and after < 1.5

    knuckles = [13, 1, 4, 10, 7]

    def lengths(p):
        _, Jn, Tn = _keypoints_of(rig, J, tips, p, pose)
        fingers = (Tn - Jn[knuckles]).norm(dim=1).numpy()
        return fingers, np.asarray(p.palm[:2])

    (f_true, p_true), (f_fit, p_fit), (f_rig, _) = lengths(truth), lengths(props), lengths(Proportions.identity())
    assert np.abs(f_fit - f_true).mean() < 0.5 * np.abs(f_rig - f_true).mean()
    assert np.abs(np.log(p_fit / p_true)).max() < 0.02


def test_fit_to_3d_keypoints_also_finds_where_the_registered_root_is(rig):
    """A registration's 3D keypoints (a dataset's) fix the skeleton in depth too: lengths, palm and
    the rest-space shift of a hand whose root is 2 mm from the rig's come back to sub-millimetre."""
    betas = np.zeros(rig.n_betas, np.float32)
    _, J, tips = _rest(rig, betas)
    truth = _props(5)
    true_shift = np.array([0.0005, -0.002, 0.001])
    pose = np.random.default_rng(6).normal(scale=0.3, size=(16, 3)).astype(np.float32)
    transl = np.array([0.01, -0.02, 0.4])
    points, _, _ = _keypoints_of(rig, J + true_shift, tips + true_shift, truth, pose)
    points = points.numpy() + transl
    cam = framing_camera(points, 256, 0.0, 0.0)
    props, shift, before, after = fit_proportions(rig, J, tips, pose, transl, cam.K, cam.Rt, None, DetailConfig(),
                                                  keypoints_3d=points)
    assert before > 1.0 and after < 0.3  # millimetres
    assert np.abs(shift - true_shift).max() < 3e-4
    assert np.abs(np.log(props.palm[:2]) - np.log(truth.palm[:2])).max() < 0.02
