"""Equirectangular environment maps: HDR file I/O, the one direction convention, and presets.

Direction convention (``docs/architecture.md``; the only place it is implemented): world "up" is
``+y``; a unit direction ``w = (x, y, z)`` maps to

    u = atan2(x, z) / (2 pi) + 0.5,   v = asin(y) / pi + 0.5,   image row = (1 - v) * H,
    image column = u * W,

so row 0 of an equirect image is the sky (``+y``) and the image centre looks along ``+z``
(``u = 0.5``). Pixel centres sit at ``(col + 0.5, row + 0.5)``.

Reading HDR files: OpenEXR (any compression the ``OpenEXR`` package decodes, DWAB included; RGB,
RGBA, separate ``R``/``G``/``B`` or one luminance channel ``Y``; half or float) and Radiance
``.hdr`` (RGBE, flat or run-length encoded; read by this module, no extra package). The returned
map is ``(H, W, 3) float32`` linear radiance, always finite and non-negative: negative values
(lossy codecs such as DWAB produce tiny ones) are clamped to 0, and NaN/Inf pixels are replaced by
0 with a :class:`UserWarning` that gives their count. A file that is missing, empty, not an image,
or has no usable colour channels raises :class:`PalmError` naming it.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from palm.errors import PalmError
from palm.io import atomic_write, require_file

#: File extensions :func:`load_hdr` reads.
HDR_EXTENSIONS = (".exr", ".hdr")


# ---------------------------------------------------------------------------------------------
# Direction convention
# ---------------------------------------------------------------------------------------------


def dir_to_uv(dirs: Any) -> Any:
    """Equirect texture coordinates of world directions.

    Args:
        dirs: ``(..., 3)`` directions (torch or numpy; need not be unit length).

    Returns:
        ``(..., 2)`` ``(u, v)`` in ``[0, 1]``; ``u = atan2(x, z)/2pi + 0.5``, ``v = asin(y)/pi + 0.5``.
    """
    if isinstance(dirs, torch.Tensor):
        d = dirs / dirs.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        u = torch.atan2(d[..., 0], d[..., 2]) / (2 * math.pi) + 0.5
        v = torch.asin(d[..., 1].clamp(-1.0, 1.0)) / math.pi + 0.5
        return torch.stack([u, v], dim=-1)
    d = np.asarray(dirs, dtype=np.float64)
    d = d / np.maximum(np.linalg.norm(d, axis=-1, keepdims=True), 1e-12)
    u = np.arctan2(d[..., 0], d[..., 2]) / (2 * np.pi) + 0.5
    v = np.arcsin(np.clip(d[..., 1], -1.0, 1.0)) / np.pi + 0.5
    return np.stack([u, v], axis=-1)


def uv_to_dir(uv: Any) -> Any:
    """Unit world directions of equirect texture coordinates (inverse of :func:`dir_to_uv`).

    Args:
        uv: ``(..., 2)`` texture coordinates (torch or numpy).

    Returns:
        ``(..., 3)`` unit directions.
    """
    if isinstance(uv, torch.Tensor):
        lon = (uv[..., 0] - 0.5) * (2 * math.pi)
        lat = (uv[..., 1] - 0.5) * math.pi
        cos_lat = torch.cos(lat)
        return torch.stack([cos_lat * torch.sin(lon), torch.sin(lat), cos_lat * torch.cos(lon)], dim=-1)
    uv = np.asarray(uv, dtype=np.float64)
    lon = (uv[..., 0] - 0.5) * (2 * np.pi)
    lat = (uv[..., 1] - 0.5) * np.pi
    cos_lat = np.cos(lat)
    return np.stack([cos_lat * np.sin(lon), np.sin(lat), cos_lat * np.cos(lon)], axis=-1)


def equirect_dirs(height: int, width: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Unit directions through the pixel centres of an equirect image.

    Returns:
        ``(H, W, 3)`` directions; row 0 is next to ``+y``.
    """
    u = (torch.arange(width, dtype=torch.float64) + 0.5) / width
    v = 1.0 - (torch.arange(height, dtype=torch.float64) + 0.5) / height
    uv = torch.stack(torch.meshgrid(u, v, indexing="xy"), dim=-1)  # (H, W, 2)
    return uv_to_dir(uv).to(dtype)


def solid_angles(height: int, width: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Exact solid angle (steradians) of each pixel of an equirect image; they sum to ``4 pi``.

    Returns:
        ``(H, W)`` solid angles.
    """
    edges = math.pi / 2 - torch.arange(height + 1, dtype=torch.float64) * (math.pi / height)  # latitudes
    band = torch.sin(edges[:-1]) - torch.sin(edges[1:])  # (H,)
    return (band[:, None] * (2 * math.pi / width)).expand(height, width).to(dtype).contiguous()


def downsample_equirect(image: Any, height: int) -> torch.Tensor:
    """Solid-angle-weighted area average of an equirect map to ``height x 2*height`` pixels.

    Each output pixel holds the mean radiance over the input pixels it covers, weighted by their
    solid angle, so the integral of radiance over the sphere is preserved. A map that is already
    that size (or smaller) is returned unchanged (as float32).

    Args:
        image: ``(H, W, C)`` linear map (numpy or torch), ``W == 2 H`` expected.
        height: output height ``h``.

    Returns:
        ``(h, 2h, C)`` float32 tensor.
    """
    img = torch.as_tensor(np.asarray(image) if not isinstance(image, torch.Tensor) else image)
    img = img.to(torch.float64)
    h_in, w_in = img.shape[:2]
    width = 2 * height
    if h_in <= height and w_in <= width:
        return img.to(torch.float32)
    w = solid_angles(h_in, w_in, dtype=torch.float64)[None, None]  # (1,1,H,W)
    chw = img.permute(2, 0, 1)[None]  # (1,C,H,W)
    num = torch.nn.functional.adaptive_avg_pool2d(chw * w, (height, width))
    den = torch.nn.functional.adaptive_avg_pool2d(w, (height, width))
    return (num / den)[0].permute(1, 2, 0).to(torch.float32).contiguous()


# ---------------------------------------------------------------------------------------------
# HDR files
# ---------------------------------------------------------------------------------------------


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
        rgb = _read_exr(path)
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
    if bad.any():
        n_bad = int(bad.any(axis=-1).sum())
        warnings.warn(f"{path}: {n_bad} pixel(s) with NaN/Inf replaced by 0", UserWarning, stacklevel=2)
    return clean


def save_exr(path: str | os.PathLike, image: Any) -> None:
    """Write a linear float32 RGB(A) EXR (ZIP compression, lossless), atomically.

    ``load_hdr(path)`` returns the RGB channels bit-exactly (for finite, non-negative input).

    Args:
        path: destination ``.exr``.
        image: ``(H, W, 3)`` or ``(H, W, 4)`` array or tensor.
    """
    import OpenEXR

    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    arr = np.ascontiguousarray(np.asarray(image, dtype=np.float32))
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise PalmError(path, f"expected an (H, W, 3|4) image to write, got shape {tuple(arr.shape)}")
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    name = "RGB" if arr.shape[2] == 3 else "RGBA"
    with atomic_write(path, suffix=".exr") as tmp, OpenEXR.File(header, {name: arr}) as exr:
        exr.write(str(tmp))


def _read_exr(path: Path) -> np.ndarray:
    import OpenEXR

    try:
        with OpenEXR.File(str(path)) as exr:
            channels = exr.channels()
            merged = {k: np.asarray(v.pixels) for k, v in channels.items()}
    except Exception as exc:  # noqa: BLE001 - the OpenEXR binding raises plain Exceptions on bad files
        raise PalmError(path, f"not a readable OpenEXR file ({_short(exc)})") from None
    for key in ("RGB", "RGBA"):
        if key in merged and merged[key].ndim == 3:
            return merged[key][..., :3].astype(np.float32)
    singles = {k.split(".")[-1]: v for k, v in merged.items() if np.asarray(v).ndim == 2}
    if all(c in singles for c in "RGB"):
        return np.stack([singles[c] for c in "RGB"], axis=-1).astype(np.float32)
    if "Y" in singles:
        return np.repeat(singles["Y"][..., None], 3, axis=-1).astype(np.float32)
    raise PalmError(path, f"no RGB or Y channels in the EXR (found {', '.join(sorted(merged)) or 'none'})")


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
    scale = np.where(exponent == 0, 0.0, np.ldexp(1.0, exponent - (128 + 8)))
    return ((rgbe[..., :3].astype(np.float64) + 0.5) * scale).astype(np.float32)


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
# Previews
# ---------------------------------------------------------------------------------------------


def tonemap_preview(image: Any) -> np.ndarray:
    """Linear map -> 8-bit sRGB for thumbnails: clamp to ``[0, 1]``, sRGB OETF, no exposure.

    Args:
        image: ``(H, W, 3)`` linear RGB (numpy or torch).

    Returns:
        ``(H, W, 3)`` uint8.
    """
    from palm.render.color import linear_to_srgb

    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    srgb = linear_to_srgb(np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0))
    return np.round(np.clip(srgb, 0.0, 1.0) * 255.0).astype(np.uint8)


def save_preview(path: str | os.PathLike, image: Any) -> None:
    """Write an equirect map as a tone-mapped PNG or a linear EXR (chosen by extension), atomically.

    Args:
        path: ``.png`` or ``.exr``.
        image: ``(H, W, 3)`` linear RGB.
    """
    path = Path(path)
    if path.suffix.lower() == ".exr":
        save_exr(path, image)
        return
    if path.suffix.lower() != ".png":
        raise PalmError(path, f"unsupported preview format '{path.suffix}' (use .png or .exr)")
    import imageio.v3 as iio

    pixels = tonemap_preview(image)
    with atomic_write(path, suffix=".png") as tmp:
        iio.imwrite(tmp, pixels, extension=".png")


# ---------------------------------------------------------------------------------------------
# Environments (SG light) and presets
# ---------------------------------------------------------------------------------------------


def list_presets() -> list[str]:
    """Names of the shipped SG environments (``assets/envmaps/<name>.json``), sorted."""
    from palm.assets import ENVMAPS

    if not ENVMAPS.is_dir():
        return []
    return sorted(p.stem for p in ENVMAPS.glob("*.json"))


def load_environment(
    name_or_file: str | os.PathLike, n_lobes: int = 64, exposure: float | None = None
) -> tuple[torch.Tensor, dict[str, Any]]:
    """SG lobes of a preset name, an SG ``.json`` file, or an ``.exr``/``.hdr`` map (fitted now).

    Args:
        name_or_file: preset name (see :func:`list_presets`) or a file path.
        n_lobes: lobes of the fit when an HDR map is given (ignored otherwise).
        exposure: if given, scale the light so that a white Lambertian surface's 95th-percentile
            radiance is ``exposure`` (:func:`palm.render.sg.normalise_exposure`: how the synthetic
            training data is lit, and what renders and the studio use); None keeps the map's own scale.

    Returns:
        ``P`` ``(K, 7)`` float32 raw lobes and an info dict with ``name``, ``source`` and, where
        known, ``rel_error`` and ``irradiance_rel_error``.
    """
    lobes, info = _load_environment(name_or_file, n_lobes)
    if exposure is not None:
        from palm.render.sg import normalise_exposure

        lobes, scale = normalise_exposure(lobes, exposure)
        info = {**info, "exposure_scale": scale}
    return lobes, info


def _load_environment(name_or_file: str | os.PathLike, n_lobes: int) -> tuple[torch.Tensor, dict[str, Any]]:
    from palm.assets import ENVMAPS
    from palm.render.sg import fit_sg, load_sg

    text = os.fspath(name_or_file)
    path = Path(text)
    if path.suffix.lower() in HDR_EXTENSIONS or path.suffix.lower() == ".json" or path.exists():
        if path.suffix.lower() == ".json":
            lobes, meta = load_sg(path)
            return lobes, {**meta, "name": meta.get("name", path.stem), "path": str(path)}
        if path.suffix.lower() in HDR_EXTENSIONS:
            lobes, report = fit_sg(load_hdr(path), n_lobes=n_lobes)
            return lobes, {**report, "name": path.stem, "source": path.name, "path": str(path)}
        require_file(path, "environment")
        raise PalmError(path, "unsupported environment file (use a preset name, .json, .exr or .hdr)")
    preset = ENVMAPS / f"{text}.json"
    if "/" not in text and preset.is_file():
        lobes, meta = load_sg(preset)
        return lobes, {**meta, "name": text, "path": str(preset)}
    names = ", ".join(list_presets()) or "none installed"
    raise PalmError(text, f"unknown environment (not a file; presets: {names})")
