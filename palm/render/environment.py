"""The one environment loader: a preset name, an SG ``.json`` or an HDR file -> SG lobes.

Every consumer (renders, export, the studio, synthetic data) lights a scene through
:func:`load_environment`; :func:`display_light` adds the project's display convention (the default
preset and exposure normalisation) in one place, so no call site repeats it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from palm.assets import DEFAULT_ENV, ENVMAPS
from palm.config import LightConfig
from palm.errors import PalmError
from palm.imageio import HDR_EXTENSIONS, load_hdr
from palm.io import require_file
from palm.render.bounds import MAX_LOBES
from palm.render.sg import fit_sg, load_sg, normalise_exposure

DISPLAY_EXPOSURE = 1.0
"""Display normalisation: a white Lambertian surface's 95th-percentile radiance under every
environment the studio, ``palm render`` and ``palm export`` show (what the synthetic data uses)."""


def list_presets() -> list[str]:
    """Names of the shipped SG environments (``assets/envmaps/<name>.json``), sorted."""
    if not ENVMAPS.is_dir():
        return []
    return sorted(p.stem for p in ENVMAPS.glob("*.json"))


def load_environment(
    name_or_file: str | os.PathLike, n_lobes: int = LightConfig.n_lobes, exposure: float | None = None
) -> tuple[torch.Tensor, dict[str, Any]]:
    """SG lobes of a preset name, an SG ``.json`` file, or an ``.exr``/``.hdr`` map (fitted now).

    Args:
        name_or_file: preset name (see :func:`list_presets`) or a file path.
        n_lobes: lobes of the fit when an HDR map is given (ignored otherwise).
        exposure: if given, scale the light so that a white Lambertian surface's 95th-percentile
            radiance is ``exposure`` (:func:`palm.render.sg.normalise_exposure`); None keeps the
            map's own scale.

    Returns:
        ``P`` ``(K, 7)`` float32 raw lobes and an info dict with ``name``, ``source`` and, where
        known, ``rel_error`` and ``irradiance_rel_error``.
    """
    lobes, info = _load(name_or_file, n_lobes)
    if exposure is not None:
        lobes, scale = normalise_exposure(lobes, exposure)
        info = {**info, "exposure_scale": scale}
    return lobes, info


def fit_environment(path: str | os.PathLike, n_lobes: int = LightConfig.n_lobes, **fit_options: Any
                    ) -> tuple[torch.Tensor, dict[str, Any]]:
    """Fit SG lobes to an equirect ``.exr``/``.hdr`` map (:func:`palm.render.sg.fit_sg`).

    Raises:
        PalmError: unreadable map, not equirectangular (width about twice the height), too many
            lobes, or a fit that does not converge (naming ``path``).
    """
    image = load_hdr(path)
    h, w = image.shape[:2]
    if h < 4 or not 1.5 <= w / h <= 2.5:
        raise PalmError(path, f"a {w}x{h} image is not an equirectangular map (width should be twice the height)")
    if not 1 <= n_lobes <= MAX_LOBES:
        raise PalmError(path, f"cannot fit {n_lobes} lobes (1 to {MAX_LOBES})")
    try:
        return fit_sg(image, n_lobes=n_lobes, **fit_options)
    except ValueError as exc:
        raise PalmError(path, str(exc)) from None


def display_light(name_or_file: str | os.PathLike | None = None) -> tuple[torch.Tensor, dict[str, Any]]:
    """The light a render shows: ``name_or_file`` (default :data:`palm.assets.DEFAULT_ENV`) at
    :data:`DISPLAY_EXPOSURE`."""
    return load_environment(name_or_file or DEFAULT_ENV, exposure=DISPLAY_EXPOSURE)


def _load(name_or_file: str | os.PathLike, n_lobes: int) -> tuple[torch.Tensor, dict[str, Any]]:
    text = os.fspath(name_or_file)
    path = Path(text)
    suffix = path.suffix.lower()
    if suffix in HDR_EXTENSIONS or suffix == ".json" or path.exists():
        if suffix == ".json":
            lobes, meta = load_sg(path)
            return lobes, {**meta, "name": meta.get("name", path.stem), "path": str(path)}
        if suffix in HDR_EXTENSIONS:
            lobes, report = fit_environment(path, n_lobes)
            return lobes, {**report, "name": path.stem, "source": path.name, "path": str(path)}
        require_file(path, "environment")
        raise PalmError(path, "unsupported environment file (use a preset name, .json, .exr or .hdr)")
    preset = ENVMAPS / f"{text}.json"
    if "/" not in text and preset.is_file():
        lobes, meta = load_sg(preset)
        return lobes, {**meta, "name": text, "path": str(preset)}
    names = ", ".join(list_presets()) or "none installed"
    raise PalmError(text, f"unknown environment (not a file; presets: {names})")
