"""PNG/EXR stills and SG environment export."""

from __future__ import annotations

import json

import imageio.v3 as iio
import numpy as np
import OpenEXR
import pytest

from palm.errors import PalmError
from palm.export.preview import export_env
from palm.imageio import read_exr, to_srgb8, write_exr, write_image
from palm.render.color import linear_to_srgb


def _hdr_image(h=13, w=17, seed=0):
    rng = np.random.default_rng(seed)
    image = rng.lognormal(0.0, 2.0, size=(h, w, 4)).astype(np.float32)  # values far above 1
    image[..., 3] = rng.uniform(0, 1, size=(h, w))
    image[0, 0, :3] = (0.0, 1e-30, 65504.0 * 7)  # denormal-ish and beyond half range
    return image


@pytest.mark.parametrize("compression", ["zip", "none"])
def test_exr_round_trips_bit_exactly_through_openexr(tmp_path, compression):
    image = _hdr_image()
    path = tmp_path / "still.exr"
    write_exr(path, image, compression=compression)
    with OpenEXR.File(str(path)) as exr:  # the reference reader, not our helper
        compression_read = exr.header()["compression"]
        back = exr.channels()["RGBA"].pixels
    assert back.dtype == np.float32
    assert back.tobytes() == image.tobytes()
    assert compression_read == (OpenEXR.ZIP_COMPRESSION if compression == "zip" else OpenEXR.NO_COMPRESSION)


def test_write_image_exr_is_linear_and_png_is_srgb_with_alpha(tmp_path):
    image = np.zeros((4, 6, 4), np.float32)
    image[:, :3, :3] = 0.2  # linear 0.2 -> sRGB 124
    image[:, :3, 3] = 1.0
    image[:, 3:, :3] = 5.0  # HDR, clipped in the PNG only
    write_image(tmp_path / "a.exr", image)
    np.testing.assert_array_equal(read_exr(tmp_path / "a.exr"), image)
    write_image(tmp_path / "a.png", image)
    png = iio.imread(tmp_path / "a.png")
    assert png.shape == (4, 6, 4) and png.dtype == np.uint8
    expected = round(float(linear_to_srgb(np.float32(0.2))) * 255)
    assert (png[:, :3, :3] == expected).all() and expected == 124
    assert (png[:, 3:, :3] == 255).all()
    assert (png[:, :3, 3] == 255).all() and (png[:, 3:, 3] == 0).all()


def test_exposure_scales_linear_colour(tmp_path):
    image = _hdr_image(4, 4)
    write_image(tmp_path / "b.exr", image, exposure=0.5)
    back = read_exr(tmp_path / "b.exr")
    np.testing.assert_array_equal(back[..., :3], image[..., :3] * np.float32(0.5))
    np.testing.assert_array_equal(back[..., 3], image[..., 3])
    np.testing.assert_array_equal(to_srgb8(image, 0.5), to_srgb8(image * np.array([0.5, 0.5, 0.5, 1], np.float32)))


def test_write_image_rejects_bad_extension_and_shape_without_writing(tmp_path):
    with pytest.raises(PalmError, match="unsupported output format"):
        write_image(tmp_path / "a.jpg", np.zeros((2, 2, 4), np.float32))
    with pytest.raises(PalmError, match="must be"):
        write_image(tmp_path / "a.png", np.zeros((2, 2), np.float32))
    assert list(tmp_path.iterdir()) == []


def test_env_exports_equirect_exr_and_json(tmp_path, three_lobes):
    lobes = three_lobes
    export_env(tmp_path / "env.exr", lobes, height=32)
    env = read_exr(tmp_path / "env.exr")
    assert env.shape == (32, 64, 3) and np.isfinite(env).all() and (env >= 0).all()
    # the brightest pixel sits in the direction of the strongest lobe (convention: row 0 = +y)
    row, col = np.unravel_index(np.argmax(env.sum(-1)), env.shape[:2])
    u, v = (col + 0.5) / 64, 1 - (row + 0.5) / 32
    lon, lat = (u - 0.5) * 2 * np.pi, (v - 0.5) * np.pi
    d = np.array([np.cos(lat) * np.sin(lon), np.sin(lat), np.cos(lat) * np.cos(lon)])
    axis = lobes[0, :3] / np.linalg.norm(lobes[0, :3])
    assert d @ axis > 0.97
    export_env(tmp_path / "env.json", lobes)
    data = json.loads((tmp_path / "env.json").read_text())
    np.testing.assert_allclose(np.array(data["lobes"]), lobes, rtol=1e-6)
