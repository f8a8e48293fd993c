"""Synthetic generator -> PALM reader round trip, mask/keypoint consistency, subject shapes and skin,
``palm data check``, rasteriser."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from palm.cli.main import main
from palm.data.palm_dataset import POSE_ABSOLUTE, PalmDataset
from palm.data.synth.shape import SHAPE_FILE, ShapedHand, bone_lengths, read_shape
from palm.data.synth.subjects import sample_subject, skin_albedo
from palm.render.raster import (
    cluster_mesh,
    interpolate,
    project_screen,
    rasterize,
    rasterize_pinhole,
    shadow_visibility,
    vertex_normals,
)

N_SUBJECTS, N_POSES, N_VIEWS, RES = 2, 2, 2, 64


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "tiny"
    rc = main(
        [
            "data",
            "synth",
            "--out",
            str(out),
            "--subjects",
            str(N_SUBJECTS),
            "--poses",
            str(N_POSES),
            "--views",
            str(N_VIEWS),
            "--res",
            str(RES),
            "--seed",
            "3",
            "--quiet",
        ]
    )
    assert rc == 0
    return out


@pytest.fixture(scope="module")
def rig():
    from palm.hand import load_hand

    return load_hand("open")


@pytest.fixture(scope="module")
def hand(rig, tiny):
    """The registered hands of the tiny set: the rig with each subject's flat hand (shape.npz)."""
    return ShapedHand.from_dataset(rig, tiny)


def _repose(hand, sample):
    h = sample.hand
    with torch.no_grad():
        return hand(
            pose=torch.from_numpy(h.pose)[None],
            betas=torch.from_numpy(h.betas)[None],
            transl=torch.from_numpy(h.transl)[None],
        )


def _silhouette(hand, vertices: torch.Tensor, cam) -> np.ndarray:
    sv, sf = hand.sealed_mesh(vertices)
    frags = rasterize_pinhole(
        sv,
        sf,
        torch.as_tensor(cam.K, dtype=torch.float32),
        torch.as_tensor(cam.Rt, dtype=torch.float32),
        cam.height,
        cam.width,
    )
    return frags.mask[0].numpy()


def test_round_trip(tiny: Path):
    meta = json.loads((tiny / "meta.json").read_text())
    assert meta["hand_pose_convention"] == POSE_ABSOLUTE
    assert meta["subjects"] == ["0000", "0001"] and meta["resolution"] == RES and meta["seed"] == 3
    assert set(meta["environments"]["0000"]) == {"000001", "000002"}
    ds = PalmDataset(tiny)
    assert len(ds) == N_SUBJECTS * N_POSES * N_VIEWS
    assert ds.views("0001") == ["MCU_01", "MCU_02"]
    for s in ds:
        assert s.image.shape == (RES, RES, 3) and s.image.dtype == np.float32
        assert s.mask.dtype == bool and 0.03 < s.mask.mean() < 0.9
        fg = s.image[s.mask]
        assert fg.std() > 0.01 and 0.02 < fg.mean() < 0.98  # shaded, neither black nor blown out
        n = s.normal[s.mask]
        np.testing.assert_allclose(np.linalg.norm(n, axis=-1), 1.0, atol=0.02)
        assert not s.normal[~s.mask].any()
        # OpenGL camera axes: visible surfaces mostly face the viewer (+z).
        assert (n[:, 2] > 0).mean() > 0.9
        d = s.depth[s.mask]
        assert d.min() > 0.2 and d.max() < 0.8 and not s.depth[~s.mask].any()
        assert np.array_equal(s.mano_mask, s.mask)
        a = s.albedo[s.mask]
        assert a.min() >= 0.02 and a.max() <= 0.81
        assert s.env_name == meta["environments"][s.subject][f"{s.frame + 1:06d}"]["env"]
        assert s.env_lobes.ndim == 2 and s.env_lobes.shape[1] == 7
        assert s.hand.pose.shape == (16, 3) and s.keypoints_2d.shape == (21, 2) and s.keypoints_3d.shape == (21, 3)
    # Subjects differ in shape and skin.
    a, b = ds.load("0000", 0, "MCU_01"), ds.load("0001", 0, "MCU_01")
    assert np.abs(a.hand.betas - b.hand.betas).max() > 0.05
    assert (tiny / "0000" / "albedo_map.png").is_file() and (tiny / "0000" / "roughness_map.png").is_file()


def test_depth_matches_the_registered_hand(tiny: Path, hand):
    ds = PalmDataset(tiny)
    s = ds.load("0001", 1, "MCU_02")
    out = _repose(hand, s)
    sv, sf = hand.sealed_mesh(out.vertices[0])
    frags = rasterize_pinhole(
        sv,
        sf,
        torch.as_tensor(s.camera.K, dtype=torch.float32),
        torch.as_tensor(s.camera.Rt, dtype=torch.float32),
        RES,
        RES,
    )
    both = s.mask & frags.mask[0].numpy()
    # 16-bit quantisation of 1.8 m: 27.5 micrometres.
    np.testing.assert_allclose(s.depth[both], frags.depth[0].numpy()[both], atol=5e-5)


def test_mask_is_the_silhouette_of_the_registered_hand(tiny: Path, hand):
    ds = PalmDataset(tiny)
    for i, s in enumerate(ds):
        out = _repose(hand, s)
        sil = _silhouette(hand, out.vertices[0], s.camera)
        assert (sil != s.mask).sum() <= 2, (s.subject, s.frame, s.view)
        if i == 0:  # the comparison has teeth: a 5 mm shift of the hand changes the silhouette
            shifted = _silhouette(hand, out.vertices[0] + torch.tensor([0.005, 0.0, 0.0]), s.camera)
            assert (shifted != s.mask).sum() > 10


def test_keypoints_project_onto_2d_keypoints(tiny: Path, hand):
    ds = PalmDataset(tiny)
    for s in ds:
        kp3d = _repose(hand, s).keypoints[0].numpy()
        np.testing.assert_allclose(s.keypoints_3d, kp3d, atol=1e-5)
        err = np.linalg.norm(s.camera.project(kp3d) - s.keypoints_2d, axis=-1)
        assert err.max() < 0.5
        inside = (s.keypoints_2d >= 0).all(-1) & (s.keypoints_2d < RES).all(-1)
        assert inside.mean() > 0.8  # the hand is framed by the camera


def test_check_cli_lists_a_deleted_image(tiny: Path, capsys, tmp_path: Path):
    assert main(["data", "check", str(tiny), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["subjects"] == N_SUBJECTS and report["frames"] == N_SUBJECTS * N_POSES
    assert report["views"] == N_VIEWS and report["images"] == N_SUBJECTS * N_POSES * N_VIEWS
    assert report["missing"] == []
    victim = tiny / "0001" / "images" / "MCU_02" / "000001.png"
    data = victim.read_bytes()
    victim.unlink()
    try:
        assert main(["data", "check", str(tiny), "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["missing"] == ["0001/images/MCU_02/000001.png"]
        assert main(["data", "check", str(tiny), "--json", "--strict"]) == 1
        report = json.loads(capsys.readouterr().out)
        assert report["missing"] == ["0001/images/MCU_02/000001.png"]
        assert report["images"] == N_SUBJECTS * N_POSES * N_VIEWS - 1
    finally:
        victim.write_bytes(data)
    (tmp_path / "empty").mkdir()
    assert main(["data", "check", str(tmp_path / "empty")]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_skin_model_spans_light_to_dark():
    light = skin_albedo(0.03, 0.35, 0.9)
    dark = skin_albedo(1.1, 0.35, 0.9)
    for a in (light, dark):
        assert a[0] > a[1] > a[2] > 0  # skin is red > green > blue
    lum = lambda a: float(a @ np.array([0.2126, 0.7152, 0.0722]))
    assert lum(light) > 0.35 and lum(dark) < 0.06 and lum(light) / lum(dark) > 6
    assert np.all(np.diff(skin_albedo(np.linspace(0.03, 1.1, 8), 0.35)[:, 1]) < 0)  # more melanin, darker
    s1 = sample_subject(np.random.default_rng([0, 1]), 1, 0.5, 10)
    s2 = sample_subject(np.random.default_rng([0, 1]), 1, 0.5, 10)
    assert s1 == s2 and s1.sid == "0001" and len(s1.betas) == 10


# ---------------------------------------------------------------------------------------------
# Subject shapes: proportions beyond the rig's betas, registered consistently
# ---------------------------------------------------------------------------------------------


def test_registered_shape_is_the_rendered_hand(tiny: Path, rig, hand):
    """shape.npz holds the flat hand the images show; poses.npy betas are the rig's closest fit and
    name the subject to ShapedHand; the rig alone (betas only) cannot express the proportions."""
    from palm.config import CanonicalConfig

    canon = CanonicalConfig()
    ds = PalmDataset(tiny)
    for sid in ds.subjects:
        shape = read_shape(tiny / sid / SHAPE_FILE)
        rest = shape["rest_vertices"]
        assert rest.shape == (rig.n_vertices, 3) and rest.dtype == np.float32
        betas = ds.poses(sid).betas
        np.testing.assert_array_equal(shape["betas"], betas[: rig.n_betas])
        np.testing.assert_allclose(shape["rest_joints"], rig.J_regressor.numpy() @ rest, atol=1e-6)
        v, _ = hand.rest(torch.from_numpy(betas)[None])
        np.testing.assert_array_equal(v[0].numpy(), rest)
        rig_v = rig.rest(torch.from_numpy(betas)[None])[0][0].numpy()
        err = np.linalg.norm(rig_v - rest, axis=-1)
        assert 0.5e-3 < err.max() < 0.03, err.max()  # proportions the rig lacks, but the right hand
        assert (np.abs(rest - np.asarray(canon.centre)) < canon.half_side).all()  # inside the canonical cube
        subject = json.loads((tiny / sid / "subject.json").read_text())
        assert subject["shape"] == SHAPE_FILE and len(subject["proportions"]["bone_length"]) == 5


def test_shaped_hand_falls_back_to_the_rig(rig, tiny):
    hand = ShapedHand.from_dataset(rig, tiny)
    assert hand.n_subjects == N_SUBJECTS
    betas = torch.full((1, rig.n_betas), 0.3, requires_grad=True)
    pose = torch.zeros(1, 16, 3)
    mine, theirs = hand(pose, betas), rig(pose, betas)
    torch.testing.assert_close(mine.vertices, theirs.vertices)
    mine.vertices.sum().backward()
    assert betas.grad is not None and betas.grad.abs().sum() > 0  # unknown betas keep their gradient
    left = hand(pose, hand.subject_betas[:1], left=True)
    torch.testing.assert_close(left.vertices[0, :, 0], -hand(pose, hand.subject_betas[:1]).vertices[0, :, 0])


def test_trainer_gives_subjects_their_own_hands(tiny: Path, rig):
    """``palm train`` on a dataset with ``shape.npz`` skins each subject with its own flat hand;
    a dataset without them trains on the plain rig."""
    from palm.train.trainer import subject_hands

    hand = subject_hands(rig, tiny)
    assert isinstance(hand, ShapedHand) and hand.n_subjects == N_SUBJECTS
    betas = torch.from_numpy(PalmDataset(tiny).poses("0001").betas)[None]
    rest = read_shape(tiny / "0001" / SHAPE_FILE)["rest_vertices"]
    np.testing.assert_array_equal(hand.rest(betas)[0][0].numpy(), rest)
    assert subject_hands(rig, tiny / "0001") is rig  # no subject folders with shapes: the rig


def test_a_bad_shape_file_is_refused_by_name(tiny: Path, rig, tmp_path):
    """A subject's ``shape.npz`` with another hand's vertex count, non-finite values, no
    ``rest_vertices`` or no .npz at all: a PalmError naming the file, not a crash in the reshape."""
    import shutil

    from palm.errors import PalmError

    rest = read_shape(tiny / "0001" / SHAPE_FILE)["rest_vertices"]
    bad = {"short": {"rest_vertices": rest[:-1]}, "nan": {"rest_vertices": np.where(rest > 0, np.nan, rest)},
           "key": {"vertices": rest}}
    for name, arrays in [*bad.items(), ("junk", None), ("cut", None)]:
        data = tmp_path / name
        shutil.copytree(tiny, data)
        path = data / "0001" / SHAPE_FILE
        if arrays is None:  # not an archive, or one cut short
            path.write_bytes(b"not a zip file" if name == "junk" else path.read_bytes()[:200])
        else:
            np.savez(path, **arrays)
        with pytest.raises(PalmError, match="shape.npz"):
            ShapedHand.from_dataset(rig, data)


def test_subjects_vary_in_proportions_not_only_size(rig):
    """Finger-to-palm and finger-to-finger ratios vary across subjects (the rig's betas alone keep
    them fixed), and the flat hands' shape PCA is not one-dimensional."""
    from palm.data.synth.generate import subject_hand

    rests, ratios = [], []
    for i in range(12):
        spec = sample_subject(np.random.default_rng([0, i]), i, 0.5, rig.n_betas)
        _, shaped, _ = subject_hand(rig, spec)
        rest = shaped.subject_rest[0].numpy()
        lengths = bone_lengths(rig, rest)  # (5, 4): wrist->knuckle, three segments
        fingers = lengths[:, 1:].sum(1)
        ratios.append([fingers[1] / fingers[3], fingers[2] / lengths[2, 0], fingers[4] / fingers[2]])
        rests.append(rest.reshape(-1))
    ratios = np.asarray(ratios)
    assert (ratios.std(0) / ratios.mean(0) > 0.02).all(), ratios.std(0) / ratios.mean(0)
    X = np.asarray(rests, np.float64)
    sv = np.linalg.svd(X - X.mean(0), compute_uv=False)
    explained = sv**2 / (sv**2).sum()
    assert explained[0] < 0.9 and explained[1:4].sum() > 0.08, explained[:5]
    # the rig's size direction alone: one component
    base = [
        rig.rest(torch.tensor([[b] + [0.0] * (rig.n_betas - 1)]))[0][0].numpy().reshape(-1) for b in (-1, 0, 0.5, 1)
    ]
    sv0 = np.linalg.svd(np.asarray(base) - np.mean(base, 0), compute_uv=False)
    assert (sv0**2 / (sv0**2).sum())[0] > 0.999


def test_skin_regions(rig):
    """Knuckles and fingertips redder than the rest of the back, a lighter palm, grooves at the
    creases and raised, smoother nails."""
    from palm.data.synth.shading import welded_normals
    from palm.data.synth.subjects import skin_fields

    spec = sample_subject(np.random.default_rng([0, 4]), 4, 0.3, rig.n_betas)
    with torch.no_grad():
        out = rig(torch.zeros(1, 16, 3))
        normals = welded_normals(out.vertices, rig)[0]
    f = skin_fields(out.vertices[0].numpy(), normals.numpy(), out.keypoints[0].numpy(), spec)
    a, r, h = f["albedo"].astype(np.float64), f["roughness"], f["height"]
    back = (f["palm"] < 0.1) & (f["nail"] < 0.05) & (f["crease"] < 0.05) & (f["vein"] < 0.05)
    plain = back & (f["knuckle"] < 0.05) & (f["tip"] < 0.05)
    redness = lambda sel: float(np.mean(a[sel, 0] / a[sel, 1]))
    assert redness(back & (f["knuckle"] > 0.6)) > redness(plain) + 0.02
    assert redness((f["tip"] > 0.6) & (f["nail"] < 0.05)) > redness(plain) + 0.02
    lum = a @ np.array([0.2126, 0.7152, 0.0722])
    assert lum[(f["palm"] > 0.9) & (f["crease"] < 0.05)].mean() > lum[plain].mean()
    assert h[f["crease"] > 0.8].mean() < -1e-4 and h[f["nail"] > 0.9].mean() > 5e-5
    assert r[f["nail"] > 0.9].mean() < r[plain].mean()
    assert np.abs(h).max() < 2e-3


def test_relief_shading_helpers():
    from palm.data.synth.shading import bumped_normals, uv_gradients

    # a 0.2 m x 0.1 m rectangle in the z = 0 plane, mapped onto the unit UV square
    V = torch.tensor([[0.0, 0.0, 0.0], [0.2, 0.0, 0.0], [0.2, 0.1, 0.0], [0.0, 0.1, 0.0]], dtype=torch.float64)
    F = torch.tensor([[0, 1, 2], [0, 2, 3]])
    uv = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]], dtype=torch.float64)
    g = uv_gradients(V, F, uv)
    torch.testing.assert_close(g, torch.tensor([[5.0, 0, 0, 0, 10.0, 0]], dtype=torch.float64).expand(4, 6))
    n = torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64)
    torch.testing.assert_close(bumped_normals(n, g[:1], torch.zeros(1, 2, dtype=torch.float64)), n)
    # height rising along u by 1 mm per 0.2 m (h_u = 1e-3): the normal tilts towards -x by atan(5e-3)
    tilted = bumped_normals(n, g[:1], torch.tensor([[1e-3, 0.0]], dtype=torch.float64))[0]
    assert abs(float(tilted[0]) + 5e-3) < 1e-4 and abs(float(tilted[1])) < 1e-12


def test_fixed_seed_is_deterministic(tmp_path: Path):
    from palm.data.synth.config import SynthConfig
    from palm.data.synth.generate import generate

    cfg = SynthConfig(n_subjects=1, n_poses=1, n_views=1, resolution=32, seed=5)
    generate(tmp_path / "a", cfg)
    generate(tmp_path / "b", cfg)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert any(f.name == SHAPE_FILE for f in files) and any(f.name == "height_map.png" for f in files)
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f


# ---------------------------------------------------------------------------------------------
# The reference rasteriser
# ---------------------------------------------------------------------------------------------


def _sphere(radius: float = 0.1):
    import trimesh

    m = trimesh.creation.icosphere(subdivisions=3, radius=radius)
    return torch.tensor(m.vertices, dtype=torch.float64), torch.tensor(m.faces, dtype=torch.long)


def test_rasteriser_sphere_area_depth_and_chunking():
    V, F = _sphere(0.1)
    K = torch.tensor([[200.0, 0, 64], [0, 200.0, 64], [0, 0, 1]], dtype=torch.float64)
    Rt = torch.eye(4, dtype=torch.float64)
    Rt[2, 3] = 0.5
    frags = rasterize_pinhole(V, F, K, Rt, 128, 128)
    # Silhouette of a sphere at distance 0.5: a disc of radius f r / sqrt(d^2 - r^2) pixels.
    disc = math.pi * (200 * 0.1 / math.sqrt(0.25 - 0.01)) ** 2
    assert abs(frags.mask.sum().item() - disc) / disc < 0.02  # icosphere is slightly inside
    assert abs(frags.depth[0, 64, 64].item() - 0.4) < 1e-3
    small = rasterize(project_screen(V, K, Rt), F, 128, 128, chunk=500)
    assert torch.equal(small.face_id, frags.face_id)
    n = interpolate(vertex_normals(V, F), F, frags)[0, 64, 64]
    assert n[2] < -0.99  # the normal at the centre points back at the camera


def test_shadow_visibility_of_a_sphere_and_clustering():
    V, F = _sphere(0.1)
    n = vertex_normals(V, F)
    vis = shadow_visibility(V, n, V, F, torch.tensor([[0.0, 1.0, 0.0]], dtype=torch.float64))[:, 0]
    top, bottom = V[:, 1] > 0.02, V[:, 1] < -0.02
    assert vis[top].min() == 1 and vis[bottom].max() == 0
    cv, cf = cluster_mesh(V, F, 0.02)
    assert cv.shape[0] < V.shape[0] and cf.shape[0] < F.shape[0]
    assert (cv.norm(dim=-1) - 0.1).abs().max() < 0.02


def test_synth_refuses_to_replace_a_folder_that_is_not_a_dataset(tmp_path: Path, capsys):
    precious = tmp_path / "documents"
    precious.mkdir()
    (precious / "thesis.txt").write_text("keep me")
    rc = main(
        [
            "data",
            "synth",
            "--out",
            str(precious),
            "--subjects",
            "1",
            "--poses",
            "1",
            "--views",
            "1",
            "--res",
            "32",
            "--quiet",
        ]
    )
    assert rc == 2
    assert "not a synthetic dataset" in capsys.readouterr().err
    assert (precious / "thesis.txt").read_text() == "keep me"
    assert main(["data", "synth", "--out", str(tmp_path / "x"), "--views", "9"]) == 2
