"""Environment maps: direction convention, HDR I/O, presets, `palm env`."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import OpenEXR
import pytest
import torch

from palm.errors import PalmError
from palm.imageio import load_hdr, write_exr
from palm.render.color import linear_to_srgb, srgb_to_linear
from palm.render.environment import list_presets, load_environment
from palm.render.envmap import dir_to_uv, downsample_equirect, equirect_dirs, solid_angles, uv_to_dir
from palm.render.sg import save_sg, sg_decode, sg_to_equirect

HDRI = Path(__file__).resolve().parents[3] / "shared" / "data" / "hdri" / "blender_studiolights"


# --- direction convention ------------------------------------------------------------------


def test_dir_to_uv_convention():
    dirs = np.array([[0, 0, 1], [1, 0, 0], [0, 1, 0], [0, -1, 0], [-1, 0, 0]], dtype=np.float64)
    uv = dir_to_uv(dirs)
    assert np.allclose(uv[0], [0.5, 0.5])  # +z: image centre
    assert np.allclose(uv[1], [0.75, 0.5])  # +x: u = atan2(1, 0)/2pi + 0.5
    assert np.isclose(uv[2, 1], 1.0) and np.isclose(uv[3, 1], 0.0)  # +y: v = 1 -> row 0
    assert np.isclose(uv[4, 0], 0.25)
    assert torch.allclose(dir_to_uv(torch.tensor(dirs)), torch.tensor(uv))


def test_uv_round_trip_and_equirect_dirs():
    g = np.random.default_rng(0)
    d = g.normal(size=(500, 3))
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    assert np.allclose(uv_to_dir(dir_to_uv(d)), d, atol=1e-9)
    dirs = equirect_dirs(8, 16)
    assert dirs.shape == (8, 16, 3)
    assert torch.allclose(dirs.norm(dim=-1), torch.ones(8, 16))
    assert float(dirs[0, :, 1].min()) > 0.9  # row 0 looks up
    uv = dir_to_uv(dirs.double())
    assert torch.allclose(uv[3, 5], torch.tensor([5.5 / 16, 1 - 3.5 / 8], dtype=torch.float64), atol=1e-6)


def test_solid_angles_sum_to_four_pi():
    w = solid_angles(17, 40, dtype=torch.float64)
    assert w.shape == (17, 40)
    assert float(w.sum()) == pytest.approx(4 * math.pi, rel=1e-12)
    assert float(w[8, 0]) > float(w[0, 0])  # equator pixels are larger than polar ones


def test_downsample_preserves_the_integral():
    g = torch.Generator().manual_seed(0)
    img = torch.rand(64, 128, 3, generator=g) ** 4 * 10
    small = downsample_equirect(img, 16)
    assert small.shape == (16, 32, 3)
    big = (img.double() * solid_angles(64, 128, torch.float64)[..., None]).sum((0, 1))
    low = (small.double() * solid_angles(16, 32, torch.float64)[..., None]).sum((0, 1))
    assert torch.allclose(big, low, rtol=1e-5)


def test_srgb_transfer():
    x = np.linspace(0, 1, 101)
    assert np.allclose(srgb_to_linear(linear_to_srgb(x)), x, atol=1e-12)
    assert linear_to_srgb(np.array(0.0031308)) == pytest.approx(12.92 * 0.0031308)
    assert linear_to_srgb(np.array(1.0)) == pytest.approx(1.0)
    assert linear_to_srgb(np.array(0.5)) == pytest.approx(1.055 * 0.5 ** (1 / 2.4) - 0.055)
    t = torch.linspace(0, 1, 11, requires_grad=True)
    linear_to_srgb(t).sum().backward()
    assert torch.isfinite(t.grad).all()
    assert torch.allclose(srgb_to_linear(linear_to_srgb(t.detach())), t.detach(), atol=1e-6)


# --- HDR files -----------------------------------------------------------------------------


@pytest.mark.parametrize("channels", [3, 4])
def test_exr_round_trip_is_bit_exact(tmp_path, channels):
    g = np.random.default_rng(1)
    img = (g.random((12, 24, channels)) ** 3 * 1000).astype(np.float32)
    path = tmp_path / "x.exr"
    write_exr(path, img)
    back = load_hdr(path)
    assert back.dtype == np.float32 and back.shape == (12, 24, 3)
    assert np.array_equal(back, img[..., :3])


def test_half_and_separate_channel_exr(tmp_path):
    g = np.random.default_rng(2)
    img = (g.random((6, 12, 3)) * 4).astype(np.float16)
    path = tmp_path / "half.exr"
    header = {"compression": OpenEXR.PIZ_COMPRESSION, "type": OpenEXR.scanlineimage}
    with OpenEXR.File(header, {c: np.ascontiguousarray(img[..., i]) for i, c in enumerate("RGB")}) as f:
        f.write(str(path))
    assert np.array_equal(load_hdr(path), img.astype(np.float32))


def test_shared_dwab_map_loads():
    path = HDRI / "studio.exr"
    if not path.is_file():
        pytest.skip("shared CC0 maps not available")
    img = load_hdr(path)
    assert img.shape == (512, 1024, 3) and img.dtype == np.float32
    assert float(img.min()) >= 0.0 and np.isfinite(img).all()
    assert float(img.max()) > 100.0  # a real HDR: bright lights


def _write_raw_exr(path, img):
    import OpenEXR

    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    with OpenEXR.File(header, {"RGB": img}) as exr:
        exr.write(str(path))


def test_write_exr_refuses_non_finite(tmp_path):
    img = np.ones((4, 8, 3), dtype=np.float32)
    img[1, 1, 1] = np.nan
    with pytest.raises(PalmError, match="NaN"):
        write_exr(tmp_path / "nan.exr", img)
    assert not list(tmp_path.iterdir())


def test_nan_inf_replaced_and_negatives_clamped(tmp_path):
    img = np.ones((4, 8, 3), dtype=np.float32)
    img[0, 0, 0] = np.nan
    img[1, 2, 1] = np.inf
    img[2, 3, 2] = -5.0
    path = tmp_path / "bad_values.exr"
    _write_raw_exr(path, img)  # palm.imageio.write_exr refuses non-finite pixels; a foreign file may hold them
    with pytest.warns(UserWarning, match="2 pixel"):
        out = load_hdr(path)
    assert out[0, 0, 0] == 0 and out[1, 2, 1] == 0 and out[2, 3, 2] == 0
    assert out[3, 3, 0] == 1


def _rgbe(img: np.ndarray) -> np.ndarray:
    """Float RGB -> RGBE bytes (test helper)."""
    m = img.max(axis=-1)
    e = np.where(m > 1e-32, np.floor(np.log2(np.maximum(m, 1e-32))) + 1, 0)
    scale = np.where(m > 1e-32, 256.0 / np.exp2(e), 0.0)
    out = np.zeros(img.shape[:2] + (4,), dtype=np.uint8)
    out[..., :3] = np.clip(np.floor(img * scale[..., None]), 0, 255)
    out[..., 3] = np.where(m > 1e-32, e + 128, 0)
    return out


def _rle_scanline(row: np.ndarray) -> bytes:
    """New-style RLE of one (W, 4) scanline: runs for repeated bytes, literals otherwise."""
    w = row.shape[0]
    out = bytearray([2, 2, w >> 8, w & 255])
    for c in range(4):
        data = row[:, c].tolist()
        i = 0
        while i < w:
            run = 1
            while i + run < w and run < 127 and data[i + run] == data[i]:
                run += 1
            if run >= 3:
                out += bytes([128 + run, data[i]])
                i += run
            else:
                j = i
                while j < w and j - i < 128 and not (j + 2 < w and data[j] == data[j + 1] == data[j + 2]):
                    j += 1
                out += bytes([j - i]) + bytes(data[i:j])
                i = j
    return bytes(out)


@pytest.mark.parametrize("rle", [False, True])
def test_radiance_hdr(tmp_path, rle):
    g = np.random.default_rng(3)
    img = (g.random((5, 16, 3)) * 8).astype(np.float32)
    img[:, 4:12] = 2.5  # runs for the RLE
    rgbe = _rgbe(img)
    body = b"".join(_rle_scanline(r) for r in rgbe) if rle else rgbe.tobytes()
    path = tmp_path / "x.hdr"
    path.write_bytes(b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\nEXPOSURE=1.0\n\n-Y 5 +X 16\n" + body)
    out = load_hdr(path)
    assert out.shape == (5, 16, 3)
    # RGBE keeps 8 mantissa bits relative to the pixel's largest channel
    assert np.all(np.abs(out - img) <= img.max(axis=-1, keepdims=True) / 128 + 1e-6)


@pytest.mark.parametrize(
    "name, content, fragment",
    [
        ("garbage.exr", b"this is not an exr file at all", "OpenEXR"),
        ("empty.exr", b"", "empty"),
        ("garbage.hdr", b"P6 not radiance", "Radiance"),
        ("truncated.hdr", b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 4 +X 4\n\x01\x02", "truncated"),
        ("xyze.hdr", b"#?RADIANCE\nFORMAT=32-bit_rle_xyze\n\n-Y 1 +X 1\n\x01\x02\x03\x80", "format"),
        ("image.png", b"\x89PNG\r\n", "unsupported"),
    ],
)
def test_bad_files_raise_palm_error_with_path(tmp_path, name, content, fragment):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(PalmError) as info:
        load_hdr(path)
    assert str(path) in str(info.value) and fragment in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(PalmError, match="not found"):
        load_hdr(tmp_path / "nope.exr")


# --- environments and presets --------------------------------------------------------------


def test_presets_load():
    names = list_presets()
    assert "studio" in names and len(names) == 8
    P, info = load_environment("studio")
    assert P.shape == (64, 7) and torch.isfinite(P).all()
    assert info["irradiance_rel_error"] <= 0.05 and info["name"] == "studio"
    _, lam, mu = sg_decode(P)
    assert float(lam.min()) > 0 and float(mu.sum()) > 0


def test_load_environment_from_files(tmp_path):
    truth = torch.tensor([[0.0, 0.6, 0.8, 20.0, 1.0, 2.0, 3.0]])
    save_sg(tmp_path / "one.json", truth, {"source": "test"})
    P, info = load_environment(tmp_path / "one.json")
    assert torch.equal(P, truth) and info["source"] == "test"
    write_exr(tmp_path / "one.exr", sg_to_equirect(truth, 24))
    P, info = load_environment(tmp_path / "one.exr", n_lobes=2)
    assert P.shape == (2, 7) and info["irradiance_rel_error"] < 0.05
    with pytest.raises(PalmError, match="unknown environment"):
        load_environment("no_such_preset")
    with pytest.raises(PalmError):
        load_environment(tmp_path / "missing.exr")


def _palm(argv: list[str]) -> int:
    from palm.cli import env as env_cli

    parser = argparse.ArgumentParser(prog="palm")
    env_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_fit_list_preview(tmp_path, capsys):
    truth = torch.tensor([[0.0, 0.6, 0.8, 20.0, 1.0, 2.0, 3.0], [1.0, 0.0, 0.0, 4.0, 0.2, 0.2, 0.2]])
    write_exr(tmp_path / "map.exr", sg_to_equirect(truth, 24))
    out = tmp_path / "fit.json"
    rc = _palm(
        [
            "env",
            "fit",
            str(tmp_path / "map.exr"),
            "--lobes",
            "4",
            "--steps",
            "100",
            "--out",
            str(out),
            "--json",
            "--preview",
            str(tmp_path / "fit.png"),
        ]
    )
    assert rc == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["lobes"] == 4 and report["rel_error"] < 0.1 and report["irradiance_rel_error"] < 0.05
    assert json.loads(out.read_text())["format"] == "palm-sg-v1"
    assert (tmp_path / "fit.png").stat().st_size > 0

    assert _palm(["env", "list", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert listing["default"] == "studio" and len(listing["presets"]) == 8

    assert _palm(["env", "preview", "studio", "--out", str(tmp_path / "p.exr"), "--height", "16"]) == 0
    assert load_hdr(tmp_path / "p.exr").shape == (16, 32, 3)
    with pytest.raises(PalmError):
        _palm(["env", "preview", "studio", "--out", str(tmp_path / "p.jpg")])
