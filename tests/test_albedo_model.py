"""The prior's albedo model (palm/albedo_model.py): building, fitting, the file, and its use by the detail stage."""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pytest
import torch

from palm import albedo_model as am
from palm import silhouette
from palm.errors import PalmError


def _two_sided_maps(n: int = 12, res: int = 32, seed: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
    """Albedo maps whose right half ("back") darkens faster than the left ("palm") as the tone darkens."""
    rng = np.random.default_rng(seed)
    back = np.zeros((res, res, 1), np.float32)
    back[:, res // 2:] = 1.0
    maps = []
    for _ in range(n):
        tone = rng.normal()
        log_a = np.log(0.45) + tone * (0.15 + 0.35 * back) + rng.normal(0, 0.02, (res, res, 3))
        maps.append(np.exp(log_a).astype(np.float32))
    return maps, back[..., 0]


def _uv_grid(res: int) -> np.ndarray:
    """(res*res, 2) texel centres in the model's convention (row 0 is v = 1)."""
    ys, xs = np.mgrid[0:res, 0:res]
    return np.stack([(xs.ravel() + 0.5) / res, 1 - (ys.ravel() + 0.5) / res], 1).astype(np.float32)


def test_fitting_the_seen_side_predicts_the_unseen_sides_contrast():
    maps, back = _two_sided_maps()
    model = am.build_albedo_model(maps, res=32, n_components=4)
    assert model.explained_variance_ratio[0] > 0.9  # one tone direction made these maps
    uv = _uv_grid(32)
    is_back = torch.as_tensor(back.ravel() > 0.5)
    true_log = np.log(0.45) + (-1.5) * (0.15 + 0.35 * back.ravel())  # a dark subject: back much darker
    true = torch.as_tensor(np.exp(true_log), dtype=torch.float32)[:, None].expand(-1, 3)
    seen_weight = (~is_back).float()  # only the palm is in the photo
    pred, _ = am.fit_to_mesh(model, uv, true * torch.where(is_back, 5.0, 1.0)[:, None], seen_weight)
    # the back's (corrupted, unseen) values were ignored; its colour comes from the palm's tone
    ratio_pred = float(pred[is_back].mean() / pred[~is_back].mean())
    ratio_true = float(true[is_back].mean() / true[~is_back].mean())
    assert ratio_pred == pytest.approx(ratio_true, rel=0.08)
    assert ratio_true < 0.7
    assert float((pred[is_back].log() - true[is_back].log()).abs().mean()) < 0.08
    # with nothing seen the model gives its mean subject
    _, zero = am.fit_to_mesh(model, uv, true, torch.zeros(len(uv)))
    assert torch.equal(zero, torch.zeros(model.n_components))


def test_coefficients_stay_within_the_limit_for_an_impossible_colour():
    maps, _ = _two_sided_maps()
    model = am.build_albedo_model(maps, res=32, n_components=3)
    uv = _uv_grid(32)
    _, coeffs = am.fit_to_mesh(model, uv, torch.full((len(uv), 3), 1e-4), torch.ones(len(uv)), limit=3.0)
    assert float(coeffs.abs().max()) <= 3.0 + 1e-6


def test_file_round_trip_and_hostile_files(tmp_path):
    maps, _ = _two_sided_maps(n=4, res=16)
    model = am.build_albedo_model(maps, res=16, n_components=2, subjects=["a", "b", "c", "d"], hand="open")
    path = tmp_path / am.FILE
    am.save_albedo_model(path, model)
    back = am.load_albedo_model(path)
    assert back.subjects == ["a", "b", "c", "d"] and back.hand == "open"
    assert torch.allclose(back.mean, model.mean, atol=2e-3) and torch.allclose(back.basis, model.basis, atol=2e-3)

    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(PalmError, match="junk.safetensors"):
        am.load_albedo_model(tmp_path / "junk.safetensors")
    from safetensors.torch import save_file

    bad = {"mean": model.mean.clone(), "basis": model.basis.clone(),
           "explained_variance_ratio": model.explained_variance_ratio.clone()}
    bad["basis"][0, 0, 0, 0] = float("inf")
    save_file(bad, str(tmp_path / "inf.safetensors"))
    with pytest.raises(PalmError, match="non-finite"):
        am.load_albedo_model(tmp_path / "inf.safetensors")
    save_file({"mean": torch.zeros(3, 4, 5), "basis": torch.zeros(1, 3, 4, 5),
               "explained_variance_ratio": torch.ones(1)}, str(tmp_path / "shape.safetensors"))
    with pytest.raises(PalmError, match=r"\(3, R, R\)"):
        am.load_albedo_model(tmp_path / "shape.safetensors")


def test_surface_uv_finds_the_nearest_rig_point():
    verts = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], np.float32)
    faces = np.array([[0, 1, 2]])
    uv = np.array([[0.1, 0.1], [0.9, 0.1], [0.1, 0.9]], np.float32)
    got = am.surface_uv(np.array([[0.01, 0.0, 0.02], [0.5, 0.01, 0.0], [0.3, 0.3, 0.0]]), verts, faces, uv)
    assert np.allclose(got[0], [0.1, 0.1])
    assert np.allclose(got[1], [0.5, 0.1])  # the edge's midpoint
    assert np.allclose(got[2], uv.mean(0))  # the centroid


def test_sample_uses_the_albedo_maps_orientation():
    """Row 0 of a map is v = 1 (as the data writes albedo_map.png and palm.render.raster samples it)."""
    from palm.render.raster import sample_texture

    rng = np.random.default_rng(1)
    maps = [rng.uniform(0.1, 0.9, (8, 8, 3)).astype(np.float32) for _ in range(3)]
    model = am.build_albedo_model(maps, res=8, n_components=2)
    uv = rng.uniform(0.05, 0.95, (50, 2)).astype(np.float32)
    mean, _ = am.sample(model, uv)
    expected = sample_texture(model.mean.permute(1, 2, 0), torch.as_tensor(uv))
    assert torch.allclose(mean, expected, atol=1e-5)


def test_the_prior_carries_its_albedo_model_and_the_detail_stage_starts_from_it(tmp_path):
    """A prior folder with albedo.safetensors loads it; refine_avatar then starts the albedo fit from
    the model's prediction (what the unseen side keeps), and with ``albedo_model=False`` from the field."""
    from palm import detail
    from palm.avatar import Avatar
    from palm.bake import bake_from_prior
    from palm.config import DetailConfig
    from palm.eval import make_tiny_prior
    from palm.hand.lbs import bone_transforms
    from palm.prior import load_prior
    from palm.render.sg import sg_init
    from palm.render.views import framing_camera

    folder = tmp_path / "prior"
    make_tiny_prior(folder)
    assert load_prior(folder).albedo_model is None
    hand = load_prior(folder).model.hand
    res = 32
    dark = np.full((res, res, 3), 0.05, np.float32)
    light = np.full((res, res, 3), 0.6, np.float32)
    model = am.build_albedo_model([dark, light, 0.5 * (dark + light)], res=res, n_components=2, hand=hand.name)
    am.save_albedo_model(folder / am.FILE, model)
    prior = load_prior(folder)
    assert prior.albedo_model is not None and prior.albedo_model.hand == "open"

    mesh = bake_from_prior(prior, resolution=28)
    bones = bone_transforms(hand, np.zeros((16, 3), np.float32))
    posed = silhouette.PosedMesh(mesh, bones, np.zeros(3), torch.eye(3), torch.eye(4))
    cam = framing_camera(posed.world().numpy(), 48, 0.0, 10.0)
    lobes = sg_init(8, torch.Generator().manual_seed(0))
    true = np.full_like(mesh.albedo, 0.08)  # a dark subject, darker than the field's albedo
    rgba = detail.render_mesh(dataclasses.replace(mesh, albedo=true), bones, np.zeros(3), cam, lobes, supersample=1)
    photo, mask = detail.on_white(rgba), rgba[..., 3] > 0.5
    z_s, z_a = prior.codes_from_coeffs(torch.zeros(5), torch.zeros(5))
    avatar = Avatar(shape_coeffs=torch.zeros(5), appearance_coeffs=torch.zeros(5), shape_code=z_s,
                    appearance_code=z_a, light=lobes, pose=np.zeros((16, 3), np.float32),
                    betas=np.zeros(hand.n_betas, np.float32), transl=np.zeros(3, np.float32),
                    camera=cam.to_dict(), prior_hash=prior.content_hash)
    got = {}
    for use in (True, False):
        cfg = DetailConfig(mesh_res=28, subdivide=0, thickness_steps=0, outline_steps=0, proportion_steps=0,
                           relief_steps=0, albedo_steps=1, albedo_model=use, neutral_light=False)
        refined, _, info = detail.refine_avatar(prior, avatar, photo, mask, cam, cfg)
        assert ("albedo_model_coeffs" in info) == use
        got[use] = refined.albedo
    # the model's one direction is the tone: fitted to the seen side it is dark everywhere, also
    # where the photo does not see the hand; the field's albedo, scaled to the seen side, is not
    seen = silhouette.visible_vertices(posed.screen(posed.world()), posed.faces, cam.height, cam.width).numpy()
    unseen = np.setdiff1d(np.arange(len(mesh.vertices)), seen)
    err = {use: float(np.median(np.abs(np.log(got[use][unseen] / 0.08)))) for use in got}
    assert err[True] < 0.1 and err[False] > 2 * err[True]
    # a model made in another rig's atlas (e.g. the user's MANO) is not used
    other = dataclasses.replace(prior, albedo_model=dataclasses.replace(model, hand="mano"))
    assert am.mesh_uv(other, mesh, avatar.betas) is None


def test_export_writes_the_training_subjects_albedo_model(tmp_path):
    """build_from_dataset reads the subjects' albedo_map.png; fewer than two maps: no model."""
    from palm.imageio import write_png

    root = tmp_path / "data"
    for i, value in enumerate((0.2, 0.5, 0.8)):
        (root / f"{i:04d}").mkdir(parents=True)
        write_png(root / f"{i:04d}" / am.MAP_FILE, np.full((16, 16, 3), int(255 * value), np.uint8))
    model = am.build_from_dataset(root, ["0000", "0001", "0002"], res=8, n_components=4)
    assert model is not None and model.subjects == ["0000", "0001", "0002"]
    assert model.n_components == 2  # three subjects hold two directions
    assert am.build_from_dataset(root, ["0000"], res=8) is None
    shutil.rmtree(root / "0001")
    assert am.build_from_dataset(root, ["0000", "0001"], res=8) is None
