"""Evaluation tables and scoring (spec section 11) on a tiny prior and a tiny synthetic set."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from palm.avatar import Avatar
from palm.eval import format_markdown, mean_scores, prior_sample, score_sample, table_json


def _avatar_of(prior, appearance_coeffs=None) -> Avatar:
    z_s, z_a = prior.codes_from_coeffs(None, appearance_coeffs)
    return Avatar(shape_coeffs=torch.zeros(5), appearance_coeffs=torch.zeros(5), shape_code=z_s,
                  appearance_code=z_a, light=prior.model.light.detach().clone(), pose=np.zeros((16, 3), np.float32),
                  betas=np.zeros(prior.model.hand.n_betas, np.float32), transl=np.zeros(3, np.float32),
                  camera={}, prior_hash=prior.content_hash)


def test_mean_scores_skip_missing_values():
    rows = [{"psnr_masked": 20.0, "ssim_masked": 0.5, "lpips_masked": float("nan")},
            {"psnr_masked": 30.0, "ssim_masked": 0.7, "lpips_masked": 0.2}]
    m = mean_scores(rows)
    assert m["psnr_masked"] == 25.0 and m["ssim_masked"] == pytest.approx(0.6) and m["lpips_masked"] == 0.2
    assert m["n"] == 2
    empty = mean_scores([])
    assert math.isnan(empty["psnr_masked"]) and empty["n"] == 0


def test_markdown_and_json_tables():
    table = {
        "protocol": "synthetic", "preset": "fast", "prior_hash": "abc", "columns": ["input", "seen", "novel_env"],
        "groups": [{"name": "0007", "input": {"psnr_masked": 21.5, "ssim_masked": 0.8, "lpips_masked": None},
                    "seen": {"psnr_masked": 19.25, "ssim_masked": 0.75, "lpips_masked": 0.125, "n": 3},
                    "novel_env": {"psnr_masked": float("nan"), "ssim_masked": float("nan"),
                                  "lpips_masked": float("nan"), "n": 0}}],
        "mean": {"input": {"psnr_masked": 21.5, "ssim_masked": 0.8, "lpips_masked": float("nan"), "n": 1},
                 "seen": {"psnr_masked": 19.25, "ssim_masked": 0.75, "lpips_masked": 0.125, "n": 1},
                 "novel_env": {"psnr_masked": float("nan"), "ssim_masked": float("nan"),
                               "lpips_masked": float("nan"), "n": 0}},
    }
    md = format_markdown(table)
    lines = md.splitlines()
    assert lines[2] == "| sequence | images | PSNR | SSIM | LPIPS |"
    assert "| 0007 | input (1) | 21.50 | 0.8000 | - |" in lines
    assert "| 0007 | seen (3) | 19.25 | 0.7500 | 0.1250 |" in lines
    assert not any("novel_env" in line for line in lines)  # groups without images are left out
    data = table_json(table)
    text = json.dumps(data, allow_nan=False)
    assert json.loads(text)["groups"][0]["novel_env"]["psnr_masked"] is None


def test_score_sample_prefers_the_right_subject(prior):
    target_coeffs = torch.tensor([3.0, -2.5, 0.0, 0.0, 0.0])
    sample = prior_sample(prior, appearance_coeffs=target_coeffs, res=32, pbr=True)
    right = score_sample(prior, _avatar_of(prior, target_coeffs), sample, work_res=None, lpips=False)
    wrong = score_sample(prior, _avatar_of(prior, None), sample, work_res=None, lpips=False)
    assert right["psnr_masked"] > 25.0  # Monte-Carlo noise of the PBR estimator bounds it
    assert wrong["psnr_masked"] < right["psnr_masked"] - 10.0
    assert right["ssim_masked"] > wrong["ssim_masked"]
    # relighting with a dimmer environment changes the score
    dim = prior.model.light.detach().clone()
    dim[:, 4:7] *= 0.3
    relit = score_sample(prior, _avatar_of(prior, target_coeffs), sample, light=dim, work_res=None, lpips=False)
    assert relit["psnr_masked"] < right["psnr_masked"] - 3.0


def test_eval_synthetic_cli_prints_a_table(prior, tmp_path, capsys):
    from palm.cli.main import main
    from palm.data.synth.config import SynthConfig
    from palm.data.synth.generate import generate

    data = tmp_path / "synth"
    generate(data, SynthConfig(n_subjects=1, n_poses=2, n_views=1, resolution=40, supersample=1, texture_size=64))
    out = tmp_path / "eval"
    rc = main(["eval", "synthetic", "--data", str(data), "--prior", str(prior.path), "--steps", "1",
               "--work-res", "32", "--out", str(out), "--json", "--quiet"])
    assert rc == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["protocol"] == "synthetic" and result["prior_hash"] == prior.content_hash
    group = result["groups"][0]
    assert group["name"] == "0000"
    assert group["input"]["psnr_masked"] is not None
    assert group["seen"]["n"] + group["novel_env"]["n"] == 1  # the second frame, seen or relit
    assert len(group["images"]) == 1
    assert (out / "eval.md").read_text().startswith("### synthetic evaluation")
    assert json.loads((out / "eval.json").read_text())["groups"][0]["name"] == "0000"
    assert (out / "avatars" / "0000" / "report.json").is_file()


def test_registered_turns_the_translation_correction_with_the_hand():
    """An avatar whose hand sits at an offset in the hand's own frame: the correction fitted in the
    first frame must put it on the registered hand in a frame with another root rotation too."""
    import dataclasses

    from palm.eval import registered, root_rotation
    from palm.hand import load_hand

    hand = load_hand("open")
    rng = np.random.default_rng(3)
    offset = np.array([0.004, -0.002, 0.003])  # the avatar's hand against the true one, hand frame

    def surface(pose, transl, shift):
        out = hand(torch.as_tensor(pose)[None], None, torch.as_tensor(transl)[None])
        return out.vertices[0].double().numpy() + root_rotation(pose) @ shift

    first, other = _hand_sample(rng, 0), _hand_sample(rng, 1)
    # the paper stage's correction in the first frame: avatar (true surface + R offset) + dt = true surface
    dt = -(root_rotation(first.hand.pose) @ offset)
    avatar = _avatar_of_pose(first.hand.pose, first.hand.transl + dt)
    for s in (first, other):
        reg = registered(s, avatar, first, hand).hand
        true = surface(s.hand.pose, s.hand.transl, np.zeros(3))
        fitted = surface(reg.pose, reg.transl, offset)
        assert np.abs(fitted - true).max() < 1e-5, s.frame
    # the old rule (the first frame's correction added unturned) misses by millimetres
    old = dataclasses.replace(other.hand, transl=other.hand.transl + dt.astype(np.float32))
    assert np.abs(surface(old.pose, old.transl, offset) - surface(other.hand.pose, other.hand.transl, 0 * offset)).max() > 1e-3


def test_registered_keeps_the_avatar_on_the_hand_about_its_own_root_joint():
    """An avatar with the registered hand's surface but its root joint elsewhere (as a proportions
    fit puts it), placed on the hand in the first frame: every other frame must pose it onto the
    registered hand too, which turning the first frame's translation correction alone does not."""
    import dataclasses
    import types

    from palm.eval import registered, root_rotation
    from palm.hand import load_hand
    from palm.hand.lbs import bone_transforms, skin_vertices

    hand = load_hand("open")
    with torch.no_grad():
        rest, joints = (t[0].double().numpy() for t in hand.rest(None))
    weights = hand.skin_weights.double().numpy()
    own = joints.copy()
    own[0] += [0.004, -0.003, 0.002]  # the avatar's root joint, 5 mm from the registered one
    rng = np.random.default_rng(5)

    def posed(pose, transl, skeleton):
        v, _ = skin_vertices(rest, rest, weights, bone_transforms(hand, pose, joints=skeleton))
        return v + np.asarray(transl, np.float64)

    first, other = _hand_sample(rng, 0), _hand_sample(rng, 1)
    r1 = root_rotation(first.hand.pose)
    delta = own[0] - joints[0]
    avatar = _avatar_of_pose(first.hand.pose, first.hand.transl - delta + r1 @ delta)  # on the hand in frame 0
    avatar.extra["mesh"] = types.SimpleNamespace(joints=own.astype(np.float32))
    for s in (first, other):
        reg = registered(s, avatar, first, hand).hand
        true = posed(s.hand.pose, s.hand.transl, joints)
        assert np.abs(posed(reg.pose, reg.transl, own) - true).max() < 1e-5, s.frame
    # turning the translation correction as if both roots were one point misses by millimetres
    rf = root_rotation(other.hand.pose)
    dt = np.asarray(avatar.transl, np.float64) - first.hand.transl
    old = dataclasses.replace(other.hand, transl=other.hand.transl + rf @ r1.T @ dt)
    assert np.abs(posed(old.pose, old.transl, own) - posed(other.hand.pose, other.hand.transl, joints)).max() > 1e-3


def _hand_sample(rng, frame: int):
    """A frame of subject ``s`` with a random registration (the root turned at random, the fingers a little)."""
    from palm.data.types import CameraParams, FrameSample, HandParams

    pose = np.zeros((16, 3), np.float32)
    pose[0] = rng.normal(0, 1.2, 3)
    pose[1:] = rng.normal(0, 0.2, (15, 3))
    cam = CameraParams(np.eye(3), np.eye(4), 8, 8)
    return FrameSample("s", frame, "c", np.zeros((8, 8, 3), np.float32), None, cam,
                       HandParams(pose, np.zeros(10, np.float32), rng.normal(0, 0.1, 3).astype(np.float32)))


def _avatar_of_pose(pose, transl) -> Avatar:
    return Avatar(shape_coeffs=torch.zeros(5), appearance_coeffs=torch.zeros(5), shape_code=torch.zeros(4),
                  appearance_code=torch.zeros(4), light=torch.zeros(1, 7), pose=np.asarray(pose, np.float32),
                  betas=np.zeros(10, np.float32), transl=np.asarray(transl, np.float32), camera={}, prior_hash="")
