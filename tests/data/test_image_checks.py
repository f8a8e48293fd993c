"""The validated image reader: every bad input is a PalmError naming the file; odd formats read right."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from palm.errors import PalmError
from palm.imageio import read_image, read_image_alpha, read_image_info, read_mask


def _gradient(w=64, h=48) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x / (w - 1), y / (h - 1), np.full_like(x, 0.5, dtype=float)], -1)


def _save(tmp_path, name, im: Image.Image, **kw):
    path = tmp_path / name
    im.save(path, **kw)
    return path


def test_rgb_png_round_trip(tmp_path):
    g = (_gradient() * 255).round().astype(np.uint8)
    img = read_image(_save(tmp_path, "a.png", Image.fromarray(g)))
    assert img.shape == (48, 64, 3) and img.dtype == np.float32
    np.testing.assert_allclose(img, g / 255.0, atol=1e-6)


def test_16bit_grayscale_png_keeps_range(tmp_path):
    a = np.linspace(0, 65535, 64 * 48).reshape(48, 64).astype(np.uint16)
    path = _save(tmp_path, "g16.png", Image.fromarray(a))
    img, info = read_image_info(path)
    assert img.shape == (48, 64, 3)
    np.testing.assert_allclose(img[..., 0], a / 65535.0, atol=1e-6)
    assert info.mode.startswith("I")


def test_grayscale_and_palette(tmp_path):
    g = (_gradient() * 255).astype(np.uint8)
    gray = read_image(_save(tmp_path, "l.png", Image.fromarray(g[..., 0])))
    assert np.array_equal(gray[..., 0], gray[..., 2]) and gray[..., 0].max() > 0.9
    pal = Image.fromarray(g).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    img = read_image(_save(tmp_path, "p.png", pal))
    assert img.shape == (48, 64, 3) and np.abs(img - g / 255.0).mean() < 0.05


def test_cmyk_jpeg_reads_as_rgb(tmp_path):
    g = (_gradient() * 255).astype(np.uint8)
    path = _save(tmp_path, "c.jpg", Image.fromarray(g).convert("CMYK"), quality=95)
    img = read_image(path)
    assert img.shape == (48, 64, 3)
    assert np.abs(img - g / 255.0).mean() < 0.05  # colours survive (not inverted)


def test_alpha_composited_over_white_and_returned(tmp_path):
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[10:30, 10:30, 3] = 255
    rgb, alpha = read_image_alpha(_save(tmp_path, "a.png", Image.fromarray(rgba)))
    assert alpha is not None and alpha[20, 20] == 1.0 and alpha[0, 0] == 0.0
    np.testing.assert_allclose(rgb[0, 0], [1, 1, 1])  # background -> white
    np.testing.assert_allclose(rgb[20, 20], [1, 0, 0])
    opaque = rgba.copy()
    opaque[..., 3] = 255
    assert read_image_alpha(_save(tmp_path, "o.png", Image.fromarray(opaque)))[1] is None


def test_exif_rotation_is_applied(tmp_path):
    a = np.zeros((40, 80, 3), np.uint8)  # wide image, red left half
    a[:, :40, 0] = 255
    im = Image.fromarray(a)
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = tmp_path / "r.jpg"
    im.save(path, exif=exif.tobytes(), quality=95)
    img, info = read_image_info(path)
    assert img.shape == (80, 40, 3) and info.exif_rotated
    assert img[5:35, :, 0].mean() > 0.8 and img[45:, :, 0].mean() < 0.2  # red on top after rotation


@pytest.mark.parametrize(
    "name,payload,message",
    [
        ("junk.jpg", b"this is not an image at all" * 10, "not an image"),
        ("empty.png", b"", "empty file"),
    ],
)
def test_bad_bytes(tmp_path, name, payload, message):
    path = tmp_path / name
    path.write_bytes(payload)
    with pytest.raises(PalmError, match=message) as err:
        read_image(path)
    assert str(path) in str(err.value)


def test_truncated_jpeg(tmp_path):
    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)).save(buf, format="JPEG", quality=90)
    path = tmp_path / "cut.jpg"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(PalmError, match="truncated|corrupt"):
        read_image(path)


def test_tiny_and_missing(tmp_path):
    with pytest.raises(PalmError, match="too small"):
        read_image(_save(tmp_path, "t.png", Image.new("RGB", (20, 100))))
    with pytest.raises(PalmError, match="not found"):
        read_image(tmp_path / "nope.png")
    with pytest.raises(PalmError, match="folder"):
        read_image(tmp_path)


def test_huge_image_is_downscaled(tmp_path, monkeypatch):
    import palm.imageio as ic

    monkeypatch.setattr(ic, "MAX_PIXELS", 100 * 100)
    path = _save(tmp_path, "big.png", Image.fromarray((_gradient(300, 200) * 255).astype(np.uint8)))
    img, info = read_image_info(path)
    assert info.downscale == 3 and img.shape == (67, 100, 3)  # ceil(200 / 3) rows
    assert img.shape[0] * img.shape[1] <= 100 * 100
    assert info.original_size == (300, 200)


def test_read_mask_resizes_and_rejects(tmp_path):
    m = np.zeros((24, 32), np.uint8)
    m[6:18, 8:24] = 255
    path = _save(tmp_path, "m.png", Image.fromarray(m))
    mask = read_mask(path, (48, 64))
    assert mask.shape == (48, 64) and mask.dtype == bool
    assert abs(mask.mean() - (m > 0).mean()) < 1e-9
    with pytest.raises(PalmError, match="aspect"):
        read_mask(path, (64, 64))
    empty = _save(tmp_path, "e.png", Image.fromarray(np.zeros((24, 32), np.uint8)))
    with pytest.raises(PalmError, match="empty"):
        read_mask(empty, (24, 32))
