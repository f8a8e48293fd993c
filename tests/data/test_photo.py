"""Single-photo preprocessing on a real photo: landmarks, hand fit, mask, CLI contract.

``handSrc.jpg`` (OpenCV docs, 640x480) shows a **left** hand, palm towards the camera, fingers
pointing right and the thumb at the top: seen palm-on with the thumb above the fingers pointing
right, only a left hand fits (a right hand would show its back). The wrist is just outside the
left border.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from palm.assets import SHARED
from palm.cli import main as cli
from palm.data.photo.detect import detect_hand, ssd_anchors, weighted_nms
from palm.data.photo.fit import keypoint_rig
from palm.data.photo.pipeline import preprocess_photo
from palm.data.photo.segment import silhouette_mask
from palm.errors import PalmError
from palm.imageio import read_image

PHOTO = str(SHARED / "data/photos/opencv_doc/handSrc.jpg")
TIPS = (4, 8, 12, 16, 20)
MCPS = (2, 5, 9, 13, 17)
REPROJECTION_BOUND_PX = 10.0  # measured 8.4 px on this 640x480 photo (6.7 px when the fit curled the fingers
# into claws to match the landmarks: see test_fit_keeps_fingers_flat_and_in_range_when_the_photo_shows_short_fingers)


def _palm(monkeypatch, argv, capsys):
    rc = cli.main(argv)
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("photo")
    mp = pytest.MonkeyPatch()
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = cli.main(["photo", PHOTO, "--out", str(out), "--json"])
    mp.undo()
    return rc, buf.getvalue(), out


def test_cli_prints_one_json_object_and_writes_files(cli_run):
    rc, stdout, out = cli_run
    assert rc == 0
    lines = [ln for ln in stdout.splitlines() if ln.strip()]
    assert len(lines) == 1
    data = json.loads(lines[0])
    for key in ("hand_found", "handedness", "keypoints_2d", "reprojection_px", "mask_fraction"):
        assert key in data
    assert data["hand_found"] is True
    overlay = np.asarray(Image.open(out / "overlay.png"))
    mask = np.asarray(Image.open(out / "mask.png"))
    assert overlay.shape == (480, 640, 3) and mask.shape == (480, 640)
    assert set(np.unique(mask)) <= {0, 255}
    assert abs((mask > 0).mean() - data["mask_fraction"]) < 1e-3


def test_landmark_layout_is_plausible(cli_run):
    data = json.loads(cli_run[1])
    kp = np.asarray(data["keypoints_2d"])
    assert kp.shape == (21, 2) and np.isfinite(kp).all()
    wrist = kp[0]
    # every fingertip is farther from the wrist than its MCP
    for tip, mcp in zip(TIPS, MCPS):
        assert np.linalg.norm(kp[tip] - wrist) > 1.2 * np.linalg.norm(kp[mcp] - wrist)
    # this photo: fingers point right, wrist left of every MCP, thumb on top, pinky at the bottom
    assert all(kp[t, 0] > kp[m, 0] for t, m in zip(TIPS[1:], MCPS[1:]))
    assert wrist[0] < kp[list(MCPS), 0].min()
    assert np.all(np.diff(kp[list(TIPS), 1]) > 20)  # five distinct fingers, top to bottom
    # tips land on the hand: inside the photo, far apart from each other
    tips = kp[list(TIPS)]
    assert np.all((tips >= 0) & (tips < [640, 480]))
    d = np.linalg.norm(tips[:, None] - tips[None], axis=-1)
    assert d[np.triu_indices(5, 1)].min() > 40


def test_handedness_fit_and_mask(cli_run):
    _rc, stdout, out = cli_run
    data = json.loads(stdout)
    assert data["handedness"] == "left" and data["left"] is True
    assert data["reprojection_px"] < REPROJECTION_BOUND_PX
    assert 0.25 < data["mask_fraction"] < 0.6
    mask = np.asarray(Image.open(out / "mask.png")) > 0
    kp = np.round(np.asarray(data["keypoints_2d"]) - 0.5).astype(int)
    inside = (kp[:, 0] >= 0) & (kp[:, 0] < 640) & (kp[:, 1] >= 0) & (kp[:, 1] < 480)
    assert mask[kp[inside, 1], kp[inside, 0]].mean() > 0.9  # landmarks lie on the mask
    assert not mask[:40, 560:].any()  # background corner (top right) is not hand


def test_user_hand_params_and_mask_skip_detection(cli_run):
    _, stdout, out = cli_run
    data = json.loads(stdout)
    params = json.loads((out / "hand_params.json").read_text())
    assert params["format"] == "palm-hand-params-v1" and np.asarray(params["pose"]).shape == (16, 3)
    # the same parameters in MANO's split layout, given back with the user's mask
    split = dict(params, global_orient=params["pose"][0], hand_pose=np.asarray(params["pose"][1:]).ravel().tolist())
    del split["pose"]
    (out / "split.json").write_text(json.dumps(split))
    res = preprocess_photo(PHOTO, mask_path=out / "mask.png", hand_params_path=out / "split.json")
    assert res.detections == [] and res.mask_source == "user" and res.left
    assert res.mask_fraction == pytest.approx(data["mask_fraction"], abs=1e-3)
    # the fitted keypoints reproduce the landmarks within the fit's reprojection error
    kp = res.to_photo(res.fit.keypoints_2d)
    err = np.linalg.norm(kp - np.asarray(data["keypoints_2d"]), axis=1).mean()
    assert err == pytest.approx(data["reprojection_px"], abs=0.05)


def test_no_hand_is_an_error(tmp_path, monkeypatch, capsys):
    y, x = np.mgrid[0:240, 0:320]
    gradient = np.stack([x / 319, y / 239, 0.5 + 0 * x], -1).astype(np.float32)
    with pytest.raises(PalmError, match="no hand found"):
        detect_hand(gradient, path="gradient.png")
    path = tmp_path / "gradient.png"
    Image.fromarray((gradient * 255).astype(np.uint8)).save(path)
    rc, stdout, stderr = _palm(monkeypatch, ["photo", str(path), "--out", str(tmp_path / "o"), "--json"], capsys)
    assert rc == 2 and stdout == ""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "no hand found" in lines[0]


def test_anchors_and_nms():
    anchors = ssd_anchors()
    assert anchors.shape == (2016, 2)
    assert np.allclose(anchors[0], [0.5 / 24, 0.5 / 24]) and np.allclose(anchors[-1], [11.5 / 12, 11.5 / 12])
    boxes = np.array([[0.5, 0.5, 0.2, 0.2], [0.51, 0.5, 0.2, 0.2], [0.1, 0.1, 0.05, 0.05]])
    kps = np.zeros((3, 7, 2))
    kps[1] += 1.0
    merged = weighted_nms(boxes, kps, np.array([0.9, 0.6, 0.7]))
    assert len(merged) == 2 and merged[0][2] == 0.9 and merged[1][2] == 0.7
    assert merged[0][0][0] == pytest.approx((0.5 * 0.9 + 0.51 * 0.6) / 1.5)
    assert merged[0][1][0, 0] == pytest.approx(0.6 / 1.5)


def test_silhouette_mask_fills_triangles():
    pts = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    sil = silhouette_mask(pts, np.array([[0, 1, 2], [1, 3, 2]]), 12, 12)
    assert sil[:10, :10].all() and not sil[10:].any() and not sil[:, 10:].any()
    tri = silhouette_mask(pts, np.array([[0, 1, 2]]), 12, 12)
    assert tri.sum() == 55  # pixel centres with x + y <= 10 (edges included)


def test_photo_frame_mirroring():
    img = read_image(PHOTO)
    det = detect_hand(img[:, ::-1].copy())[0]
    assert det.handedness == "right"  # the mirror image of a left hand


def test_keypoint_rig_matches_hand_model():
    import torch

    from palm.hand import load_hand

    hand = load_hand("open")
    rig = keypoint_rig(hand)
    g = torch.Generator().manual_seed(0)
    pose = 0.3 * torch.randn(16, 3, generator=g, dtype=torch.float64)
    betas = torch.randn(hand.n_betas, generator=g, dtype=torch.float64)
    transl = torch.tensor([0.01, -0.02, 0.3], dtype=torch.float64)
    full = hand(pose=pose[None].float(), betas=betas[None].float(), transl=transl[None].float()).keypoints[0]
    assert torch.allclose(rig(pose, betas, transl).float(), full, atol=1e-5)


def test_fit_keeps_fingers_flat_and_in_range_when_the_photo_shows_short_fingers():
    """2D landmarks cannot tell a finger bent towards the camera from one bent away, and the rig's
    shape space barely changes finger length: fingers that are shorter on the photo than on the
    rig used to be fitted as claws (PIP/DIP flexed 30-45 degrees on the flat hands of handSrc and
    handDst; MediaPipe's world landmarks, which start the fit, show them curled). A flat hand, palm
    to the camera, every finger 20 % shorter than the rig's, with world landmarks of the same hand
    curled by 45 degrees at PIP and DIP, must fit within the anatomical joint limits and with the
    finger joints near flat."""
    import math

    import torch

    from palm.data.photo.fit import WORLD_TO_CAMERA, default_camera, fit_hand, project
    from palm.hand import load_hand
    from palm.hand.poses import joint_frames, pose_to_angles, pose_within_limits

    hand = load_hand("open")
    rig = keypoint_rig(hand)
    pose = torch.zeros(16, 3, dtype=torch.float64)
    pose[0, 0] = -math.pi / 2  # palm (-y) turned to +z: towards the camera, which looks down -z
    betas, transl = torch.zeros(hand.n_betas, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)
    k3 = rig(pose, betas, transl)
    k3 = k3 - k3.mean(0) + torch.tensor([0.0, 0.0, -0.45], dtype=torch.float64)
    K = default_camera(640, 480)
    kp = project(k3.numpy(), K, WORLD_TO_CAMERA)
    for mcp in (5, 9, 13, 17):  # shorten every finger towards its knuckle
        kp[mcp + 1 : mcp + 4] = kp[mcp] + 0.8 * (kp[mcp + 1 : mcp + 4] - kp[mcp])
    curled, frames = pose.clone(), joint_frames(hand)
    for j in (2, 3, 5, 6, 8, 9, 11, 12):  # PIP and DIP of the four fingers, about their flexion axes
        curled[j] = torch.from_numpy(frames[j][:, 0] * math.radians(45))
    world = rig(curled, betas, transl).numpy()
    world = (world - world[0]) @ WORLD_TO_CAMERA[:3, :3].T  # camera axes, wrist-relative, as MediaPipe gives them
    fit = fit_hand(kp, (640, 480), hand, world_keypoints=world)
    assert pose_within_limits(fit.pose, hand, tol=0.03)[1:].all()
    flex = np.degrees(pose_to_angles(fit.pose, hand)[[2, 3, 5, 6, 8, 9, 11, 12], 0])
    assert np.abs(flex).mean() < 15.0, flex
    assert fit.reprojection_px < 12.0


def _two_fingers(skin, background, seed=0):
    """A palm with two fingers and a 14 px gap between them, on ``background``, with JPEG-like noise."""
    rng = np.random.default_rng(seed)
    h, w = 200, 200
    hand = np.zeros((h, w), bool)
    hand[110:190, 40:160] = True  # palm
    hand[20:110, 50:90] = True  # finger
    hand[20:110, 104:144] = True  # finger; the gap is columns 90-103
    image = np.where(hand[..., None], skin, background) + rng.normal(0, 0.02, (h, w, 3))
    return np.clip(image, 0, 1).astype(np.float32), hand


def test_colour_refinement_carves_background_between_fingers_and_keeps_the_hand():
    from palm.data.photo.segment import refine_by_colour

    image, hand = _two_fingers(np.array([0.80, 0.60, 0.50]), np.array([0.22, 0.24, 0.27]))
    closed = hand.copy()
    closed[100:110, 90:104] = True  # the saliency mask closed the gap where it meets the palm
    soft = closed | (np.abs(np.arange(200)[None] - 40) <= 2) & (np.arange(200)[:, None] > 112)  # a 2 px rim
    out = refine_by_colour(image, soft, size=100.0)
    assert out.dtype == bool and not (out & ~soft).any()  # carves only
    assert out[100:110, 92:102].sum() == 0  # the wedge between the fingers is background again
    assert out[hand].mean() > 0.995  # the hand stays
    assert out[115:185, 38:43].mean() > 0.9  # a thin rim along the outline is not carved


def test_colour_refinement_carves_nothing_on_a_skin_coloured_background():
    from palm.data.photo.segment import refine_by_colour

    image, hand = _two_fingers(np.array([0.80, 0.60, 0.50]), np.array([0.80, 0.60, 0.50]))
    closed = hand.copy()
    closed[100:110, 90:104] = True
    assert (refine_by_colour(image, closed, size=100.0) == closed).all()
