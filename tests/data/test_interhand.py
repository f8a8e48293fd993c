"""InterHand2.6M reader on a tiny fixture written in the released layout, and the evaluation table."""

from __future__ import annotations

import json
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

from palm.data.interhand import EVAL_SEQUENCES, IH_TO_MEDIAPIPE, InterHandDataset, eval_sequence
from palm.errors import PalmError

CAPTURE, SEQ, CAM = 0, "ROM03_RT_No_Occlusion", "400262"
FRAMES = (12966, 13080)
H, W = 48, 64


def _rotation(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, 0, -s], [0, 1, 0], [s, 0, c]])


@pytest.fixture()
def interhand(tmp_path: Path) -> dict:
    rng = np.random.default_rng(1)
    root = tmp_path / "InterHand2.6M"
    ann = root / "annotations" / "test"
    ann.mkdir(parents=True)
    camrot = _rotation(0.3)
    campos = np.array([100.0, -50.0, -900.0])  # mm, world
    camera = {
        str(CAPTURE): {
            "campos": {CAM: campos.tolist()},
            "camrot": {CAM: camrot.tolist()},
            "focal": {CAM: [80.0, 81.0]},
            "princpt": {CAM: [W / 2, H / 2]},
        }
    }
    joints, mano, images = {str(CAPTURE): {}}, {str(CAPTURE): {}}, []
    world = {}
    for k, frame in enumerate(FRAMES):
        wc = rng.normal(scale=40.0, size=(42, 3))  # mm around the world origin
        valid = np.ones(42)
        valid[5] = 0
        world[frame] = wc
        joints[str(CAPTURE)][str(frame)] = {
            "world_coord": wc.tolist(),
            "joint_valid": valid.tolist(),
            "hand_type": "right",
            "hand_type_valid": 1,
        }
        mano[str(CAPTURE)][str(frame)] = {
            "right": {
                "pose": rng.normal(scale=0.1, size=48).tolist(),
                "shape": rng.normal(size=10).tolist(),
                "trans": rng.normal(scale=0.01, size=3).tolist(),
            },
            "left": None,
        }
        rel = f"Capture{CAPTURE}/{SEQ}/cam{CAM}/image{frame}.jpg"
        images.append(
            {
                "id": k,
                "file_name": rel,
                "width": W,
                "height": H,
                "capture": CAPTURE,
                "camera": CAM,
                "frame_idx": frame,
                "seq_name": SEQ,
                "subject": 0,
            }
        )
        path = root / "images" / "test" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        iio.imwrite(path, rng.integers(0, 256, (H, W, 3), dtype=np.uint8), extension=".jpg")
    for kind, data in (
        ("camera", camera),
        ("joint_3d", joints),
        ("MANO_NeuralAnnot", mano),
        ("data", {"images": images, "annotations": []}),
    ):
        (ann / f"InterHand2.6M_test_{kind}.json").write_text(json.dumps(data))
    return {"root": root, "camrot": camrot, "campos": campos, "world": world, "mano": mano}


def test_eval_table_matches_the_supplementary():
    assert len(EVAL_SEQUENCES) == 12
    assert len({s.name for s in EVAL_SEQUENCES}) == 12
    first = eval_sequence("c0_ROM03_RT_No_Occlusion_400262")
    assert first.image_ids[0] == 12966 and first.image_ids[-1] == 15132 and len(first.image_ids) == 20
    assert eval_sequence("c0_ROM04_RT_Occlusion_400418").image_ids[-1] == 18544
    assert eval_sequence("c0_ROM05_RT_Wrist_ROM_400488").image_ids[-1] == 20039
    assert eval_sequence("c1_ROM03_RT_No_Occlusion_400486").image_ids[-1] == 23812
    assert eval_sequence("c1_ROM04_RT_Occlusion_400266").image_ids[-1] == 18266
    assert eval_sequence("c1_ROM05_RT_Wrist_ROM_400314").image_ids[-1] == 24460
    with pytest.raises(PalmError, match="unknown InterHand2.6M evaluation sequence"):
        eval_sequence("c2_nope_1")


def test_joint_reordering_is_a_permutation_with_wrist_first():
    assert sorted(IH_TO_MEDIAPIPE) == list(range(21))
    assert IH_TO_MEDIAPIPE[0] == 20  # wrist is last in InterHand2.6M
    assert IH_TO_MEDIAPIPE[4] == 0 and IH_TO_MEDIAPIPE[8] == 4  # thumb tip, index tip


def test_sample_camera_keypoints_and_mano(interhand):
    mean = np.full((15, 3), 0.05, np.float32)
    ds = InterHandDataset(interhand["root"], "test", pose_mean=mean)
    assert ds.index() == [(CAPTURE, SEQ, CAM, f) for f in FRAMES]
    s = ds.load(CAPTURE, SEQ, CAM, FRAMES[1])
    assert s.image.shape == (H, W, 3) and s.mask is None
    assert s.subject == f"c{CAPTURE}_{SEQ}" and s.view == CAM and s.frame == FRAMES[1]
    # Camera in metres: Rt maps the camera centre to the origin.
    centre = interhand["campos"] / 1000.0
    np.testing.assert_allclose(s.camera.Rt[:3, :3] @ centre + s.camera.Rt[:3, 3], 0.0, atol=1e-12)
    np.testing.assert_allclose(s.camera.centre, centre, atol=1e-12)
    np.testing.assert_allclose(s.camera.K[[0, 1], [0, 1]], [80.0, 81.0])
    # Keypoints: MediaPipe order, metres; 2D = the official projection of the world joints.
    wc = interhand["world"][FRAMES[1]]
    np.testing.assert_allclose(s.keypoints_3d[0], wc[20] / 1000.0, rtol=1e-6)
    np.testing.assert_allclose(s.keypoints_3d[4], wc[0] / 1000.0, rtol=1e-6)
    cam_mm = (interhand["camrot"] @ (wc[:21] - interhand["campos"]).T).T
    uv = cam_mm[:, :2] / cam_mm[:, 2:] * [80.0, 81.0] + [W / 2, H / 2]
    np.testing.assert_allclose(s.keypoints_2d, uv[list(IH_TO_MEDIAPIPE)], atol=1e-3)
    assert s.meta["keypoints_valid"].sum() == 20 and not s.meta["keypoints_valid"][IH_TO_MEDIAPIPE.index(5)]
    # MANO: mean-relative pose made absolute; shape and translation as stored.
    entry = interhand["mano"][str(CAPTURE)][str(FRAMES[1])]["right"]
    pose = np.asarray(entry["pose"], np.float32).reshape(16, 3)
    np.testing.assert_allclose(s.hand.pose[0], pose[0], atol=1e-7)
    np.testing.assert_allclose(s.hand.pose[1:], pose[1:] + mean, atol=1e-6)
    np.testing.assert_allclose(s.hand.betas, entry["shape"], atol=1e-6)
    np.testing.assert_allclose(s.hand.transl, entry["trans"], atol=1e-7)


def test_missing_and_malformed_files_are_named(interhand):
    root = interhand["root"]
    ds = InterHandDataset(root, "test", pose_mean=np.zeros((15, 3)))
    missing = ds.image_path(CAPTURE, SEQ, CAM, 99999)
    with pytest.raises(PalmError) as err:
        ds.load(CAPTURE, SEQ, CAM, 99999)
    assert str(missing) in str(err.value)
    joints = root / "annotations" / "test" / "InterHand2.6M_test_joint_3d.json"
    joints.write_text("{ not json")
    with pytest.raises(PalmError, match="malformed JSON") as err:
        InterHandDataset(root, "test", pose_mean=np.zeros((15, 3))).load(CAPTURE, SEQ, CAM, FRAMES[0])
    assert str(joints) in str(err.value)
    camera = root / "annotations" / "test" / "InterHand2.6M_test_camera.json"
    camera.write_text(json.dumps({"0": {"campos": {}}}))
    with pytest.raises(PalmError, match="no calibration for capture 0 camera 400262") as err:
        InterHandDataset(root, "test").camera(CAPTURE, CAM, H, W)
    assert str(camera) in str(err.value)
    with pytest.raises(PalmError, match="annotation folder not found"):
        InterHandDataset(root, "train")


def test_eval_samples_need_every_image(interhand):
    ds = InterHandDataset(interhand["root"], "test", pose_mean=np.zeros((15, 3)))
    with pytest.raises(PalmError, match="image not found") as err:
        ds.eval_samples("c0_ROM03_RT_No_Occlusion_400262")
    assert "image13194.jpg" in str(err.value)  # the third id (12966 + 2 * 114) is absent
