"""The PALM-layout reader and checker on a tiny dataset written here in the release's layout."""

from __future__ import annotations

import re
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

from palm.data.check import check_dataset, verify_dataset
from palm.data.palm_dataset import (
    DEPTH_MAX_M,
    PalmDataset,
    frame_index,
    frame_name,
    read_cameras,
    read_poses,
)
from palm.errors import PalmError

H, W = 24, 32
CAMS = ("MCU_01", "MCU_02")
N_FRAMES = 2


def _camera(i: int) -> dict:
    K = np.array([[40.0 + i, 0, W / 2], [0, 41.0, H / 2], [0, 0, 1]])
    Rt = np.eye(4)
    Rt[:3, 3] = [0.01 * i, 0.0, 0.6]
    return {"K": K, "Rt": Rt, "height": H, "width": W}


def _write_release_subject(root: Path, sid: str, rng: np.random.Generator) -> dict:
    """One subject as the PALM release lays it out (no meta.json: mean-relative poses)."""
    sdir = root / sid
    sdir.mkdir(parents=True)
    np.save(sdir / "cameras.npy", {"cameras": {c: _camera(i) for i, c in enumerate(CAMS)}})
    poses = {
        "betas": rng.normal(size=(1, 10)).astype(np.float32),
        "hand_pose": rng.normal(scale=0.2, size=(N_FRAMES, 45)).astype(np.float32),
        "global_orient": rng.normal(size=(N_FRAMES, 3)).astype(np.float32),
        "transl": rng.normal(scale=0.05, size=(N_FRAMES, 3)).astype(np.float32),
    }
    np.save(sdir / "poses.npy", poses)
    for cam in CAMS:
        for f in range(N_FRAMES):
            name = f"{frame_name(f)}.png"
            for folder in ("images", "masks", "normals", "depth"):
                (sdir / folder / cam).mkdir(parents=True, exist_ok=True)
            img = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
            iio.imwrite(sdir / "images" / cam / name, img)
            mask = np.zeros((H, W), np.uint8)
            mask[4:20, 6:26] = 255
            iio.imwrite(sdir / "masks" / cam / name, mask)
            normals = np.zeros((H, W, 3), np.uint8)
            normals[mask > 0] = [128, 128, 255]  # n = (0, 0, 1): facing the viewer (OpenGL axes)
            iio.imwrite(sdir / "normals" / cam / name, normals)
            depth = np.zeros((H, W), np.uint16)
            depth[mask > 0] = 20000
            iio.imwrite(sdir / "depth" / cam / name, depth)
    return poses


@pytest.fixture()
def release(tmp_path: Path) -> tuple[Path, dict]:
    rng = np.random.default_rng(0)
    root = tmp_path / "palm"
    poses = {sid: _write_release_subject(root, sid, rng) for sid in ("0000", "0001")}
    return root, poses


def test_frame_names_are_one_based_six_digits():
    assert frame_name(0) == "000001"
    assert frame_index("000060") == 59
    assert frame_index(frame_name(41)) == 41


def test_reader_returns_typed_samples_with_absolute_poses(release):
    root, poses = release
    mean = np.linspace(-0.3, 0.3, 45, dtype=np.float32).reshape(15, 3)
    ds = PalmDataset(root, pose_mean=mean)
    assert ds.subjects == ["0000", "0001"]
    assert len(ds) == 2 * N_FRAMES * len(CAMS)
    s = ds.load("0001", 1, "MCU_02")
    assert s.image.shape == (H, W, 3) and s.image.dtype == np.float32
    assert 0.0 <= s.image.min() and s.image.max() <= 1.0
    raw = iio.imread(root / "0001" / "images" / "MCU_02" / "000002.png")
    np.testing.assert_allclose(s.image, raw / 255.0, atol=1e-6)
    assert s.mask.dtype == bool and s.mask.sum() == 16 * 20
    # Mean-relative hand_pose becomes absolute; global orientation and translation are untouched.
    expected = poses["0001"]["hand_pose"][1].reshape(15, 3) + mean
    np.testing.assert_allclose(s.hand.pose[1:], expected, atol=1e-6)
    np.testing.assert_allclose(s.hand.pose[0], poses["0001"]["global_orient"][1])
    np.testing.assert_allclose(s.hand.transl, poses["0001"]["transl"][1])
    np.testing.assert_allclose(s.hand.betas, poses["0001"]["betas"][0])
    np.testing.assert_allclose(s.camera.K, _camera(1)["K"])
    assert (s.camera.height, s.camera.width) == (H, W)
    # Depth: value / 65535 * 1.8 m; normals decoded to unit vectors, zero where missing.
    np.testing.assert_allclose(s.depth[10, 10], 20000 / 65535 * DEPTH_MAX_M, rtol=1e-6)
    assert s.depth[0, 0] == 0
    np.testing.assert_allclose(np.linalg.norm(s.normal[s.mask], axis=-1), 1.0, atol=1e-5)
    assert s.normal[s.mask][:, 2].min() > 0.99
    assert not s.normal[~s.mask].any()
    assert s.albedo is None and s.keypoints_2d is None and s.mano_mask is None


def test_absolute_convention_from_meta_needs_no_mean(release):
    root, poses = release
    (root / "meta.json").write_text('{"hand_pose_convention": "absolute_flat_hand_mean"}')
    s = PalmDataset(root).load("0000", 0, "MCU_01")
    np.testing.assert_allclose(s.hand.pose[1:].reshape(-1), poses["0000"]["hand_pose"][0])


def test_missing_image_names_the_file(release):
    root, _ = release
    missing = root / "0000" / "images" / "MCU_01" / "000002.png"
    missing.unlink()
    ds = PalmDataset(root, pose_mean=np.zeros((15, 3)))
    with pytest.raises(PalmError) as err:
        ds.load("0000", 1, "MCU_01")
    assert str(missing) in str(err.value)


def test_corrupt_png_names_the_file(release):
    root, _ = release
    bad = root / "0001" / "masks" / "MCU_01" / "000001.png"
    bad.write_bytes(b"not a png at all")
    with pytest.raises(PalmError) as err:
        PalmDataset(root, pose_mean=np.zeros((15, 3))).load("0001", 0, "MCU_01")
    assert str(bad) in str(err.value)


def test_malformed_cameras_and_poses_name_the_file(tmp_path: Path, release):
    root, _ = release
    cams = root / "0000" / "cameras.npy"
    np.save(cams, {"cameras": {"MCU_01": {"K": np.eye(2), "Rt": np.eye(4), "height": H, "width": W}}})
    with pytest.raises(PalmError, match="K must be 3x3") as err:
        read_cameras(cams)
    assert str(cams) in str(err.value)
    poses = root / "0001" / "poses.npy"
    np.save(poses, {"betas": np.zeros((1, 10)), "hand_pose": np.zeros((2, 45))})
    with pytest.raises(PalmError, match="global_orient") as err:
        read_poses(poses)
    assert str(poses) in str(err.value)
    garbage = tmp_path / "garbage.npy"
    garbage.write_bytes(b"\x00\x01garbage")
    with pytest.raises(PalmError, match="cannot read numpy file"):
        read_cameras(garbage)


def test_image_size_must_match_calibration(release):
    root, _ = release
    path = root / "0000" / "images" / "MCU_02" / "000001.png"
    iio.imwrite(path, np.zeros((H + 2, W, 3), np.uint8))
    with pytest.raises(PalmError, match="camera MCU_02 says") as err:
        PalmDataset(root, pose_mean=np.zeros((15, 3))).load("0000", 0, "MCU_02")
    assert str(path) in str(err.value)


def test_check_lists_missing_files(release):
    root, _ = release
    report = check_dataset(root)
    assert report["subjects"] == 2 and report["frames"] == 2 * N_FRAMES and report["views"] == 2
    assert report["images"] == 2 * N_FRAMES * 2
    assert report["missing"] == [] and report["errors"] == []
    assert set(report["modalities"]) == {"images", "masks", "normals", "depth"}
    (root / "0001" / "depth" / "MCU_02" / "000002.png").unlink()
    (root / "0000" / "poses.npy").unlink()
    report = check_dataset(root)
    assert report["missing"] == ["0000/poses.npy", "0001/depth/MCU_02/000002.png"]
    assert report["images"] == 2 * N_FRAMES * 2  # frames of 0000 recovered from the image names


def test_check_rejects_a_folder_that_is_not_a_dataset(tmp_path: Path):
    (tmp_path / "random").mkdir()
    (tmp_path / "random" / "notes.txt").write_text("hello")
    with pytest.raises(PalmError, match="not a PALM-layout dataset"):
        check_dataset(tmp_path)
    with pytest.raises(PalmError, match="not found"):
        check_dataset(tmp_path / "nope")
    with pytest.raises(PalmError, match="not a PALM-layout dataset"):
        PalmDataset(tmp_path)


# ---------------------------------------------------------------------------------------------
# The strict check (palm data check --strict; the trainer's pre-flight)
# ---------------------------------------------------------------------------------------------


def test_strict_check_decodes_every_file(release):
    root, _ = release
    assert check_dataset(root)["decoded"] == 0
    report = check_dataset(root, decode=True)
    assert report["missing"] == [] and report["errors"] == []
    assert report["decoded"] == 2 * N_FRAMES * len(CAMS) * 4  # images, masks, normals, depth
    assert verify_dataset(root)["decoded"] == report["decoded"]


@pytest.mark.parametrize(
    "damage, expected",
    [
        (lambda root: (root / "0000" / "images" / "MCU_01" / "000001.png").write_bytes(b""), "empty file (0 bytes)"),
        (
            lambda root: iio.imwrite(
                root / "0001" / "images" / "MCU_02" / "000002.png", np.zeros((H, W + 4, 3), np.uint8)
            ),
            f"image is {W + 4}x{H} but camera MCU_02 says {W}x{H}",
        ),
        (
            lambda root: iio.imwrite(root / "0000" / "masks" / "MCU_02" / "000001.png", np.zeros((H + 1, W), np.uint8)),
            f"image is {W}x{H + 1} but camera MCU_02 says {W}x{H}",
        ),
        (
            lambda root: iio.imwrite(root / "0001" / "depth" / "MCU_01" / "000001.png", np.zeros((H, W), np.uint8)),
            "expected a 16-bit single-channel depth PNG",
        ),
        (
            lambda root: (root / "0000" / "normals" / "MCU_01" / "000002.png").write_bytes(b"\x89PNG broken"),
            "cannot read",
        ),
        (
            lambda root: (root / "meta.json").write_text('{"hand_pose_convention": "relative_to_something"}'),
            "unknown hand_pose_convention 'relative_to_something'",
        ),
    ],
    ids=["zero-bytes", "image-size", "mask-size", "depth-8-bit", "corrupt-normals", "unknown-convention"],
)
def test_strict_check_reports_broken_files(release, capsys, damage, expected):
    from palm.cli.main import main

    root, _ = release
    damage(root)
    report = check_dataset(root, decode=True)
    assert report["missing"] == [] and len(report["errors"]) == 1
    assert expected in report["errors"][0]
    with pytest.raises(PalmError, match=re.escape(expected)) as err:
        verify_dataset(root)
    assert str(err.value).startswith(report["errors"][0].split(": ")[0])
    assert main(["data", "check", str(root), "--strict"]) == 1
    out = capsys.readouterr().out
    assert "incomplete" in out and "complete\n" not in out.replace("incomplete", "")
    assert main(["data", "check", str(root)]) == 0  # without --strict the report is all it gives
    capsys.readouterr()


def test_verify_names_the_first_missing_file(release):
    root, _ = release
    (root / "0001" / "depth" / "MCU_02" / "000002.png").unlink()
    (root / "0000" / "masks" / "MCU_01" / "000001.png").unlink()
    with pytest.raises(PalmError) as err:
        verify_dataset(root)
    msg = str(err.value)
    assert msg.startswith(str(root / "0000" / "masks" / "MCU_01" / "000001.png") + ": file missing from the dataset")
    assert "and 1 more problem(s)" in msg


def test_strict_check_of_chosen_subjects_only(release):
    """A run on a subset checks that subset: a broken subject it leaves out does not stop it."""
    root, _ = release
    (root / "0001" / "images" / "MCU_01" / "000001.png").write_bytes(b"")
    assert verify_dataset(root, subjects=["0000"])["subject_ids"] == ["0000"]
    with pytest.raises(PalmError, match="empty file"):
        verify_dataset(root, subjects=["0000", "0001"])
    with pytest.raises(PalmError, match="no subject '0042' in the dataset"):
        verify_dataset(root, subjects=["0042"])
