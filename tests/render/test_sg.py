"""Spherical-Gaussian light: closed forms against Monte Carlo, rotation, files, fitting."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from palm.errors import PalmError
from palm.imageio import load_hdr
from palm.render.sg import (
    fit_sg,
    load_sg,
    map_irradiance,
    neutral_light,
    normalise_exposure,
    save_sg,
    sg_decode,
    sg_eval,
    sg_init,
    sg_integral,
    sg_irradiance,
    sg_rotate,
    sg_to_equirect,
)

HDRI = Path(__file__).resolve().parents[3] / "shared" / "data" / "hdri" / "blender_studiolights"


def stratified_sphere(rows: int, cols: int, seed: int = 0) -> torch.Tensor:
    """Jittered stratified uniform samples on the sphere (equal-area strata in (y, phi)), float64."""
    g = torch.Generator().manual_seed(seed)
    i = torch.arange(rows, dtype=torch.float64)[:, None]
    j = torch.arange(cols, dtype=torch.float64)[None, :]
    y = -1.0 + 2.0 * (i + torch.rand(rows, cols, generator=g, dtype=torch.float64)) / rows
    phi = 2.0 * math.pi * (j + torch.rand(rows, cols, generator=g, dtype=torch.float64)) / cols
    r = torch.sqrt((1.0 - y * y).clamp_min(0.0))
    return torch.stack([r * torch.cos(phi), y, r * torch.sin(phi)], dim=-1).reshape(-1, 3)


def random_rotation(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    if torch.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def lobes(axes, sharpness, amplitudes) -> torch.Tensor:
    axes = torch.as_tensor(axes, dtype=torch.float64)
    axes = axes / axes.norm(dim=-1, keepdim=True)
    lam = torch.as_tensor(sharpness, dtype=torch.float64)[:, None]
    return torch.cat([axes, lam, torch.as_tensor(amplitudes, dtype=torch.float64)], dim=-1)


def test_init_follows_spec():
    P = sg_init(64, torch.Generator().manual_seed(3))
    xi, lam, mu = sg_decode(P)
    assert P.shape == (64, 7)
    assert torch.allclose(xi[:32], xi[32:])
    assert torch.allclose(xi.norm(dim=-1), torch.ones(64))
    # the 32 distinct axes spread over the sphere: no two closer than 15 degrees
    cos = xi[:32] @ xi[:32].T - 2 * torch.eye(32)
    assert float(cos.max()) < math.cos(math.radians(15))
    assert float(lam.min()) >= 10.0
    assert torch.allclose(mu[:, 0], mu[:, 1]) and torch.allclose(mu[:, 0], mu[:, 2])
    assert torch.allclose(sg_integral(P).sum(dim=0), torch.full((3,), 2 * math.pi * 0.8), rtol=1e-5)


def test_integral_matches_monte_carlo():
    P = lobes(
        [[0, 1, 0], [1, 0.2, 0], [0.3, -0.4, 0.8], [-1, -1, -1], [0, 0, 1]],
        [0.05, 0.7, 3.0, 15.0, 60.0],
        [[1, 2, 3], [0.5, 0.5, 0.5], [2, 1, 0], [1, 1, 1], [3, 0.1, 1]],
    )
    dirs = stratified_sphere(400, 800)
    for k in range(P.shape[0]):
        mc = sg_eval(P[k : k + 1], dirs).mean(dim=0) * 4 * math.pi
        exact = sg_integral(P[k : k + 1])[0]
        assert torch.allclose(exact, mc, rtol=2e-3), (k, exact, mc)


@pytest.mark.parametrize("sharpness", [0.3, 1.0, 2.5, 4.0, 10.0, 30.0, 100.0])
def test_irradiance_matches_monte_carlo(sharpness):
    """Bound: |approx - MC| <= 2.5% of the lobe's peak irradiance, for every normal."""
    axis = torch.tensor([0.2, 0.9, -0.3], dtype=torch.float64)
    P = lobes([axis.tolist()], [sharpness], [[1.0, 0.5, 2.0]])
    normals = stratified_sphere(6, 8, seed=1)
    normals = torch.cat([normals, axis[None] / axis.norm(), -axis[None] / axis.norm()])
    dirs = stratified_sphere(600, 1200, seed=2)
    radiance = sg_eval(P, dirs)  # (S, 3)
    cos = (normals @ dirs.T).clamp_min(0.0)  # (N, S)
    mc = cos @ radiance * (4 * math.pi / dirs.shape[0])
    approx = sg_irradiance(P, normals)
    err = (approx - mc).abs().max() / mc.abs().max()
    assert float(err) < 0.025, float(err)


def test_irradiance_of_sg_equals_map_irradiance_of_its_image():
    """sg_irradiance and the brute-force map convolution agree on a smooth environment."""
    P = sg_init(12, torch.Generator().manual_seed(5)).double()
    P[:, 3] = P[:, 3] / 4  # broad lobes
    image = sg_to_equirect(P, 128)
    normals = stratified_sphere(5, 10, seed=4)
    brute = map_irradiance(image, normals)
    err = (sg_irradiance(P, normals) - brute).abs().max() / brute.max()
    assert float(err) < 0.02, float(err)


def test_rotation():
    P = sg_init(10, torch.Generator().manual_seed(1)).double()
    R = random_rotation(7)
    dirs = stratified_sphere(10, 20)
    rotated = sg_rotate(P, R)
    assert torch.allclose(sg_eval(rotated, dirs @ R.T), sg_eval(P, dirs), atol=1e-10)
    assert torch.allclose(sg_irradiance(rotated, dirs @ R.T), sg_irradiance(P, dirs), atol=1e-10)
    assert torch.allclose(sg_integral(rotated), sg_integral(P))
    assert not torch.allclose(sg_eval(rotated, dirs), sg_eval(P, dirs))


def test_equirect_orientation():
    up = lobes([[0, 1, 0]], [50.0], [[1, 1, 1]])
    front = lobes([[0, 0, 1]], [50.0], [[1, 1, 1]])
    right = lobes([[1, 0, 0]], [50.0], [[1, 1, 1]])
    h = 32
    assert int(sg_to_equirect(up, h)[..., 0].argmax()) // (2 * h) == 0  # row 0 is the sky
    img = sg_to_equirect(front, h)[..., 0]
    row, col = divmod(int(img.argmax()), 2 * h)
    assert row in (h // 2 - 1, h // 2) and col in (h - 1, h)  # +z at the centre
    col = int(sg_to_equirect(right, h)[..., 0].argmax()) % (2 * h)
    assert col in (3 * h // 2 - 1, 3 * h // 2)  # +x at u = 0.75


def test_save_load_roundtrip(tmp_path):
    P = sg_init(8, torch.Generator().manual_seed(2))
    path = tmp_path / "env.json"
    save_sg(path, P, {"source": "x.exr", "rel_error": 0.1, "irradiance_rel_error": 0.01})
    loaded, meta = load_sg(path)
    assert torch.equal(loaded, P)
    assert meta["format"] == "palm-sg-v1" and meta["source"] == "x.exr" and meta["rel_error"] == 0.1
    assert json.loads(path.read_text())["lobes"][0] == [float(v) for v in P[0].tolist()]


@pytest.mark.parametrize(
    "content, fragment",
    [
        ("{not json", "malformed JSON"),
        ('{"lobes": []}', "non-empty"),
        ('{"lobes": [[1, 0, 0, 1, 1, 1]]}', "lobe 0"),
        ('{"lobes": [[1, 0, 0, 1, 1, 1, "x"]]}', "lobe 0"),
        ('{"lobes": [[0, 0, 0, 1, 1, 1, 1]]}', "zero axis"),
        ('{"format": "other", "lobes": [[1, 0, 0, 1, 1, 1, 1]]}', "format"),
        ("[1, 2]", "lobes"),
    ],
)
def test_load_malformed_raises_palm_error(tmp_path, content, fragment):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(PalmError) as info:
        load_sg(path)
    assert str(path) in str(info.value) and fragment in str(info.value)


def test_load_missing_file(tmp_path):
    with pytest.raises(PalmError, match="not found"):
        load_sg(tmp_path / "missing.json")


def test_single_lobe_map_is_recovered_exactly():
    axis = torch.tensor([0.3, 0.5, -0.8])
    truth = torch.cat([axis / axis.norm(), torch.tensor([40.0, 3.0, 2.0, 0.5])])[None]
    image = sg_to_equirect(truth, 48)
    P, report = fit_sg(image, n_lobes=1, steps=300, fit_height=48, irradiance_weight=0.0)
    xi, lam, mu = sg_decode(P)
    angle = torch.acos((xi[0] @ truth[0, :3]).clamp(-1, 1))
    assert float(angle) < 1e-3
    assert abs(float(lam[0]) / 40.0 - 1) < 1e-3
    assert torch.allclose(mu[0], truth[0, 4:], rtol=1e-3)
    assert report["rel_error"] < 1e-3 and report["lobes"] == 1


def test_fit_real_map():
    """Bound on a real CC0 map (studio, 32 lobes, 300 steps): irradiance <= 5%, radiance <= 60%."""
    path = HDRI / "studio.exr"
    if not path.is_file():
        pytest.skip("shared CC0 maps not available")
    P, report = fit_sg(load_hdr(path), n_lobes=32, steps=300, fit_height=32)
    assert P.shape == (32, 7) and torch.isfinite(P).all()
    assert report["irradiance_rel_error"] <= 0.05, report
    assert report["rel_error"] <= 0.6, report


def test_cosine_lobe_per_point_sharpness_matches_both_closed_forms():
    """Per-point sharpness (the warped specular lobes) takes the masked path: the series where the
    sharpness is below the switch, the fitted form elsewhere, exactly as the broadcast path."""
    from palm.render.sg import IRRADIANCE_SERIES_MAX_SHARPNESS as S
    from palm.render.sg import _cosine_lobe_fitted, _cosine_lobe_series, sg_cosine_lobe

    g = torch.Generator().manual_seed(0)
    lam = torch.rand(500, 6, generator=g) * 2 * S + 1e-3
    t = torch.rand(500, 6, generator=g) * 2 - 1
    want = torch.where(lam < S, _cosine_lobe_series(lam.clamp(1e-6, S), t), _cosine_lobe_fitted(lam.clamp_min(S), t))
    got = sg_cosine_lobe(lam, t)
    assert torch.allclose(got, want, rtol=1e-6, atol=1e-7)
    # per-lobe sharpness broadcast against many cosines: the same values
    per_lobe = lam[0]
    assert torch.allclose(sg_cosine_lobe(per_lobe, t), sg_cosine_lobe(per_lobe.expand(500, 6).contiguous(), t),
                          rtol=1e-5, atol=1e-6)


def test_neutral_light_is_grey_at_the_display_exposure_and_hands_the_tint_to_the_albedo():
    """A warm, dim fit and the same light in another tint and scale map to one grey light, and the
    returned gain keeps the diffuse shading of every normal: albedo * gain under the new light."""
    base = sg_init(8, torch.Generator().manual_seed(3))
    normals = torch.nn.functional.normalize(torch.randn(500, 3, generator=torch.Generator().manual_seed(4)), dim=1)
    results = []
    for tint in ([1.4, 0.9, 0.5], [0.2, 0.3, 0.6]):
        warm = base.clone()
        warm[:, 4:7] *= torch.tensor(tint)
        grey, gain = neutral_light(warm)
        mean = sg_irradiance(grey, normals).mean(0)
        assert torch.allclose(mean, mean.mean().expand(3), rtol=0.05)  # grey on average
        _, scale = normalise_exposure(grey, 1.0)
        assert scale == pytest.approx(1.0, rel=1e-4)  # already at the display exposure
        albedo = torch.tensor([0.6, 0.4, 0.3])
        before = albedo * sg_irradiance(warm, normals)
        after = albedo * gain * sg_irradiance(grey, normals)
        assert torch.allclose(before, after, rtol=1e-4, atol=1e-6)
        results.append((grey, gain))
    assert torch.allclose(results[0][0], results[1][0], rtol=1e-4)  # the tint is gone from the light
    assert not torch.allclose(results[0][1], results[1][1], rtol=0.1)  # and went into the gain
