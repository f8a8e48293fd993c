"""A validated image reader shared by every part that reads photos and masks.

:func:`read_image` turns whatever a user drops on the studio (JPEG, PNG, TIFF, WebP, BMP; 8- or
16-bit; grayscale, palette, CMYK, with or without alpha; rotated by an EXIF tag) into one array
layout: ``(H, W, 3)`` float32 sRGB in ``[0, 1]``, upright as a photo viewer shows it. Anything that
cannot be read raises :class:`palm.errors.PalmError` naming the file and the problem.

Decisions:

* Alpha is composited over **white** (the paper's evaluation background); :func:`read_image_alpha`
  also returns the alpha channel, which :mod:`palm.data.photo` uses as a mask when no mask is given.
* Images larger than :data:`MAX_PIXELS` (40 Mpx) are **downscaled** by the smallest integer factor
  that brings them under it (a 48 or 108 Mpx phone photo is a normal input); the factor is returned
  by :func:`read_image_info`. Images above :data:`REFUSE_PIXELS` are refused (decompression bombs).
* Images smaller than :data:`MIN_SIDE` pixels on either side are refused.
* ICC profiles are ignored (pixel values are taken as sRGB).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from palm.errors import PalmError

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
