"""The viewport's GLSL SG lighting against the engine (palm.render.sg / palm.render.brdf), and its back-face
culling, under EGL."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from app.gl_renderer import sg_uniforms
from app.programs import load_program
from palm.bake import closed_outward

N = 32  # N x N probe pixels


@pytest.fixture(scope="module")
def ctx():
    try:
        from app.gl_renderer import standalone_context

        ctx = standalone_context()
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"no OpenGL context: {exc}")
    yield ctx
    ctx.release()


def _inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    n = torch.nn.functional.normalize(torch.randn(N * N, 3, generator=g), dim=-1)
    # views in the hemisphere of the normal (as the viewport's two-sided shading guarantees)
    v = torch.nn.functional.normalize(torch.randn(N * N, 3, generator=g), dim=-1)
    v = torch.where((v * n).sum(-1, keepdim=True) < 0, -v, v)
    albedo = torch.rand(N * N, 3, generator=g) * 0.9 + 0.05
    rough = torch.rand(N * N, 1, generator=g) * 0.85 + 0.1
    metal = (torch.rand(N * N, 1, generator=g) > 0.7).float() * torch.rand(N * N, 1, generator=g)
    return n, v, albedo, rough, metal


def _lobes(seed: int = 1, k: int = 64) -> torch.Tensor:
    from palm.render.sg import sg_init

    lobes = sg_init(k, generator=torch.Generator().manual_seed(seed))
    lobes[: k // 4, 3] = torch.linspace(0.3, 2.9, k // 4)  # cover the series branch of the irradiance
    lobes[:, 4:7] *= torch.rand(k, 3, generator=torch.Generator().manual_seed(seed + 1)) + 0.5  # colour
    return lobes


def _glsl(ctx, mode: int, n, v, albedo, rough, metal, lobes) -> np.ndarray:
    prog = load_program(ctx, "sg_probe.glsl", {"MODE": mode, "MAX_LOBES": 64})
    u = sg_uniforms(lobes.numpy())
    k = len(u.sharpness)
    axis_sharp = np.zeros((64, 4), np.float32)
    amp = np.zeros((64, 3), np.float32)
    axis_sharp[:k, :3], axis_sharp[:k, 3], amp[:k] = u.axis, u.sharpness, u.amplitude
    if "u_sg_lobe" in prog:  # the pre-integrated probe (MODE 3) reads maps instead
        prog["u_sg_lobe"].write(axis_sharp.tobytes())
        prog["u_sg_mu"].write(amp.tobytes())
        prog["u_n_lobes"].value = k
    textures = []
    for unit, (name, data) in enumerate(
        (("u_normal", n), ("u_view", v), ("u_albedo", albedo), ("u_material", torch.cat([rough, metal], -1)))
    ):
        arr = np.zeros((N * N, 4), np.float32)
        arr[:, : data.shape[1]] = data.numpy()
        tex = ctx.texture((N, N), 4, arr.tobytes(), dtype="f4")
        tex.filter = (ctx.NEAREST, ctx.NEAREST)
        tex.use(unit)
        if name in prog:
            prog[name].value = unit
        textures.append(tex)
    fbo = ctx.framebuffer(color_attachments=[ctx.texture((N, N), 4, dtype="f4")])
    vbo = ctx.buffer(np.array([-1, -1, 3, -1, -1, 3], np.float32).tobytes())
    vao = ctx.vertex_array(prog, [(vbo, "2f", "in_ndc")])
    fbo.use()
    fbo.clear()
    vao.render()
    out = np.frombuffer(fbo.read(components=4, dtype="f4"), np.float32).reshape(N * N, 4)[:, :3]
    for obj in (*textures, vao, vbo, fbo):
        obj.release()
    return out


def _compare(gl: np.ndarray, ref: np.ndarray, rtol: float = 2e-3) -> None:
    scale = np.abs(ref).max()
    assert scale > 0
    err = np.abs(gl - ref).max() / scale
    assert err < rtol, f"max error {err:.2e} of the peak"


def test_sg_eval_matches_engine(ctx):
    from palm.render.sg import sg_eval

    n, v, a, r, m = _inputs()
    lobes = _lobes()
    _compare(_glsl(ctx, 2, n, v, a, r, m, lobes), sg_eval(lobes, n).numpy())


def test_sg_irradiance_matches_engine(ctx):
    from palm.render.sg import sg_irradiance

    n, v, a, r, m = _inputs()
    lobes = _lobes()
    _compare(_glsl(ctx, 1, n, v, a, r, m, lobes), sg_irradiance(lobes, n).numpy())


def test_shade_sg_matches_engine(ctx):
    brdf = pytest.importorskip("palm.render.brdf")
    n, v, a, r, m = _inputs()
    lobes = _lobes()
    with torch.no_grad():
        ref = brdf.shade_sg(n, v, a, r, m, lobes).numpy()
    _compare(_glsl(ctx, 0, n, v, a, r, m, lobes), ref)


def test_probe_detects_a_wrong_environment(ctx):
    """The comparison is sensitive: a rotated environment does not pass."""
    from palm.render.sg import sg_irradiance, sg_rotate

    n, v, a, r, m = _inputs()
    lobes = _lobes()
    rot = torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])
    gl = _glsl(ctx, 1, n, v, a, r, m, sg_rotate(lobes, rot))
    with pytest.raises(AssertionError):
        _compare(gl, sg_irradiance(lobes, n).numpy())


# -- pre-integrated lighting (the viewport's default): textures vs the engine's shade_sg -----------


def _glsl_preintegrated(ctx, n, v, albedo, rough, metal, lobes, rotation: float = 0.0) -> np.ndarray:
    """``shade_preintegrated`` (MODE 3) with the maps of the unrotated ``lobes`` turned by ``rotation``."""
    import math

    from app.prefilter import SPECULAR_LOG2_D0

    maps = _maps(lobes)
    irr, spec = maps.irradiance, maps.specular
    prog = load_program(ctx, "sg_probe.glsl", {"MODE": 3, "MAX_LOBES": 64})
    t_irr = ctx.texture((irr.shape[1], irr.shape[0]), 3, irr.tobytes(), dtype="f4")
    t_spec = ctx.texture_array((spec.shape[2], spec.shape[1], spec.shape[0]), 3, spec.tobytes(), dtype="f4")
    t_irr.repeat_y = t_spec.repeat_y = False
    t_irr.use(4)
    t_spec.use(5)
    prog["u_irradiance"].value, prog["u_specular"].value = 4, 5
    c, s = math.cos(rotation), math.sin(rotation)
    prog["u_env_from_world"].write(np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]], np.float32).tobytes())
    prog["u_spec_log2_d0"].value = SPECULAR_LOG2_D0
    prog["u_spec_layers"].value = spec.shape[0]
    try:
        return _glsl(ctx, 3, n, v, albedo, rough, metal, lobes)
    finally:
        t_irr.release()
        t_spec.release()


_MAPS: dict = {}


def _maps(lobes: torch.Tensor):
    """``app.prefilter.preintegrate`` of ``lobes``, computed once per environment in this module."""
    from app.prefilter import preintegrate

    key = lobes.numpy().tobytes()
    if key not in _MAPS:
        _MAPS[key] = preintegrate(lobes.numpy())
    return _MAPS[key]


def _relative_errors(gl: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    """Mean per-pixel relative error (pixels brighter than 5% of the median) and the aggregate
    ``sum |error| / sum |reference|``."""
    err = np.linalg.norm(gl - ref, axis=-1)
    norm = np.linalg.norm(ref, axis=-1)
    keep = norm > 0.05 * np.median(norm)
    return float((err[keep] / norm[keep]).mean()), float(err.sum() / norm.sum())


def _environments():
    from palm.render.environment import list_presets, load_environment

    envs = [("random", _lobes())]
    envs += [(name, load_environment(name)[0]) for name in list_presets()[:2]]
    return envs


@pytest.mark.parametrize("rotation", [0.0, 1.1])
def test_preintegrated_lighting_matches_engine_for_skin(ctx, rotation):
    """Dielectric-like materials (metallic <= 0.3, all roughness): mean relative error < 3%."""
    from palm.render.brdf import shade_sg
    from palm.render.sg import sg_rotate

    n, v, a, r, _ = _inputs(3)
    metal = torch.rand(N * N, 1, generator=torch.Generator().manual_seed(4)) * 0.3
    c, s = np.cos(rotation), np.sin(rotation)
    rot = torch.tensor([[c, 0, s], [0, 1, 0], [-s, 0, c]], dtype=torch.float32)
    for name, lobes in _environments():
        with torch.no_grad():
            ref = shade_sg(n, v, a, r, metal, sg_rotate(lobes, rot)).numpy()
        mean_rel, aggregate = _relative_errors(_glsl_preintegrated(ctx, n, v, a, r, metal, lobes, rotation), ref)
        assert mean_rel < 0.03 and aggregate < 0.03, f"{name}: mean {mean_rel:.4f}, aggregate {aggregate:.4f}"


def test_preintegrated_lighting_bounds_metals(ctx):
    """Pure metals (specular only, the hard case of the approximation): aggregate error < 12%."""
    from palm.render.brdf import shade_sg

    n, v, a, r, _ = _inputs(5)
    metal = torch.ones(N * N, 1)
    for name, lobes in _environments():
        with torch.no_grad():
            ref = shade_sg(n, v, a, r, metal, lobes).numpy()
        _, aggregate = _relative_errors(_glsl_preintegrated(ctx, n, v, a, r, metal, lobes), ref)
        assert aggregate < 0.12, f"{name}: aggregate {aggregate:.4f}"


def test_preintegrated_detects_a_wrong_rotation(ctx):
    """The rotation uniform matters: the maps read unrotated do not match a turned environment."""
    from palm.render.brdf import shade_sg
    from palm.render.sg import sg_rotate

    n, v, a, r, m = _inputs(6)
    lobes = _environments()[-1][1]
    rot = torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])
    with torch.no_grad():
        ref = shade_sg(n, v, a, r, m * 0.3, sg_rotate(lobes, rot)).numpy()
    mean_rel, _ = _relative_errors(_glsl_preintegrated(ctx, n, v, a, r, m * 0.3, lobes, 0.0), ref)
    assert mean_rel > 0.05


# -- back-face culling (same EGL context: in one process, Dear PyGui's GLX context must come first) --

TETRA_V = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], np.float32)
TETRA_F = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])  # counter-clockwise seen from outside


def test_closed_outward_on_a_tetrahedron():
    assert closed_outward(TETRA_V, TETRA_F)
    assert not closed_outward(TETRA_V, TETRA_F[:, ::-1])  # wound inward: negative volume
    assert not closed_outward(TETRA_V, TETRA_F[:3])  # one face missing: open
    flipped = TETRA_F.copy()
    flipped[0] = flipped[0, ::-1]
    assert not closed_outward(TETRA_V, flipped)  # one face against the others
    assert not closed_outward(TETRA_V, np.zeros((0, 3), int))


def test_culled_render_equals_two_sided_render(ctx):
    """The prior's bake (closed) renders the same with back faces culled as two-sided; the same
    mesh with its faces turned inward, or the rig's open mesh, is not culled."""
    from app import actions
    from app.camera import OrbitCamera
    from app.gl_renderer import AvatarRenderer
    from palm.assets import DEFAULT_PRIOR
    from palm.bake import bake_from_prior
    from palm.hand.lbs import bone_transforms
    from palm.prior import load_prior
    from palm.render.sg import sg_init

    if not (DEFAULT_PRIOR / "prior.json").is_file():
        pytest.skip("the default prior is not installed")

    prior = load_prior()
    hand = prior.model.hand
    avatar = bake_from_prior(prior, resolution=40)
    r = AvatarRenderer(ctx, 160, 120)
    r.set_avatar(avatar)
    r.set_bones(bone_transforms(hand, np.zeros((16, 3), np.float32)))
    r.set_environment(sg_init(64, generator=torch.Generator().manual_seed(0)).numpy())
    r.draw_background = False
    camera = OrbitCamera()
    camera.home(np.asarray(avatar.vertices), 30.0, 20.0, 160 / 120)
    assert avatar.closed and r.closed, "the prior's bake should be a closed, outward surface"
    culled = r.render(camera).astype(int)
    r.closed = False
    both = r.render(camera).astype(int)
    assert (culled[..., 3] > 0).sum() > 1500
    assert np.abs(culled - both).max() <= 1
    # a mesh of unknown make (closed=None, as a file's) is checked by the renderer itself
    inward = dataclasses.replace(avatar, faces=np.ascontiguousarray(np.asarray(avatar.faces)[:, ::-1]), closed=None)
    r.set_avatar(inward)
    assert not r.closed
    assert np.abs(r.render(camera).astype(int) - both).max() <= 1
    r.set_avatar(actions.bake_rig(hand))
    assert not r.closed  # the rig is open at the wrist: drawn two-sided
    r.release()
