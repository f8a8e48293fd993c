"""Every image file the project reads or writes: PNG/JPEG photos, PNG/EXR renders, EXR/HDR maps.

One module owns image files and the 8-bit sRGB encoding:

* :func:`read_image` / :func:`read_image_alpha` / :func:`read_image_info` / :func:`read_mask` turn
  whatever a user drops on the studio (JPEG, PNG, TIFF, WebP, BMP; 8- or 16-bit; grayscale,
  palette, CMYK, with or without alpha; rotated by an EXIF tag) into ``(H, W, 3)`` float32 sRGB in
  ``[0, 1]``, upright as a photo viewer shows it.
* :func:`load_hdr` reads OpenEXR and Radiance ``.hdr`` environment maps as linear RGB.
* :func:`to_srgb8` is the one linear -> 8-bit sRGB encoder; :func:`write_image` writes a linear
  image as tone-mapped PNG or linear EXR; :func:`write_png` writes 8/16-bit arrays as they are;
  :func:`write_exr` / :func:`read_exr` are the one EXR writer and reader.

Anything that cannot be read raises :class:`palm.errors.PalmError` naming the file and the problem;
every writer refuses non-finite pixels and writes through :func:`palm.io.atomic_write`.

Decisions:

* Alpha is composited over **white** (the paper's evaluation background); :func:`read_image_alpha`
  also returns the alpha channel, which the photo pipeline uses as a mask when no mask is given.
* Images larger than :data:`MAX_PIXELS` (40 Mpx) are **downscaled** by the smallest integer factor
  that brings them under it (a 48 or 108 Mpx phone photo is a normal input); the factor is returned
  by :func:`read_image_info`. Images above :data:`REFUSE_PIXELS` are refused (decompression bombs).
* Images smaller than :data:`MIN_SIDE` pixels on either side are refused.
* ICC profiles are ignored (pixel values are taken as sRGB).
* Environment maps: NaN/Inf pixels are replaced by 0 (with a warning), negatives clamped to 0.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from palm.errors import PalmError
from palm.io import atomic_write, check_output_path, require_file
from palm.render.bounds import MAX_MAP_PIXELS, MAX_RADIANCE
from palm.render.color import linear_to_srgb

# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------

IMAGE_EXTENSIONS = (".png", ".exr")
"""Formats :func:`write_image` writes."""
HDR_EXTENSIONS = (".exr", ".hdr")
"""Formats :func:`load_hdr` reads."""


def _numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def to_u8(x: Any) -> np.ndarray:
    """``[0, 1]`` floats -> uint8 (rounded, clamped); NaN -> 0."""
    return np.round(np.clip(np.nan_to_num(np.asarray(x, np.float32)), 0.0, 1.0) * 255.0).astype(np.uint8)


def to_srgb8(rgba: Any, exposure: float = 1.0) -> np.ndarray:
    """Tone-map linear RGB(A) to 8-bit sRGB: ``clamp(sRGB(exposure * rgb), 0, 1)``; alpha is linear.

    Args:
        rgba: (H, W, 3|4) float linear (numpy or torch).
        exposure: linear multiplier before encoding.

    Returns:
        (H, W, 3|4) uint8.
    """
    rgba = np.asarray(_numpy(rgba), np.float32)
    out = np.empty(rgba.shape, np.float32)
    out[..., :3] = linear_to_srgb(np.clip(np.nan_to_num(rgba[..., :3] * exposure), 0.0, 1.0))
    if rgba.shape[-1] == 4:
        out[..., 3] = rgba[..., 3]
    return to_u8(out)


def _check_finite(path: Path, image: np.ndarray) -> None:
    if not np.isfinite(image).all():
        raise PalmError(path, "refusing to write an image with NaN or infinite pixels")


def write_image(path: str | os.PathLike, rgba: Any, exposure: float = 1.0) -> Path:
    """Write a linear image: ``.png`` tone-mapped sRGB 8-bit, ``.exr`` linear float32.

    Args:
        path: output file (``.png`` or ``.exr``).
        rgba: (H, W, 4) (or (H, W, 3)) float linear RGB(A), straight (not premultiplied) alpha.
        exposure: linear multiplier (applied to PNG and EXR colour alike; alpha untouched).

    Returns:
        The path written.
    """
    path = check_output_path(path, IMAGE_EXTENSIONS)
    image = np.asarray(_numpy(rgba), np.float32)
    if image.ndim != 3 or image.shape[-1] not in (3, 4):
        raise PalmError(path, f"image must be (H, W, 3|4), got {image.shape}")
    if not (np.isfinite(exposure) and exposure > 0):
        raise PalmError(path, f"exposure must be a positive finite number, got {exposure}")
    _check_finite(path, image)
    if path.suffix.lower() == ".png":
        write_png(path, to_srgb8(image, exposure))
        return path
    if exposure != 1.0:
        image = image.copy()
        image[..., :3] *= np.float32(exposure)
    write_exr(path, image)
    return path


def png_bytes(image: np.ndarray) -> bytes:
    """An (H, W[, C]) uint8 array encoded as PNG bytes (for files and for glTF textures)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def write_png(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write a uint8 or uint16 (H, W[, C]) array as PNG, as it is (no tone mapping), atomically."""
    import imageio.v3 as iio

    path = Path(path)
    array = np.asarray(array)
    if array.dtype not in (np.uint8, np.uint16):
        raise PalmError(path, f"PNG pixels must be uint8 or uint16, got {array.dtype}")
    with atomic_write(path, suffix=".png") as tmp:
        iio.imwrite(tmp, array, extension=".png")


def write_exr(path: str | os.PathLike, image: Any, compression: str = "zip") -> None:
    """Write (H, W, 3|4) float32 linear RGB(A) as a scanline EXR (ZIP or no compression, lossless).

    ``read_exr(path)`` returns the pixels bit-exactly.
    """
    import OpenEXR

    arr = np.ascontiguousarray(np.asarray(_numpy(image), np.float32))
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise PalmError(path, f"expected an (H, W, 3|4) image to write, got shape {tuple(arr.shape)}")
    _check_finite(Path(path), arr)
    comp = {"zip": OpenEXR.ZIP_COMPRESSION, "none": OpenEXR.NO_COMPRESSION}[compression]
    header = {"compression": comp, "type": OpenEXR.scanlineimage}
    name = "RGBA" if arr.shape[-1] == 4 else "RGB"
    with atomic_write(path, suffix=".exr") as tmp, OpenEXR.File(header, {name: arr}) as exr:
        exr.write(str(tmp))


# ---------------------------------------------------------------------------------------------
# EXR and Radiance HDR
# ---------------------------------------------------------------------------------------------


def read_exr(path: str | os.PathLike) -> np.ndarray:
    """Read an EXR: (H, W, 4) float32 when it has alpha, else (H, W, 3); Y-only maps become grey.

    Raises:
        PalmError: unreadable file or no RGB/Y channels.
    """
    import OpenEXR

    path = Path(path)
    try:
        with OpenEXR.File(str(path), header_only=True) as exr:
            (x0, y0), (x1, y1) = exr.header()["dataWindow"]
    except Exception as exc:  # noqa: BLE001 - the OpenEXR binding raises plain Exceptions on bad files
        raise PalmError(path, f"not a readable OpenEXR file ({_short(exc)})") from None
    width, height = int(x1) - int(x0) + 1, int(y1) - int(y0) + 1
    if width <= 0 or height <= 0:
        raise PalmError(path, "image has no pixels")
    if width * height > MAX_MAP_PIXELS:
        raise PalmError(path, f"image is {width}x{height} pixels, larger than the {MAX_MAP_PIXELS // 2**20} Mpx limit")
    try:
        with OpenEXR.File(str(path)) as exr:
            merged = {k: np.asarray(v.pixels) for k, v in exr.channels().items()}
    except Exception as exc:  # noqa: BLE001 - the OpenEXR binding raises plain Exceptions on bad files
        raise PalmError(path, f"not a readable OpenEXR file ({_short(exc)})") from None
    for key in ("RGBA", "RGB"):
        if key in merged and merged[key].ndim == 3:
            return merged[key].astype(np.float32)
    singles = {k.split(".")[-1]: v for k, v in merged.items() if np.asarray(v).ndim == 2}
    if all(c in singles for c in "RGB"):
        names = "RGBA" if "A" in singles else "RGB"
        return np.stack([singles[c] for c in names], axis=-1).astype(np.float32)
    if "Y" in singles:
        return np.repeat(singles["Y"][..., None], 3, axis=-1).astype(np.float32)
    raise PalmError(path, f"no RGB or Y channels in the EXR (found {', '.join(sorted(merged)) or 'none'})")


def load_hdr(path: str | os.PathLike) -> np.ndarray:
    """Read an OpenEXR or Radiance HDR equirect map as linear RGB.

    Args:
        path: ``.exr`` or ``.hdr`` file.

    Returns:
        ``(H, W, 3)`` float32, finite and non-negative (see the module notes).
    """
    path = require_file(path, "environment map")
    if path.stat().st_size == 0:
        raise PalmError(path, "file is empty")
    ext = path.suffix.lower()
    if ext == ".exr":
        rgb = read_exr(path)[..., :3]
    elif ext == ".hdr":
        rgb = _read_radiance_hdr(path)
    else:
        raise PalmError(path, f"unsupported environment map format '{path.suffix}' (use .exr or .hdr)")
    if rgb.ndim != 3 or rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise PalmError(path, "image has no pixels")
    bad = ~np.isfinite(rgb)
    clean = np.ascontiguousarray(np.maximum(np.where(bad, 0.0, rgb), 0.0), dtype=np.float32)
    if not clean.any():
        raise PalmError(path, "map has no light (every pixel is zero, negative, NaN or infinite)")
    peak = float(clean.max())
    if peak > MAX_RADIANCE:
        raise PalmError(path, f"pixel value {peak:.3g} is beyond the supported range ({MAX_RADIANCE:.0e}); the file is corrupt or wrongly scaled")
    if bad.any():
        n_bad = int(bad.any(axis=-1).sum())
        warnings.warn(f"{path}: {n_bad} pixel(s) with NaN/Inf replaced by 0", UserWarning, stacklevel=2)
    return clean


def _read_radiance_hdr(path: Path) -> np.ndarray:
    """Radiance RGBE: text header, blank line, resolution line, flat or new-style RLE scanlines."""
    data = path.read_bytes()
    if not data.startswith((b"#?RADIANCE", b"#?RGBE")):
        raise PalmError(path, "not a Radiance HDR file (missing '#?RADIANCE' signature)")
    pos = 0
    fmt = None
    while True:
        end = data.find(b"\n", pos)
        if end < 0:
            raise PalmError(path, "truncated Radiance header")
        line = data[pos:end].strip()
        pos = end + 1
        if not line:
            break
        if line.startswith(b"FORMAT="):
            fmt = line[7:].decode("ascii", "replace")
    if fmt not in (None, "32-bit_rle_rgbe"):
        raise PalmError(path, f"unsupported Radiance pixel format '{fmt}' (only 32-bit_rle_rgbe)")
    end = data.find(b"\n", pos)
    parts = data[pos:end].split() if end >= 0 else []
    pos = end + 1
    if len(parts) != 4 or parts[0] not in (b"-Y", b"+Y") or parts[2] != b"+X":
        raise PalmError(path, "unsupported Radiance resolution line (expected '-Y H +X W')")
    try:
        height, width = int(parts[1]), int(parts[3])
    except ValueError:
        raise PalmError(path, "malformed Radiance resolution line") from None
    if height <= 0 or width <= 0:
        raise PalmError(path, "image has no pixels")
    if height * width > MAX_MAP_PIXELS:
        raise PalmError(path, f"image is {width}x{height} pixels, larger than the {MAX_MAP_PIXELS // 2**20} Mpx limit")
    if height * width > 32 * len(data):  # even run-length encoding needs about a byte per 32 pixels
        raise PalmError(path, f"header declares {width}x{height} pixels but the file holds far fewer")
    rgbe = np.empty((height, width, 4), dtype=np.uint8)
    buf = np.frombuffer(data, dtype=np.uint8)
    try:
        for row in range(height):
            pos = _read_scanline(buf, pos, rgbe[row], width)
    except IndexError:
        raise PalmError(path, f"truncated Radiance pixel data (in scanline {row})") from None
    if parts[0] == b"+Y":
        rgbe = rgbe[::-1]
    exponent = rgbe[..., 3:4].astype(np.int32)
    scale = np.where(exponent == 0, 0.0, np.ldexp(np.float32(1.0), exponent - (128 + 8))).astype(np.float32)
    return (rgbe[..., :3].astype(np.float32) + 0.5) * scale


def _read_scanline(buf: np.ndarray, pos: int, out: np.ndarray, width: int) -> int:
    """Decode one scanline into ``out`` (W, 4) uint8; return the position after it."""
    if not (8 <= width < 32768) or buf[pos] != 2 or buf[pos + 1] != 2 or buf[pos + 2] & 0x80:
        flat = buf[pos : pos + 4 * width]
        if flat.size != 4 * width:
            raise IndexError
        out[:] = flat.reshape(width, 4)
        return pos + 4 * width
    if (int(buf[pos + 2]) << 8 | int(buf[pos + 3])) != width:
        raise IndexError
    pos += 4
    for channel in range(4):
        col = 0
        while col < width:
            count = int(buf[pos])
            pos += 1
            if count > 128:  # a run of one value
                count -= 128
                if col + count > width:
                    raise IndexError
                out[col : col + count, channel] = buf[pos]
                pos += 1
            else:  # literal bytes
                if count == 0 or col + count > width or pos + count > buf.size:
                    raise IndexError
                out[col : col + count, channel] = buf[pos : pos + count]
                pos += count
            col += count
    return pos


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:160]


# ---------------------------------------------------------------------------------------------
# Reading photos and masks
# ---------------------------------------------------------------------------------------------

MAX_PIXELS = 40_000_000
"""Images above this many pixels are downscaled by an integer factor."""
REFUSE_PIXELS = 400_000_000
"""Images above this many pixels are refused."""
MIN_SIDE = 32
"""Images with a side shorter than this are refused."""


@dataclass(frozen=True)
class ImageInfo:
    """What :func:`read_image_info` found out about the file.

    Attributes:
        original_size: ``(width, height)`` after the EXIF rotation, before downscaling.
        downscale: integer factor the image was reduced by (1 = full resolution).
        exif_rotated: whether an EXIF orientation tag changed the image.
        mode: the file's PIL mode (``"RGB"``, ``"I;16"``, ``"CMYK"``...).
        has_alpha: whether the file carried an alpha channel with any non-opaque pixel.
    """

    original_size: tuple[int, int]
    downscale: int
    exif_rotated: bool
    mode: str
    has_alpha: bool


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read a photo as sRGB floats.

    Args:
        path: image file.

    Returns:
        ``(H, W, 3)`` float32 in ``[0, 1]``, alpha composited over white.

    Raises:
        PalmError: missing, not an image, corrupt or truncated, too small or absurdly large.
    """
    return read_image_info(path)[0]


def read_image_alpha(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray | None]:
    """Like :func:`read_image`, also returning the alpha channel.

    Returns:
        ``(rgb (H, W, 3) float32, alpha (H, W) float32 in [0, 1] or None)``: ``alpha`` is ``None``
        when the file has no alpha channel or it is fully opaque. ``rgb`` is composited over white.
    """
    rgb, alpha, _ = _read(path)
    return rgb, alpha


def read_image_info(path: str | os.PathLike) -> tuple[np.ndarray, ImageInfo]:
    """:func:`read_image` plus an :class:`ImageInfo` describing the conversions applied."""
    rgb, _, info = _read(path)
    return rgb, info


def read_mask(path: str | os.PathLike, shape: tuple[int, int]) -> np.ndarray:
    """Read a user's mask for a photo of ``shape = (H, W)``.

    The mask is the alpha channel when the file has a non-opaque one, else the luminance; pixels
    above 0.5 are foreground. A mask with the photo's aspect ratio but another resolution (e.g. a
    mask of a downscaled photo) is resized with nearest-neighbour sampling.

    Args:
        path: mask image (any format :func:`read_image` accepts).
        shape: ``(H, W)`` of the photo it belongs to.

    Returns:
        ``(H, W)`` bool.

    Raises:
        PalmError: unreadable, wrong aspect ratio, or empty mask.
    """
    rgb, alpha, _ = _read(path, min_side=1)
    value = alpha if alpha is not None else rgb @ np.array([0.2126, 0.7152, 0.0722], np.float32)
    h, w = shape
    mh, mw = value.shape
    if (mh, mw) != (h, w):
        if abs(mw / mh - w / h) > 0.01 * (w / h):
            raise PalmError(path, f"mask is {mw}x{mh} but the photo is {w}x{h} (different aspect ratio)")
        rows = np.minimum(((np.arange(h) + 0.5) * mh / h).astype(np.int64), mh - 1)
        cols = np.minimum(((np.arange(w) + 0.5) * mw / w).astype(np.int64), mw - 1)
        value = value[rows][:, cols]
    mask = value > 0.5
    if not mask.any():
        raise PalmError(path, "mask is empty (no pixel above 50%)")
    return mask


# ---------------------------------------------------------------------------------------------


def _read(path: str | os.PathLike, min_side: int = MIN_SIDE) -> tuple[np.ndarray, np.ndarray | None, ImageInfo]:
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    if not path.exists():
        raise PalmError(path, "image not found")
    if not path.is_file():
        raise PalmError(path, "expected an image file, found a folder")
    if path.stat().st_size == 0:
        raise PalmError(path, "empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            Image.MAX_IMAGE_PIXELS = REFUSE_PIXELS  # our own limit (below) replaces PIL's 89 Mpx guard
            im = Image.open(path)
            w0, h0 = im.size
            if w0 * h0 > REFUSE_PIXELS:
                raise PalmError(path, f"image is {w0}x{h0} pixels, too large (limit {REFUSE_PIXELS // 1_000_000} Mpx)")
            mode = im.mode
            factor = 1
            while (w0 // factor) * (h0 // factor) > MAX_PIXELS:
                factor += 1
            if factor > 1 and im.format == "JPEG":
                im.draft(im.mode, (w0 // factor, h0 // factor))  # fast DCT-domain reduction
            im.load()
            if factor > 1:
                fx = max(1, round(im.size[0] / (w0 / factor)))
                if fx > 1:
                    im = im.reduce(fx) if im.mode not in ("P", "1") else im.convert("RGBA").reduce(fx)
            orientation = _orientation(im)
            im = ImageOps.exif_transpose(im)
    except PalmError:
        raise
    except UnidentifiedImageError:
        raise PalmError(path, "not an image or an unsupported image format") from None
    except Image.DecompressionBombError:
        raise PalmError(path, "image is too large (decompression bomb guard)") from None
    except Image.DecompressionBombWarning:
        raise PalmError(path, "image is too large (decompression bomb guard)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        text = str(exc).lower()
        what = "truncated image data" if "truncat" in text else f"corrupt image data ({exc})"
        raise PalmError(path, what) from None
    w, h = im.size
    if min(w, h) < min_side:
        raise PalmError(path, f"image is {w}x{h} pixels, too small (at least {min_side} px per side)")
    rgb, alpha = _to_float_rgba(im, path)
    has_alpha = alpha is not None and bool((alpha < 1.0).any())
    if not has_alpha:
        alpha = None
    else:
        rgb = rgb * alpha[..., None] + (1.0 - alpha[..., None])
    if not np.isfinite(rgb).all():
        raise PalmError(path, "image contains non-finite values")
    turned = orientation in (5, 6, 7, 8)  # EXIF orientations that swap width and height
    info = ImageInfo(
        original_size=(h0, w0) if turned else (w0, h0),
        downscale=factor,
        exif_rotated=orientation not in (None, 1),
        mode=mode,
        has_alpha=has_alpha,
    )
    return np.ascontiguousarray(rgb, dtype=np.float32), alpha, info


def _orientation(im) -> int | None:
    try:
        return im.getexif().get(0x0112)
    except Exception:  # noqa: BLE001 - unreadable EXIF is no orientation
        return None


def _to_float_rgba(im, path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Any PIL mode -> ``(rgb (H,W,3) float32 [0,1], alpha (H,W) float32 or None)``."""
    mode = im.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        a = np.asarray(im, dtype=np.float64)
        scale = 65535.0 if mode.startswith("I;16") or a.max(initial=0) > 255 else 255.0
        g = np.clip(a / scale, 0, 1).astype(np.float32)
        return np.repeat(g[..., None], 3, axis=-1), None
    if mode == "F":
        a = np.asarray(im, dtype=np.float32)
        peak = float(np.nanmax(a)) if a.size else 0.0
        scale = 1.0 if peak <= 1.0 else 255.0 if peak <= 255.0 else 65535.0
        g = np.clip(a / scale, 0, 1)
        return np.repeat(g[..., None], 3, axis=-1), None
    if (
        mode in ("RGBA", "LA", "PA")
        or (mode == "P" and "transparency" in im.info)
        or (mode in ("RGB", "L") and "transparency" in im.info)
    ):
        im = im.convert("RGBA")
        a = np.asarray(im, dtype=np.float32) / 255.0
        return a[..., :3], a[..., 3]
    if mode != "RGB":
        try:
            im = im.convert("RGB")  # L, 1, P, CMYK (PIL handles Adobe-inverted CMYK), YCbCr, LAB, HSV
        except (ValueError, OSError) as exc:
            raise PalmError(path, f"unsupported image mode {mode} ({exc})") from None
    return np.asarray(im, dtype=np.float32) / 255.0, None
