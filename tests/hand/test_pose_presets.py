"""The pose presets look like their names, and the joint limits hold them.

Every check here is geometric: the presets are posed on the embedded open rig and judged by where
the joints and fingertips end up (distances to the palm, bends between bones, contacts), never by
comparing stored numbers. The palm frame comes from the posed joints, so the checks do not depend
on the global orientation.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree

from palm.hand import POSE_PRESETS, load_hand, load_pose
from palm.hand.poses import (
    ANGLE_NAMES,
    JOINT_LIMITS,
    angles_to_pose,
    clamp_pose,
    joint_frames,
    limits_array,
    pose_to_angles,
    pose_within_limits,
)

#: (MCP, PIP, DIP) joints and fingertip keypoint of each finger; the thumb as (CMC, MCP, IP).
CHAINS = {
    "thumb": (13, 14, 15, 4), "index": (1, 2, 3, 8), "middle": (4, 5, 6, 12),
    "ring": (10, 11, 12, 16), "pinky": (7, 8, 9, 20),
}  # fmt: skip
FINGERS = ("index", "middle", "ring", "pinky")
NEAR = 0.045  # a fingertip closed onto the palm is within 4.5 cm of the palm centre
FAR = 0.075  # an extended fingertip is more than 7.5 cm away (the flat pinky: 7.8 cm)
REQUIRED = {"flat", "relaxed", "fist", "point", "pinch", "ok", "thumbs-up", "spread", "peace", "grasp"}


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _angle(u: np.ndarray, w: np.ndarray) -> float:
    return math.degrees(math.acos(float(np.clip(_unit(u) @ _unit(w), -1.0, 1.0))))


class Posed:
    """One preset posed on the rig, with the palm frame read from its joints."""

    def __init__(self, hand, pose: np.ndarray):
        with torch.no_grad():
            out = hand(torch.as_tensor(pose, dtype=torch.float32)[None])
        self.v = out.vertices[0].double().numpy()
        self.j = out.joints[0].double().numpy()
        self.k = out.keypoints[0].double().numpy()
        j = self.j
        self.centre = j[[0, 1, 4, 7, 10]].mean(0)  # wrist and the four knuckles
        self.normal = _unit(np.cross(j[1] - j[0], j[7] - j[0]))  # out of the palm
        self.across = _unit(j[1] - j[7])  # little finger -> index: towards the thumb
        self.up = _unit(j[[1, 4, 7, 10]].mean(0) - j[0])  # wrist -> knuckles

    def tip(self, finger: str) -> np.ndarray:
        return self.k[CHAINS[finger][3]]

    def tip_to_palm(self, finger: str) -> float:
        return float(np.linalg.norm(self.tip(finger) - self.centre))

    def bends(self, finger: str) -> tuple[float, float, float]:
        """Degrees between consecutive bones at the finger's three joints (0 = straight)."""
        a, b, c, t = CHAINS[finger]
        j = self.j
        return _angle(j[a] - j[0], j[b] - j[a]), _angle(j[b] - j[a], j[c] - j[b]), _angle(j[c] - j[b], self.k[t] - j[c])

    def height(self, point: np.ndarray) -> float:
        """How far a point lies out of the palm (along the palm normal) from the palm centre."""
        return float((point - self.centre) @ self.normal)


@pytest.fixture(scope="module")
def hand():
    return load_hand("open")


@pytest.fixture(scope="module")
def posed(hand):
    return {name: Posed(hand, load_pose(name)) for name in POSE_PRESETS}


def _vertex_normals(v: np.ndarray, faces: np.ndarray) -> np.ndarray:
    fn = np.cross(v[faces[:, 1]] - v[faces[:, 0]], v[faces[:, 2]] - v[faces[:, 0]])
    n = np.zeros_like(v)
    for k in range(3):
        np.add.at(n, faces[:, k], fn)
    return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)


def _depth_inside(v, normals, segment_of, part_a, part_b, reach=0.012) -> float:
    """Deepest point of part A inside part B (metres, >= 0), from the nearest vertex of B and its normal."""
    a = np.flatnonzero(np.isin(segment_of, part_a))
    b = np.flatnonzero(np.isin(segment_of, part_b))
    dist, idx = cKDTree(v[b]).query(v[a])
    signed = np.einsum("ij,ij->i", v[a] - v[b][idx], normals[b][idx])
    close = dist < reach
    return float(max(0.0, -signed[close].min())) if close.any() else 0.0


# ---------------------------------------------------------------------------------------------
# the rig's joint axes
# ---------------------------------------------------------------------------------------------


def test_joint_frames_are_rotations_and_flexion_is_about_z(hand):
    frames = joint_frames(hand)
    assert frames.shape == (16, 3, 3)
    assert np.allclose(np.einsum("jab,jac->jbc", frames, frames), np.eye(3), atol=1e-9)
    assert np.allclose(np.linalg.det(frames), 1.0)
    for finger in FINGERS:
        for joint in CHAINS[finger][:3]:
            # fingers point along -x and the palm faces -y: flexion is about (nearly) +z
            assert frames[joint][:, 0] @ np.array([0.0, 0.0, 1.0]) > math.cos(math.radians(16)), joint
    assert np.allclose(joint_frames(), frames)  # the default is the open rig


@pytest.mark.parametrize("finger", list(CHAINS))
def test_positive_angles_move_the_finger_as_named(hand, finger):
    """Flexion moves the fingertip out of the palm side (towards the pad), abduction towards the thumb."""
    rest = Posed(hand, np.zeros((16, 3)))
    for joint in CHAINS[finger][:3]:
        for comp, name in ((0, "flex"), (1, "abd")):
            ang = np.zeros((16, 3))
            ang[joint, comp] = math.radians(20)
            moved = Posed(hand, angles_to_pose(ang, hand)).tip(finger) - rest.tip(finger)
            if finger == "thumb" and name == "flex":
                # the thumb curls across the palm, towards the little finger and out of the palm
                assert moved @ rest.across < 0 and moved @ rest.normal > 0, (joint, name, moved)
            elif name == "flex":
                assert moved @ rest.normal > 0.8 * np.linalg.norm(moved), (joint, name, moved)
            elif finger == "thumb" and joint == 13:  # CMC abduction lifts the thumb off the palm
                assert moved @ rest.normal > 0.5 * np.linalg.norm(moved), (joint, name, moved)
            elif finger != "thumb":
                assert moved @ rest.across > 0.8 * np.linalg.norm(moved), (joint, name, moved)


def test_angles_round_trip(hand):
    rng = np.random.default_rng(1)
    pose = rng.normal(scale=0.4, size=(5, 16, 3))
    back = angles_to_pose(pose_to_angles(pose, hand), hand)
    assert back.shape == pose.shape
    from scipy.spatial.transform import Rotation

    a = Rotation.from_rotvec(pose.reshape(-1, 3)).as_matrix()
    b = Rotation.from_rotvec(back.reshape(-1, 3)).as_matrix()
    assert np.allclose(a, b, atol=1e-9)


# ---------------------------------------------------------------------------------------------
# the presets, by geometry
# ---------------------------------------------------------------------------------------------


def test_the_common_presets_exist():
    assert REQUIRED <= set(POSE_PRESETS)


def test_flat_is_straight(posed):
    p = posed["flat"]
    for finger in CHAINS:
        assert max(p.bends(finger)[1:]) < 3, finger
        assert p.tip_to_palm(finger) > FAR, finger


def test_fist(posed):
    p = posed["fist"]
    for finger in FINGERS:
        mcp, pip, dip = p.bends(finger)
        assert p.tip_to_palm(finger) < NEAR, (finger, p.tip_to_palm(finger))
        assert pip > 60 and mcp > 60 and dip > 30, (finger, mcp, pip, dip)
    # the thumb lies across the front of the curled index and middle finger, not out to the side
    front = max(p.height(p.j[i]) for i in (2, 3, 5, 6))  # their PIP and DIP joints
    thumb = p.tip("thumb")
    assert p.height(thumb) > front + 0.01
    lateral = (thumb - p.centre) @ p.across
    assert (p.j[4] - p.centre) @ p.across - 0.015 < lateral < (p.j[1] - p.centre) @ p.across + 0.01
    assert p.tip_to_palm("thumb") < 0.065


def test_point(posed):
    p = posed["point"]
    assert p.tip_to_palm("index") > 0.1
    assert max(p.bends("index")) < 15, p.bends("index")
    for finger in ("middle", "ring", "pinky"):
        assert p.tip_to_palm(finger) < NEAR, finger
        assert p.bends(finger)[1] > 60, finger
    assert p.height(p.tip("thumb")) > max(p.height(p.j[i]) for i in (5, 6))  # thumb over the middle finger


@pytest.mark.parametrize("name", ["pinch", "ok"])
def test_thumb_tip_touches_index_tip(posed, name):
    p = posed[name]
    assert np.linalg.norm(p.tip("thumb") - p.tip("index")) < 0.015
    assert p.bends("index")[1] > 30  # the index curls to meet the thumb


def test_ok_other_fingers_extended(posed):
    p = posed["ok"]
    for finger in ("middle", "ring", "pinky"):
        assert p.tip_to_palm(finger) > FAR, finger
        assert max(p.bends(finger)[1:]) < 20, (finger, p.bends(finger))


def test_pinch_other_fingers_relaxed(posed):
    p = posed["pinch"]
    for finger in ("middle", "ring", "pinky"):
        assert NEAR < p.tip_to_palm(finger), finger
        assert 20 < p.bends(finger)[1] < 70, finger


def test_thumbs_up(posed):
    p = posed["thumbs-up"]
    for finger in FINGERS:
        assert p.tip_to_palm(finger) < NEAR, finger
    thumb = p.tip("thumb")
    assert p.tip_to_palm("thumb") > FAR
    assert max(p.bends("thumb")[1:]) < 20  # straight
    # the thumb tip stands above every knuckle and fingertip of the fist
    top = max((q - p.centre) @ p.up for q in [*p.j[[1, 4, 7, 10]], *(p.tip(f) for f in FINGERS)])
    assert (thumb - p.centre) @ p.up > top + 0.01
    assert _angle(thumb - p.j[14], p.up) < 40


def test_peace(posed):
    p, flat = posed["peace"], posed["flat"]
    for finger in ("index", "middle"):
        assert p.tip_to_palm(finger) > 0.1 and max(p.bends(finger)) < 15, finger
    for finger in ("ring", "pinky"):
        assert p.tip_to_palm(finger) < NEAR, finger
    spread = _angle(p.j[2] - p.j[1], p.j[5] - p.j[4])
    assert spread > 20 and spread > _angle(flat.j[2] - flat.j[1], flat.j[5] - flat.j[4]) + 10


def test_spread(posed):
    p, flat = posed["spread"], posed["flat"]
    for finger in CHAINS:
        assert p.tip_to_palm(finger) > FAR and max(p.bends(finger)[1:]) < 3, finger
    for a, b in (("index", "middle"), ("middle", "ring"), ("ring", "pinky")):
        ja, jb = CHAINS[a][:2], CHAINS[b][:2]
        gap = _angle(p.j[ja[1]] - p.j[ja[0]], p.j[jb[1]] - p.j[jb[0]])
        assert gap > _angle(flat.j[ja[1]] - flat.j[ja[0]], flat.j[jb[1]] - flat.j[jb[0]]) + 5, (a, b)


def test_relaxed(posed):
    p = posed["relaxed"]
    for finger in FINGERS:
        assert p.tip_to_palm(finger) > 0.06, finger
        assert 10 < p.bends(finger)[1] < 45, finger
    pips = [p.bends(f)[1] for f in FINGERS]
    assert pips == sorted(pips)  # more curl towards the little finger


def test_grasp(posed):
    p = posed["grasp"]
    for finger in FINGERS:
        assert 30 < p.bends(finger)[1] < 80, finger  # wrapped around, not closed
        assert NEAR < p.tip_to_palm(finger) < 0.095, finger
    gap = np.linalg.norm(p.tip("thumb") - p.tip("index"))
    assert 0.015 < gap < 0.05  # an open ring: room for the handle
    assert p.height(p.tip("thumb")) > 0.04  # the thumb is opposed, on the palm side


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_no_deep_penetration(hand, posed, name):
    """No fingertip sinks deep into the palm and the thumb does not sink into a finger."""
    p = posed[name]
    segment_of = hand.skin_weights.numpy().argmax(1)
    normals = _vertex_normals(p.v, hand.faces.numpy())
    for finger in FINGERS:
        outer = list(CHAINS[finger][1:3])  # middle and distal phalanges
        assert _depth_inside(p.v, normals, segment_of, outer, [0]) < 0.005, finger
    assert _depth_inside(p.v, normals, segment_of, [15], [0]) < 0.005
    assert _depth_inside(p.v, normals, segment_of, [15], list(range(1, 13))) < 0.005
    assert _depth_inside(p.v, normals, segment_of, list(range(1, 13)), [15]) < 0.005


# ---------------------------------------------------------------------------------------------
# joint limits and clamp_pose
# ---------------------------------------------------------------------------------------------


def test_limits_table():
    lim = limits_array()
    assert lim.shape == (16, 3, 2) and set(JOINT_LIMITS) >= {"wrist", "thumb1", "index2"}
    assert np.all(lim[1:, :, 0] < lim[1:, :, 1]) and np.isfinite(lim[1:]).all()
    assert np.all(np.isinf(lim[0]))  # the wrist is free
    deg = np.degrees(lim)
    for finger in FINGERS:
        mcp, pip, dip = (JOINT_LIMITS[f"{finger}{k}"] for k in (1, 2, 3))
        assert math.degrees(mcp["flex"][1]) == pytest.approx(90) and math.degrees(mcp["flex"][0]) == pytest.approx(-30)
        assert pip["flex"][0] == 0 and dip["flex"][0] == 0  # no backward bending
    assert deg[2, 0, 1] == pytest.approx(110) and deg[3, 0, 1] == pytest.approx(80)
    assert set(ANGLE_NAMES) == {"flex", "abd", "twist"}


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_presets_within_limits_and_clamp_keeps_them(hand, name):
    pose = load_pose(name)
    assert pose_within_limits(pose, hand, tol=0.0).all(), name
    assert np.array_equal(clamp_pose(pose, hand), pose)


def test_clamp_pulls_joints_back(hand):
    ang = np.zeros((16, 3))
    ang[0] = (0.3, -1.2, 2.0)  # the wrist is free
    ang[2, 0] = math.radians(-40)  # index PIP bent backwards
    ang[4, 0] = math.radians(150)  # middle MCP over-flexed
    ang[7, 1] = math.radians(-60)  # pinky spread too far
    ang[15, 0] = math.radians(120)  # thumb IP over-flexed
    ang[10, 0] = math.radians(45)  # ring MCP fine
    pose = angles_to_pose(ang, hand)
    assert not pose_within_limits(pose, hand).all()
    out = clamp_pose(pose, hand)
    assert pose_within_limits(out, hand, tol=1e-9).all()
    got = np.degrees(pose_to_angles(out, hand))
    assert got[2, 0] == pytest.approx(0, abs=1e-6) and got[4, 0] == pytest.approx(90)
    assert got[7, 1] == pytest.approx(-35) and got[15, 0] == pytest.approx(80)
    untouched = [j for j in range(16) if j not in (2, 4, 7, 15)]
    assert np.array_equal(out[untouched], pose[untouched])
    # geometrically: the index is no longer bent backwards, the middle finger no further than 90 deg
    before, p = Posed(hand, pose), Posed(hand, out)
    assert before.bends("index")[1] > 35 and before.height(before.j[3]) < before.height(before.j[2]) - 0.01
    assert p.bends("index")[1] < 1  # straightened, not bent backwards
    assert before.bends("middle")[0] > 120 and p.bends("middle")[0] < 92
    assert np.array_equal(clamp_pose(out, hand), out)  # idempotent


def test_clamp_random_poses_batched_and_torch(hand):
    rng = np.random.default_rng(0)
    pose = rng.normal(scale=1.0, size=(8, 16, 3))
    out = clamp_pose(pose, hand)
    assert out.shape == pose.shape and pose_within_limits(out, hand, tol=1e-9).all()
    assert np.array_equal(out[:, 0], pose[:, 0])
    t = torch.as_tensor(pose.reshape(8, 48), dtype=torch.float32)
    tout = clamp_pose(t, hand)
    assert isinstance(tout, torch.Tensor) and tout.dtype == torch.float32 and tout.shape == (8, 48)
    assert pose_within_limits(tout.double().numpy(), hand, tol=1e-5).all()
    frames = joint_frames(hand)
    assert np.array_equal(clamp_pose(pose, frames=frames), out)
