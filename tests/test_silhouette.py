"""The silhouette fits' pose correction (palm.silhouette.fit_pose) and when the detail stage uses it."""

from __future__ import annotations

import numpy as np
import torch

from palm import detail
from palm.avatar import Avatar
from palm.config import DetailConfig
from palm.hand.lbs import bone_transforms
from palm.silhouette import ArticulatedMesh, PosedMesh, fit_pose


def _silhouette(hand, mesh, pose, transl, camera) -> np.ndarray:
    bones = bone_transforms(hand, pose, None, joints=mesh.joints)
    return detail.render_mesh(mesh, bones, transl, camera, torch.zeros(1, 7), shadows=False)[..., 3] > 0.5


def test_articulated_mesh_poses_as_the_renderers_do(shipped, framed):
    mesh, camera, _ = framed
    pose = np.random.default_rng(0).normal(0, 0.2, (16, 3)).astype(np.float32)
    transl = np.array([0.01, -0.02, 0.03], np.float32)
    bones = bone_transforms(shipped.model.hand, pose, None, joints=mesh.joints)
    expected = PosedMesh(mesh, bones, transl, camera.K, camera.Rt).world()
    got = ArticulatedMesh(mesh, pose, transl, camera.K, camera.Rt).world()
    assert torch.allclose(got, expected, atol=1e-6)


def test_fit_pose_turns_a_finger_back_towards_its_mask(shipped, framed):
    hand = shipped.model.hand
    mesh, camera, axes = framed
    pose, transl = np.zeros((16, 3), np.float32), np.zeros(3, np.float32)
    true = pose.copy()
    true[1] = 0.35 * axes[2]  # the index finger's first joint turned in the image plane
    mask = _silhouette(hand, mesh, true, transl, camera)
    start = _silhouette(hand, mesh, pose, transl, camera)
    assert (mask ^ start).sum() > 30
    fitted, fitted_t = fit_pose(mesh, pose, transl, camera.K, camera.Rt, mask, DetailConfig())
    assert np.isfinite(fitted).all() and np.isfinite(fitted_t).all()
    assert np.array_equal(fitted[0], pose[0])  # the root's rotation stays
    assert np.abs(fitted_t - transl).max() < 2e-3
    assert (mask ^ _silhouette(hand, mesh, fitted, fitted_t, camera)).sum() < 0.5 * (mask ^ start).sum()
    # the turn went to the index finger's joints, about the viewing axis; the other fingers stay
    index = fitted[1:4] @ axes[2]
    assert 0.2 < index.sum() < 0.6 and np.abs(fitted[4:]).max() < 0.05
    # and not towards the camera: what the turns have besides the viewing axis is small (the depth guard)
    assert (np.linalg.norm(fitted[1:4], axis=1) - np.abs(index)).max() < 0.03
    # started on the truth, the fit stays near it
    again, again_t = fit_pose(mesh, true, transl, camera.K, camera.Rt, mask, DetailConfig())
    assert np.abs(again - true).max() < 0.05 and np.abs(again_t).max() < 2e-3


def test_a_step_gone_non_finite_is_undone_and_ends_the_fit(framed):
    mesh, camera, _ = framed
    pose = np.full((16, 3), 0.05, np.float32)
    transl = np.array([0.0, 0.01, 0.0], np.float32)
    mask = np.zeros((96, 96), bool)
    mask[30:60, 20:70] = True
    fitted, moved = fit_pose(mesh, pose, transl, camera.K, camera.Rt, mask,
                             DetailConfig(pose_steps=3, pose_lr=(float("nan"), 2e-4)))
    assert np.array_equal(fitted, pose) and np.array_equal(moved, transl)


def _avatar(prior, pose):
    z_s, z_a = prior.codes_from_coeffs(torch.zeros(5), torch.zeros(5))
    return Avatar(shape_coeffs=torch.zeros(5), appearance_coeffs=torch.zeros(5), shape_code=z_s, appearance_code=z_a,
                  light=torch.zeros(1, 7), pose=pose, betas=np.zeros(prior.model.hand.n_betas, np.float32),
                  transl=np.zeros(3, np.float32), camera={}, prior_hash=prior.content_hash)


def test_the_detail_stage_fits_the_pose_only_when_it_came_from_2d_landmarks(prior, framed):
    hand = prior.model.hand
    mesh, camera, axes = framed
    true = np.zeros((16, 3), np.float32)
    true[1] = 0.35 * axes[2]
    mask = _silhouette(hand, mesh, true, np.zeros(3, np.float32), camera)
    photo = np.repeat(np.where(mask[..., None], 0.6, 1.0), 3, axis=2).astype(np.float32)
    cfg = DetailConfig(res=96, mesh_res=40, subdivide=0, proportion_steps=0, pose_steps=20, thickness_steps=2,
                       outline_steps=2, relief_steps=2, albedo_steps=2)
    keypoints = np.zeros((21, 2), np.float32)
    stages = {}
    for source in ("2d", "3d"):
        seen: set[str] = set()
        kwargs = {"keypoints": keypoints} if source == "2d" else {"keypoints_3d": np.zeros((21, 3), np.float32)}
        _, _, info = detail.refine_avatar(prior, _avatar(prior, np.zeros((16, 3), np.float32)), photo, mask, camera,
                                          cfg, emit=lambda e, seen=seen: seen.add(getattr(e, "message", "")), **kwargs)
        stages[source] = (seen, info)
    seen, info = stages["2d"]
    assert "detail: pose" in seen and np.abs(np.asarray(info["pose"])[1:4]).max() > 0.01
    seen, info = stages["3d"]
    assert "detail: pose" not in seen and "pose" not in info  # a registration is kept as it is
