"""The photo-detail stage (palm/detail.py): mesh helpers, the outline and albedo fits, the mesh file."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from palm import detail, silhouette
from palm.bake import bake_from_prior, load_baked, save_baked
from palm.config import DetailConfig
from palm.errors import PalmError
from palm.eval import prior_sample
from palm.hand.lbs import bone_transforms
from palm.render.raster import rasterize
from palm.render.sg import sg_init
from palm.render.views import framing_camera


@pytest.fixture(scope="module")
def mesh(prior):
    return bake_from_prior(prior, resolution=28)


@pytest.fixture(scope="module")
def scene(prior, mesh):
    """The mesh posed flat, framed at 64 px, under a grey SG light."""
    hand = prior.model.hand
    pose = np.zeros((16, 3), np.float32)
    bones = bone_transforms(hand, pose)
    posed = silhouette.PosedMesh(mesh, bones, np.zeros(3), torch.eye(3), torch.eye(4))
    cam = framing_camera(posed.world().numpy(), 64, 0.0, 10.0)
    posed = silhouette.PosedMesh(mesh, bones, np.zeros(3), cam.K, cam.Rt)
    light = sg_init(8, torch.Generator().manual_seed(0))
    return posed, cam, light


def _silhouette(posed, cam, offsets=None):
    screen = posed.screen(posed.world(offsets))
    return rasterize(screen[None], posed.faces, cam.height, cam.width).mask[0].numpy()


def posed_normals(posed):
    """Canonical vertex normals of a PosedMesh's mesh (the outline fit displaces along them)."""
    from palm.bake import vertex_normals

    return vertex_normals(posed.canonical.numpy(), posed.faces.numpy())


def _iou(a, b):
    return (a & b).sum() / max((a | b).sum(), 1)


def test_prior_bake_winds_faces_outwards(mesh):
    """Normals (from the face winding) point away from the hand: shadows and back-face culling rely on it."""
    out = ((mesh.vertices - mesh.vertices.mean(0)) * mesh.normals).sum(1) > 0
    assert out.mean() > 0.7


def test_subdivide_quadruples_faces_and_averages_attributes(mesh):
    fine = detail.subdivide(mesh)
    edges = {tuple(sorted(e)) for f in mesh.faces for e in ((f[0], f[1]), (f[1], f[2]), (f[2], f[0]))}
    assert len(fine.faces) == 4 * len(mesh.faces)
    assert len(fine.vertices) == len(mesh.vertices) + len(edges)
    assert np.allclose(fine.vertices[: len(mesh.vertices)], mesh.vertices)
    a, b = next(iter(edges))
    mids = fine.vertices[len(mesh.vertices):]
    assert np.isclose(np.linalg.norm(mids - 0.5 * (mesh.vertices[a] + mesh.vertices[b]), axis=1), 0, atol=1e-7).any()
    assert np.allclose(fine.skin_weights.sum(1), 1, atol=1e-5)
    assert np.allclose(np.linalg.norm(fine.normals, axis=1), 1, atol=1e-5)
    # the same surface: every new face's area is a quarter of its parent's in total
    def area(m):
        v = m.vertices[m.faces]
        return 0.5 * np.linalg.norm(np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0]), axis=1).sum()
    assert np.isclose(area(fine), area(mesh), rtol=1e-5)
    # a closed, outward surface stays one (the flag the viewport culls on is carried over)
    from palm.bake import closed_outward

    assert fine.closed == mesh.closed == closed_outward(mesh.vertices, mesh.faces) == closed_outward(fine.vertices,
                                                                                                      fine.faces)


def test_laplacian_vanishes_on_constant_fields_only(mesh):
    faces = torch.as_tensor(mesh.faces, dtype=torch.long)
    edges, degree = silhouette.uniform_laplacian(faces, len(mesh.vertices))
    const = torch.ones(len(mesh.vertices), 3) * torch.tensor([1.0, -2.0, 0.5])
    assert silhouette.laplacian(const, edges, degree).abs().max() < 1e-6
    bump = torch.zeros(len(mesh.vertices), 1)
    bump[0] = 1.0
    assert float(silhouette.laplacian(bump, edges, degree)[0]) == pytest.approx(1.0)


def test_signed_mask_distance_sign_and_scale():
    m = np.zeros((20, 20), bool)
    m[5:15, 5:15] = True
    d = silhouette.signed_mask_distance(m)
    assert d[10, 10] < 0 < d[0, 0]
    assert d[10, 17] == pytest.approx(3.0)


def test_outline_fit_moves_the_silhouette_onto_the_mask(scene):
    posed, cam, _ = scene
    start = _silhouette(posed, cam)
    # the target: the same hand 4 px to the right (as a slightly wrong pose or shape would leave it)
    target = np.zeros_like(start)
    target[:, 4:] = start[:, :-4]
    cfg = DetailConfig(outline_steps=40, outline_lr=4e-4, visibility_every=2, offset_smooth=4.0)
    offsets = silhouette.fit_outline(posed, target, posed_normals(posed), cfg)
    after = _silhouette(posed, cam, offsets)
    assert _iou(after, target) > _iou(start, target) + 0.05
    assert torch.isfinite(offsets).all()


@pytest.mark.parametrize("per_bone", [False, True])
def test_thickness_fit_grows_a_thin_hand_all_round(prior, mesh, per_bone):
    """The target is the same mesh 3 mm thicker everywhere: the thickness (one, or one per bone)
    comes back positive, within its limit, and the silhouette moves onto the target; a target 3 mm
    thinner gives negative thickness. The offsets lie along the normals (no lumps)."""
    bones = bone_transforms(prior.model.hand, np.zeros((16, 3), np.float32))
    posed = silhouette.PosedMesh(mesh, bones, np.zeros(3), torch.eye(3), torch.eye(4))
    cam = framing_camera(posed.world().numpy(), 160, 0.0, 10.0)
    posed = silhouette.PosedMesh(mesh, bones, np.zeros(3), cam.K, cam.Rt)
    normals = posed_normals(posed)
    start = _silhouette(posed, cam)
    cfg = DetailConfig(thickness_steps=100, visibility_every=2, thickness_limit=0.005, thickness_per_bone=per_bone)
    used = torch.as_tensor(mesh.skin_weights).sum(0) > 1.0  # bones that carry vertices
    for sign in (1.0, -1.0):
        target = _silhouette(posed, cam, torch.as_tensor(normals * 0.003 * sign, dtype=torch.float32))
        offsets, thickness = silhouette.fit_thickness(posed, target, normals, mesh.skin_weights, cfg)
        assert thickness.shape == ((len(used),) if per_bone else (1,))
        assert _iou(_silhouette(posed, cam, offsets), target) > _iou(start, target) + 0.02
        t = thickness[used] if per_bone else thickness
        assert float((t * sign).median()) > 0.001
        assert float(thickness.abs().max()) <= 0.005 + 1e-9
        cross = torch.linalg.cross(offsets, torch.as_tensor(normals, dtype=torch.float32), dim=1)
        assert float(cross.norm(dim=1).max()) < 1e-6


def test_albedo_fit_recovers_reflectance_and_keeps_light_out(scene, mesh):
    """A photo made with a known albedo under two different lights: the fit finds the same albedo
    under both (the light stays in the shading), and reproduces each photo."""
    posed, cam, _light = scene
    rng = np.random.default_rng(0)
    true = np.clip(mesh.albedo * rng.uniform(0.6, 1.2, (len(mesh.albedo), 3)), 0.02, 1).astype(np.float32)
    fits = []
    for seed in (0, 1):
        lobes = sg_init(8, torch.Generator().manual_seed(seed)) * torch.tensor([1, 1, 1, 1, 1.5, 1.2, 1.0])
        with torch.no_grad():
            sh = detail.pixel_shading(posed, w := posed.world(), posed.normals(w), mesh, lobes, cam.height, cam.width)
        a_px = (torch.as_tensor(true)[sh["vid"]] * sh["bary"][..., None]).sum(1)
        from palm.render.color import linear_to_srgb

        photo = np.ones((cam.height, cam.width, 3), np.float32)
        photo.reshape(-1, 3)[sh["mask"].reshape(-1).numpy()] = linear_to_srgb((a_px * sh["D"] + sh["S"]).clamp(0, 1)).numpy()
        cfg = DetailConfig(albedo_steps=300, albedo_lr=0.03, albedo_smooth=0.0, albedo_l2=0.0)
        albedo, _ = detail.fit_albedo(sh, photo, sh["mask"].numpy(), mesh.albedo, posed.faces, cfg)
        seen = torch.unique(sh["vid"]).numpy()
        fits.append(albedo[seen])
        err_before = np.abs(mesh.albedo[seen] - true[seen]).mean()
        assert np.abs(albedo[seen] - true[seen]).mean() < 0.5 * err_before
    assert np.abs(fits[0] - fits[1]).mean() < 0.5 * np.abs(mesh.albedo[seen] - true[seen]).mean()


def test_baked_file_round_trip_and_hostile_files(mesh, tmp_path):
    path = tmp_path / "mesh.safetensors"
    save_baked(path, mesh)
    back = load_baked(path)
    for key in ("vertices", "faces", "albedo", "skin_weights", "joints", "parents"):
        assert np.array_equal(getattr(back, key), getattr(mesh, key))
    bad = dataclasses.replace(mesh, albedo=np.full_like(mesh.albedo, np.nan))
    with pytest.raises(PalmError, match="non-finite"):
        save_baked(tmp_path / "nan.safetensors", bad)
    assert not (tmp_path / "nan.safetensors").exists()
    from safetensors.numpy import save_file

    arrays = {k: np.ascontiguousarray(getattr(mesh, k)) for k in mesh.__dataclass_fields__}
    for name, change in [("faces", lambda a: {**a, "faces": a["faces"] + len(mesh.vertices)}),
                         ("albedo", lambda a: {**a, "albedo": a["albedo"][:5]}),
                         ("roughness", lambda a: {k: v for k, v in a.items() if k != "roughness"}),
                         ("normals", lambda a: {**a, "normals": np.full_like(a["normals"], np.inf)})]:
        p = tmp_path / f"bad_{name}.safetensors"
        save_file(change(arrays), str(p))
        with pytest.raises(PalmError) as err:
            load_baked(p)
        assert str(p) in str(err.value)
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 40)
    with pytest.raises(PalmError):
        load_baked(tmp_path / "junk.safetensors")


def test_personalize_with_detail_writes_the_refined_mesh_that_render_shows(prior, tmp_path):
    from palm.avatar import load_avatar
    from palm.config import PERSONALIZE_PRESETS
    from palm.scene import load_scene, render_scene
    from palm.train.personalize import personalize

    target = prior_sample(prior, appearance_coeffs=torch.tensor([2.0, -1.5, 0, 0, 0]), res=48, pbr=False)
    cfg = dataclasses.replace(
        PERSONALIZE_PRESETS["fast"], max_steps=4, shape_freeze_step=2, pbr_start_step=3, pixels_per_image=32,
        patch_size=8, patch_choices=((8, 1),), preview_every=0, work_res=None,
        detail=DetailConfig(res=48, mesh_res=24, subdivide=0, outline_steps=4, albedo_steps=20))
    out = tmp_path / "avatar"
    avatar = personalize(target, prior, cfg, out, preset="test")
    report = avatar.extra["report"]
    for key in ("psnr_masked", "ssim_masked", "lpips_masked", "iou", "seconds", "steps"):
        assert key in report
    assert np.isfinite(report["psnr_masked"]) and 0 < report["iou"] <= 1
    assert report["detail"]["vertices"] > 0
    assert (out / "mesh.safetensors").is_file()
    back = load_avatar(out, prior_hash=prior.content_hash)
    assert np.allclose(back.extra["mesh"].albedo, avatar.extra["mesh"].albedo)
    scene = load_scene(prior=prior.path, avatar=out)
    assert scene.renderer == "raster" and scene.mesh is not None
    # the light the mesh was fitted under is the avatar's; the neural renderer gets the colour correction
    assert torch.allclose(scene.light.cpu(), back.light) and len(back.extra["albedo_gain"]) == 3
    neural = load_scene(prior=prior.path, avatar=out, renderer="neural")
    assert torch.allclose(neural.frame.albedo_gain, torch.tensor(back.extra["albedo_gain"]))
    image = render_scene(scene).numpy()
    assert image.shape == (48, 48, 4) and np.isfinite(image).all()
    # the own view shows the hand where the photo has it
    rendered = image[..., 3] > 0.5
    assert _iou(rendered, np.asarray(target.mask, bool)) > 0.5


def test_render_cli_refuses_rf_image_with_the_raster_renderer(tmp_path, capsys):
    from palm.cli.main import main

    rc = main(["render", "--image", "rf", "--out", str(tmp_path / "x.png")])
    assert rc == 2
    assert "--renderer neural" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_supersampled_render_is_antialiased_and_keeps_the_silhouette(prior, scene, mesh):
    from palm.detail import render_mesh

    _, cam, light = scene
    hand_bones = bone_transforms(prior.model.hand, np.zeros((16, 3), np.float32))
    hard = render_mesh(mesh, hand_bones, np.zeros(3), cam, light, supersample=1)
    soft = render_mesh(mesh, hand_bones, np.zeros(3), cam, light, supersample=3)
    assert hard.shape == soft.shape == (cam.height, cam.width, 4)
    assert set(np.unique(hard[..., 3])) <= {0.0, 1.0}
    partial = (soft[..., 3] > 0) & (soft[..., 3] < 1)
    assert partial.any() and np.isfinite(soft).all()
    assert abs((soft[..., 3] > 0.5).sum() - hard[..., 3].sum()) < 0.1 * hard[..., 3].sum()


def test_refine_gives_the_albedo_the_colour_a_tinted_fitted_light_took(prior, mesh, scene):
    """The paper stage may explain skin colour with a tinted light. The photo here is the mesh with
    a saturated (skin-like) albedo under a grey light; the avatar's fitted light carries a tint
    instead. Fitted under the light in the data's gauge (``neutral_light``, the default), the albedo
    comes back near the true one and the light is grey; fitted under the tinted light, the albedo
    keeps the tint's inverse."""
    from palm.avatar import Avatar
    from palm.render.environment import DISPLAY_EXPOSURE
    from palm.render.sg import neutral_light, sg_irradiance

    posed, cam, light = scene
    grey, _ = neutral_light(light, DISPLAY_EXPOSURE)
    true = np.clip(mesh.albedo * np.array([1.1, 0.7, 0.45], np.float32), 0.02, 1.0)
    bones = bone_transforms(prior.model.hand, np.zeros((16, 3), np.float32))
    rgba = detail.render_mesh(dataclasses.replace(mesh, albedo=true), bones, np.zeros(3), cam, grey, supersample=1)
    photo, mask = detail.on_white(rgba), rgba[..., 3] > 0.5
    tinted = grey.clone()
    tinted[:, 4:7] *= torch.tensor([0.7, 1.0, 1.6])
    z_s, z_a = prior.codes_from_coeffs(torch.zeros(5), torch.zeros(5))
    avatar = Avatar(shape_coeffs=torch.zeros(5), appearance_coeffs=torch.zeros(5), shape_code=z_s,
                    appearance_code=z_a, light=tinted, pose=np.zeros((16, 3), np.float32),
                    betas=np.zeros(prior.model.hand.n_betas, np.float32), transl=np.zeros(3, np.float32),
                    camera=cam.to_dict(), prior_hash=prior.content_hash)
    seen = silhouette.visible_vertices(posed.screen(posed.world()), posed.faces, cam.height, cam.width).numpy()
    errors = {}
    for neutral in (True, False):
        cfg = DetailConfig(mesh_res=28, subdivide=0, rig_fill=None, thickness_steps=0, outline_steps=0, albedo_steps=200,
                           albedo_lr=0.03, relief_steps=0, neutral_light=neutral)  # the prior's surface alone
        refined, used, info = detail.refine_avatar(prior, avatar, photo, mask, cam, cfg)
        scale = torch.tensor(info["paper_light_scale"])  # the paper stage's light comes back from the avatar's
        assert torch.allclose(used[:, 4:7] * scale, tinted[:, 4:7], rtol=1e-4, atol=1e-6)
        errors[neutral] = np.abs(refined.albedo[seen] - true[seen]).mean()
        if neutral:
            irr = sg_irradiance(used, torch.nn.functional.normalize(torch.randn(256, 3), dim=1)).mean(0)
            assert torch.allclose(irr, irr.mean().expand(3), rtol=0.05)
            assert torch.allclose(used, grey, rtol=1e-4, atol=1e-5)
        else:
            assert torch.equal(used, tinted)
    assert errors[True] < 0.4 * errors[False]


def test_the_neural_renderer_applies_an_avatars_albedo_gain(prior, scene):
    """``Frame.albedo_gain`` scales the material's albedo per channel (and only it): the neural view of a
    refined avatar carries the detail stage's colour correction."""
    from palm.model import Frame
    from palm.train.views import render_outputs

    _, cam, light = scene
    cam = cam.scaled(0.5)
    z_s, z_a = prior.codes_from_coeffs(torch.zeros(5), torch.zeros(5))
    hand = {"pose": torch.zeros(16, 3), "betas": torch.zeros(prior.model.hand.n_betas), "transl": torch.zeros(3)}
    plain = Frame(shape_code=z_s, appearance_code=z_a, **hand)
    gained = Frame(shape_code=z_s, appearance_code=z_a, albedo_gain=torch.tensor([0.5, 1.0, 1.0]), **hand)
    with torch.no_grad():
        a = prior.model.render_image(cam, plain, light=light)
        b = prior.model.render_image(cam, gained, light=light)
    hit = a["opacity"][..., 0] > 0.9
    assert hit.sum() > 20
    assert torch.allclose(b["albedo"][hit][:, 0], 0.5 * a["albedo"][hit][:, 0], atol=1e-5)
    assert torch.allclose(b["albedo"][hit][:, 1:], a["albedo"][hit][:, 1:], atol=1e-6)
    assert torch.equal(a["opacity"], b["opacity"])
    # and render_outputs (personalisation previews, scoring) keeps it
    ra, rb = render_outputs(prior.model, cam, plain, light)["rgb"], render_outputs(prior.model, cam, gained, light)["rgb"]
    assert (rb[..., 0][hit.numpy()] < ra[..., 0][hit.numpy()] - 1e-3).mean() > 0.5


def test_relief_fit_raises_a_bump_the_photo_shades(shipped, framed):
    """A photo of the flat hand with a 1.2 mm bump on the seen palm, lit from a grazing angle: the
    relief fit, started from the flat hand with the true albedo, raises the bump where it is and
    nowhere else, leaves the unseen side and the outline, and explains the photo better."""
    from palm.bake import vertex_normals

    mesh, camera, axes = framed
    toward_camera = -axes[2]
    facing = mesh.normals @ toward_camera > 0.5
    centre = mesh.vertices[facing].mean(0)
    dist = np.linalg.norm(mesh.vertices - centre, axis=1)
    bump = 0.0012 * np.exp(-((dist / 0.015) ** 2)) * facing
    grey = np.full_like(mesh.albedo, 0.5)
    flat = dataclasses.replace(mesh, albedo=grey)
    bumped_v = (mesh.vertices + bump[:, None] * mesh.normals).astype(np.float32)
    bumped = dataclasses.replace(flat, vertices=bumped_v, normals=vertex_normals(bumped_v, mesh.faces))
    grazing = 0.5 * toward_camera + 0.87 * axes[0]
    lobes = torch.tensor([[*grazing, 30.0, 4.0, 4.0, 4.0], [*toward_camera, 1.0, 0.2, 0.2, 0.2]], dtype=torch.float32)
    bones = bone_transforms(shipped.model.hand, np.zeros((16, 3), np.float32), None, joints=mesh.joints)
    rgba = detail.render_mesh(bumped, bones, np.zeros(3), camera, lobes, supersample=1)
    photo, mask = detail.on_white(rgba), rgba[..., 3] > 0.5
    posed = silhouette.PosedMesh(flat, bones, np.zeros(3), camera.K, camera.Rt)
    # a bump's uniform Laplacian grows with the vertex spacing squared, and this mesh's is ~5-6x an avatar's
    cfg = DetailConfig(relief_steps=150, relief_smooth=1.0 / 36)
    with torch.no_grad():
        world = posed.world()
        frags = detail.pixel_fragments(posed, world, posed.normals(world), flat, lobes, *mask.shape)
    offsets = detail.fit_relief(posed, flat, frags, lobes, torch.as_tensor(grey), photo, mask, cfg).numpy()

    height = (offsets * mesh.normals).sum(1)
    assert np.abs(offsets - height[:, None] * mesh.normals).max() < 1e-9  # along the normals only
    assert np.abs(offsets).max() <= cfg.relief_limit + 1e-9
    assert height[bump > 0.8e-3].mean() > 0.3e-3  # the bump rises where it is (0.42 mm there; about 1 mm true)
    far = facing & (dist > 0.04)
    assert np.abs(height[far]).mean() < 0.15 * height[bump > 0.8e-3].mean()
    assert np.abs(offsets[mesh.normals @ toward_camera < -0.3]).max() == 0  # the unseen side stays

    def error(m):
        out = detail.render_mesh(m, bones, np.zeros(3), camera, lobes, supersample=1)
        return float(((detail.on_white(out) - photo)[mask] ** 2).mean()), out[..., 3] > 0.5

    moved = (mesh.vertices + offsets).astype(np.float32)
    before, sil_before = error(flat)
    after, sil_after = error(dataclasses.replace(flat, vertices=moved, normals=vertex_normals(moved, mesh.faces)))
    assert after < 0.6 * before
    assert _iou(sil_after, mask) >= _iou(sil_before, mask) - 0.005  # the outline stays


def test_a_left_avatar_in_a_new_pose_is_the_mirror_image_of_the_right_one(shipped, tmp_path):
    """``palm render --avatar --pose``: a left-hand avatar shows the left hand, the fitted right
    hand's mirror image, palm to the camera as a right hand is; the same avatar marked right shows
    the right hand. Same mesh, so the silhouettes are mirror images of each other."""
    from palm.avatar import Avatar, save_avatar
    from palm.bake import bake_from_prior, save_baked
    from palm.scene import load_scene, render_scene

    z_s, z_a = shipped.codes_from_coeffs()
    mesh = bake_from_prior(shipped, resolution=40)
    alphas, lights = {}, {}
    for left in (False, True):
        folder = tmp_path / f"av{int(left)}"
        cam = {"K": [[300.0, 0, 64], [0, 300.0, 64], [0, 0, 1]], "Rt": np.eye(4).tolist(), "height": 128, "width": 128}
        save_avatar(folder, Avatar(torch.zeros(5), torch.zeros(5), z_s, z_a, torch.tensor([[0.3, 1.0, 0.6, 2.0, 2.5, 2.2, 2.0]]),
                                   np.zeros((16, 3), np.float32), np.zeros(shipped.model.hand.n_betas, np.float32),
                                   np.array([0, 0, 0.5], np.float32), cam, shipped.content_hash, left=left))
        save_baked(folder / "mesh.safetensors", mesh)
        scene = load_scene(prior=shipped.path, avatar=folder, pose="point", res=64, azimuth=30.0)
        alphas[left] = render_scene(scene).numpy()[..., 3] > 0.5
        lights[left] = scene.light.cpu()
    right, left = alphas[False], alphas[True]
    assert right.sum() > 400
    assert _iou(left, right[:, ::-1]) > 0.97 and _iou(left, right) < 0.9
    assert torch.allclose(lights[True][:, 0], -lights[False][:, 0]) and torch.equal(lights[True][:, 1:], lights[False][:, 1:])
