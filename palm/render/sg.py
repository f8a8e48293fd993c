"""Spherical-Gaussian (SG) environment light: evaluation, integrals, irradiance, fitting, files.

An SG environment is a raw parameter tensor ``P`` of shape ``(K, 7)`` (spec section 6.1): lobe
axis ``xi = P[:, 0:3]`` (normalised on use), sharpness ``lambda = |P[:, 3]|`` and RGB amplitude
``mu = |P[:, 4:7]|``. The radiance arriving from world direction ``w`` is

    E(w) = sum_k mu_k exp(lambda_k (w . xi_k - 1)).

Everything here is pure torch and differentiable in ``P``; directions follow the convention of
:mod:`palm.render.envmap` (``+y`` up). Files are JSON:
``{"format": "palm-sg-v1", "lobes": [[7 floats], ...], "source": ..., "rel_error": ..., ...}``.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any

import numpy as np
import torch

from palm.config import LightConfig
from palm.errors import PalmError
from palm.io import read_json, write_json
from palm.render.bounds import MAX_LOBES, MAX_SG_AMPLITUDE, MAX_SG_SHARPNESS
from palm.render.envmap import downsample_equirect, equirect_dirs, solid_angles

#: Format tag of SG JSON files.
SG_FORMAT = "palm-sg-v1"

#: Sharpness below which :func:`sg_irradiance` uses the exact low-order Legendre expansion.
IRRADIANCE_SERIES_MAX_SHARPNESS = 3.0

_TWO_PI = 2.0 * math.pi


# ---------------------------------------------------------------------------------------------
# Lobes
# ---------------------------------------------------------------------------------------------


def sg_decode(P: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Split raw lobes into unit axes, sharpness and amplitude.

    Args:
        P: ``(K, 7)`` raw lobes.

    Returns:
        ``xi`` ``(K, 3)`` unit axes, ``lam`` ``(K,)`` sharpness ``|P3|``, ``mu`` ``(K, 3)`` ``|P4:7|``.
    """
    xi = P[:, 0:3] / P[:, 0:3].norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return xi, P[:, 3].abs(), P[:, 4:7].abs()


def sg_encode(xi: torch.Tensor, lam: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
    """Pack axes ``(K, 3)``, sharpness ``(K,)`` and amplitude ``(K, 3)`` into raw lobes ``(K, 7)``."""
    return torch.cat([xi, lam[:, None], mu], dim=-1)


def fibonacci_sphere(n: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``n`` near-uniform unit directions on a Fibonacci spiral (``y`` from top to bottom).

    Returns:
        ``(n, 3)`` unit vectors.
    """
    i = torch.arange(n, dtype=torch.float64)
    y = 1.0 - 2.0 * (i + 0.5) / n
    r = torch.sqrt((1.0 - y * y).clamp_min(0.0))
    phi = i * (math.pi * (3.0 - math.sqrt(5.0)))  # golden angle
    return torch.stack([r * torch.sin(phi), y, r * torch.cos(phi)], dim=-1).to(dtype)


def sg_init(n_lobes: int = LightConfig.n_lobes, generator: torch.Generator | None = None) -> torch.Tensor:
    """The spec's initial environment (section 6.1).

    ``P ~ N(0, 1)``; amplitudes made grey (channel 0 copied to 1, 2); ``lambda = 10 + |20 P3|``;
    axes = a Fibonacci sphere of ``ceil(K/2)`` points used twice; amplitudes rescaled to
    ``mu <- |mu| / sum_k energy_k * 2 pi * 0.8`` per channel, ``energy_k = mu_k 2pi/lambda_k (1 - e^{-2 lambda_k})``.

    Args:
        n_lobes: ``K``.
        generator: torch random generator (for reproducibility).

    Returns:
        ``(K, 7)`` raw lobes (float32).
    """
    P = torch.randn(n_lobes, 7, generator=generator)
    P[:, 5] = P[:, 4]
    P[:, 6] = P[:, 4]
    P[:, 3] = 10.0 + (20.0 * P[:, 3]).abs()
    axes = fibonacci_sphere((n_lobes + 1) // 2)
    P[:, 0:3] = torch.cat([axes, axes], dim=0)[:n_lobes]
    mu = P[:, 4:7].abs()
    energy = sg_integral(P)  # (K, 3)
    P[:, 4:7] = mu / energy.sum(dim=0, keepdim=True) * (_TWO_PI * 0.8)
    return P


def sg_eval(P: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
    """Radiance of the environment from world directions.

    Args:
        P: ``(K, 7)`` raw lobes.
        dirs: ``(..., 3)`` unit directions.

    Returns:
        ``(..., 3)`` linear RGB radiance.
    """
    xi, lam, mu = sg_decode(P)
    weights = torch.exp(lam * (dirs @ xi.T - 1.0))  # (..., K)
    return weights @ mu


def sg_integral(P: torch.Tensor) -> torch.Tensor:
    """Closed-form integral of each lobe over the sphere, ``mu 2pi/lambda (1 - e^{-2 lambda})``.

    Args:
        P: ``(K, 7)`` raw lobes.

    Returns:
        ``(K, 3)`` per-lobe integrals (sum over dim 0 for the whole environment).
    """
    _, lam, mu = sg_decode(P)
    return mu * _lobe_integral(lam)[:, None]


def _lobe_integral(lam: torch.Tensor) -> torch.Tensor:
    """``2 pi (1 - e^{-2 lambda}) / lambda`` for a unit-amplitude lobe (limit ``4 pi`` at 0)."""
    lam = lam.clamp_min(1e-8)
    return _TWO_PI * (-torch.expm1(-2.0 * lam)) / lam


def sg_inner_product(xi1: torch.Tensor, lam1: torch.Tensor, xi2: torch.Tensor, lam2: torch.Tensor) -> torch.Tensor:
    """Exact integral over the sphere of the product of two unit-amplitude SGs.

    ``int exp(l1 (w.x1 - 1)) exp(l2 (w.x2 - 1)) dw = 2pi (1 - e^{-2 d}) / d * e^{d - l1 - l2}``,
    ``d = |l1 x1 + l2 x2|``.

    Args:
        xi1, xi2: ``(..., 3)`` unit axes (broadcastable).
        lam1, lam2: ``(...)`` sharpness (broadcastable).

    Returns:
        ``(...)`` integrals.
    """
    d = (lam1[..., None] * xi1 + lam2[..., None] * xi2).norm(dim=-1).clamp_min(1e-8)
    return _TWO_PI * (-torch.expm1(-2.0 * d)) / d * torch.exp(d - lam1 - lam2)


def sg_rotate(P: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
    """Rotate the environment: every lobe axis ``xi -> R xi``; sharpness and amplitude unchanged.

    Args:
        P: ``(K, 7)`` raw lobes.
        R: ``(3, 3)`` rotation matrix.

    Returns:
        ``(K, 7)`` rotated raw lobes.
    """
    return torch.cat([P[:, 0:3] @ R.to(P.dtype).T, P[:, 3:7]], dim=-1)


def sg_mirror(P: torch.Tensor) -> torch.Tensor:
    """The environment mirrored through x = 0: every lobe axis ``(x, y, z) -> (-x, y, z)``. A hand
    lit by ``P`` is the mirror image of its mirrored hand lit by ``sg_mirror(P)`` (left hands are
    rendered as mirrored right hands). ``(K, 7)`` raw lobes in and out."""
    return torch.cat([-P[:, 0:1], P[:, 1:7]], dim=-1)


# ---------------------------------------------------------------------------------------------
# Irradiance (cosine-convolved environment, for diffuse shading)
# ---------------------------------------------------------------------------------------------


def sg_cosine_lobe(lam: torch.Tensor, cos_theta: torch.Tensor) -> torch.Tensor:
    """Irradiance of one unit-amplitude SG: ``int exp(lam (w.xi - 1)) max(w.n, 0) dw``.

    ``cos_theta = xi . n``. Two closed forms, chosen by sharpness:

    * ``lam < 3``: the exact Funk-Hecke (Legendre) expansion of the product, truncated after
      band 4 (band 3 of the clamped cosine is zero); ``e^{-lam} i_l(lam)`` (modified spherical
      Bessel functions) come from their power series. Max error < 0.05% of the peak.
    * ``lam >= 3``: the fitted "scale/bias" approximation of the normalised SG-cosine product
      (S. Hill's fit, popularised in M. Pettineo's SG series), times the exact lobe integral.
      Max error about 1-2% of the peak (largest near ``lam ~ 10``, near the terminator).

    Args:
        lam: ``(...)`` sharpness (> 0).
        cos_theta: ``(...)`` cosine between lobe axis and normal (broadcastable with ``lam``).

    Returns:
        ``(...)`` irradiance per unit amplitude.
    """
    small = lam < IRRADIANCE_SERIES_MAX_SHARPNESS
    shape = torch.broadcast_shapes(lam.shape, cos_theta.shape)
    if lam.shape != shape:
        # one sharpness per lobe: its factors are computed once, then broadcast against the cosines
        series = _cosine_lobe_series(lam.clamp(1e-6, IRRADIANCE_SERIES_MAX_SHARPNESS), cos_theta)
        fitted = _cosine_lobe_fitted(lam.clamp_min(IRRADIANCE_SERIES_MAX_SHARPNESS), cos_theta)
        return torch.where(small, series, fitted)
    # one sharpness per point (warped specular lobes): the series only where it is used
    t = cos_theta.expand(shape)
    out = _cosine_lobe_fitted(lam.clamp_min(IRRADIANCE_SERIES_MAX_SHARPNESS), t)
    if bool(small.any()):
        out = out.masked_scatter(small, _cosine_lobe_series(lam[small].clamp(1e-6, IRRADIANCE_SERIES_MAX_SHARPNESS),
                                                            t[small]))
    return out


#: Legendre bands kept, ``(2l + 1) * C_l`` with ``C_l = 2 pi int_0^1 t P_l(t) dt`` (clamped
#: cosine; ``C_3 = 0``), and ``(2l + 1)!!``.
_BANDS = (0, 1, 2, 4)
_BAND_WEIGHTS = (math.pi, 2.0 * math.pi, 1.25 * math.pi, -0.375 * math.pi)
_DOUBLE_FACTORIALS = (1.0, 3.0, 15.0, 945.0)


def _cosine_lobe_series(lam: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``sum_l (2l+1) C_l e^{-lam} i_l(lam) P_l(t)``; ``i_l(x) = x^l sum_k (x^2/2)^k / (k! (2l+2k+1)!!)``."""
    bands = torch.tensor(_BANDS, dtype=lam.dtype, device=lam.device)  # (4,)
    lam4 = lam[..., None]  # (..., 1)
    half_sq = 0.5 * lam4 * lam4
    term = lam4**bands / torch.tensor(_DOUBLE_FACTORIALS, dtype=lam.dtype, device=lam.device)  # (..., 4)
    total = term
    for k in range(1, 9):  # the next term is < 1e-7 of the sum for lam <= 3
        term = term * half_sq / (k * (2.0 * bands + 2 * k + 1))
        total = total + term
    coef = torch.exp(-lam)[..., None] * torch.tensor(_BAND_WEIGHTS, dtype=lam.dtype, device=lam.device) * total
    t2 = t * t
    return (coef[..., 0] + coef[..., 1] * t + coef[..., 2] * (1.5 * t2 - 0.5)
            + coef[..., 3] * ((35.0 * t2 * t2 - 30.0 * t2 + 3.0) / 8.0))


def _cosine_lobe_fitted(lam: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    c0 = 0.36
    c1 = 1.0 / (4.0 * c0)
    e1 = torch.exp(-lam)
    e2 = e1 * e1
    scale = 1.0 + 2.0 * e2 - 1.0 / lam
    bias = (e1 - e2) / lam - e2
    x = torch.sqrt(1.0 - scale)
    x0 = c0 * t
    x1 = c1 * x
    smooth = (x0 + x1) ** 2 / x
    y = torch.where(x0.abs() <= x1, smooth, t.clamp(0.0, 1.0))
    return (scale * y + bias) * _lobe_integral(lam)


def sg_irradiance(P: torch.Tensor, normals: torch.Tensor) -> torch.Tensor:
    """Cosine-convolved environment ``int E(w) max(w.n, 0) dw`` (diffuse = albedo/pi times this).

    Args:
        P: ``(K, 7)`` raw lobes.
        normals: ``(..., 3)`` unit normals.

    Returns:
        ``(..., 3)`` irradiance.
    """
    xi, lam, mu = sg_decode(P)
    per_lobe = sg_cosine_lobe(lam, normals @ xi.T)  # (..., K)
    return per_lobe @ mu


# ---------------------------------------------------------------------------------------------
# Images and files
# ---------------------------------------------------------------------------------------------


def sg_to_equirect(P: torch.Tensor, height: int, width: int | None = None) -> torch.Tensor:
    """Render the environment to an equirect image (``+y`` up, row 0 = sky).

    Args:
        P: ``(K, 7)`` raw lobes.
        height: ``H``; ``width`` defaults to ``2 H``.

    Returns:
        ``(H, W, 3)`` linear RGB.
    """
    width = 2 * height if width is None else width
    dirs = equirect_dirs(height, width, dtype=P.dtype).to(P.device)
    return sg_eval(P, dirs)


def save_sg(path: str | os.PathLike, P: torch.Tensor, meta: dict[str, Any] | None = None) -> None:
    """Write lobes (and JSON-ready metadata such as ``source``, ``rel_error``) atomically.

    Args:
        path: destination ``.json``.
        P: ``(K, 7)`` raw lobes.
        meta: extra top-level keys (``format`` and ``lobes`` are reserved).
    """
    lobes = [[float(v) for v in row] for row in P.detach().cpu().to(torch.float64).tolist()]
    data: dict[str, Any] = {"format": SG_FORMAT, "lobes": lobes}
    for key, value in (meta or {}).items():
        if key not in data:
            data[key] = value
    write_json(path, data)


def load_sg(path: str | os.PathLike) -> tuple[torch.Tensor, dict[str, Any]]:
    """Read an SG JSON file.

    Returns:
        ``P`` ``(K, 7)`` float32 raw lobes and the other top-level keys as a dict.

    Raises:
        PalmError: missing file, malformed JSON, wrong format tag, or lobes that are not a
            non-empty list of 7 finite numbers each with a non-zero axis.
    """
    data = read_json(path)
    if not isinstance(data, dict) or "lobes" not in data:
        raise PalmError(path, "not an SG environment (expected an object with 'lobes')")
    if data.get("format", SG_FORMAT) != SG_FORMAT:
        raise PalmError(path, f"unsupported SG format '{data.get('format')}' (expected '{SG_FORMAT}')")
    lobes = data["lobes"]
    if not isinstance(lobes, list) or not lobes:
        raise PalmError(path, "'lobes' must be a non-empty list")
    if len(lobes) > MAX_LOBES:
        raise PalmError(path, f"{len(lobes)} lobes, more than the limit of {MAX_LOBES}")
    for i, row in enumerate(lobes):
        ok = isinstance(row, list) and len(row) == 7
        ok = ok and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in row)
        if not ok:
            raise PalmError(path, f"lobe {i} is not a list of 7 finite numbers")
        if row[0] ** 2 + row[1] ** 2 + row[2] ** 2 == 0.0:
            raise PalmError(path, f"lobe {i} has a zero axis")
        if not 0.0 <= row[3] <= MAX_SG_SHARPNESS:
            raise PalmError(path, f"lobe {i} has sharpness {row[3]:g} outside [0, {MAX_SG_SHARPNESS:g}]")
        if max(abs(v) for v in row[4:7]) > MAX_SG_AMPLITUDE:
            raise PalmError(path, f"lobe {i} has an amplitude beyond {MAX_SG_AMPLITUDE:g}")
    if not any(v > 0 for row in lobes for v in row[4:7]):
        raise PalmError(path, "the environment has no light (every amplitude is zero or negative)")
    meta = {k: v for k, v in data.items() if k != "lobes"}
    return torch.tensor(lobes, dtype=torch.float32), meta


# ---------------------------------------------------------------------------------------------
# Fitting an SG mixture to an equirect map
# ---------------------------------------------------------------------------------------------


def map_irradiance(equirect: torch.Tensor, normals: torch.Tensor) -> torch.Tensor:
    """Brute-force cosine convolution of an equirect map: ``sum_texels L w_texel max(n.d, 0)``.

    Args:
        equirect: ``(h, w, 3)`` linear map (use a downsampled one: cost is ``h w N``).
        normals: ``(N, 3)`` unit normals.

    Returns:
        ``(N, 3)`` irradiance.
    """
    h, w = equirect.shape[:2]
    dtype = equirect.dtype
    dirs = equirect_dirs(h, w, dtype=dtype).reshape(-1, 3)
    weighted = (equirect * solid_angles(h, w, dtype=dtype)[..., None]).reshape(-1, 3)
    cos = (normals.to(dtype) @ dirs.T).clamp_min_(0.0)  # (N, h w)
    return cos @ weighted


def _relative_rms(pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> float:
    """Weighted relative RMS ``sqrt(sum w |pred - target|^2 / sum w |target|^2)``; weights ``(...)``."""
    num = (weights[..., None] * (pred - target) ** 2).sum()
    den = (weights[..., None] * target**2).sum().clamp_min(1e-30)
    return float(torch.sqrt(num / den))


def _initial_axes(target: torch.Tensor, dirs: torch.Tensor, n_lobes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Axes and sharpness to start from: the brightest directions (greedy, spread apart) + Fibonacci.

    Returns:
        ``xi`` ``(K, 3)`` and ``lam`` ``(K,)``.
    """
    n_bright = (n_lobes + 1) // 2
    n_fib = n_lobes - n_bright
    lum = target.mean(dim=-1).reshape(-1)
    flat_dirs = dirs.reshape(-1, 3)
    min_cos = math.cos(math.radians(12.0))
    order = torch.argsort(lum, descending=True)
    mean_lum = float(lum.mean())
    chosen: list[torch.Tensor] = []
    for idx in order.tolist():
        if len(chosen) == n_bright or float(lum[idx]) <= mean_lum:
            break
        d = flat_dirs[idx]
        if all(float(d @ c) < min_cos for c in chosen):
            chosen.append(d)
    n_fib = n_lobes - len(chosen)
    fib = fibonacci_sphere(max(n_fib, 1), dtype=target.dtype)[:n_fib]
    bright_lam = 1.0 / (1.0 - min_cos)
    fib_spacing = math.sqrt(4.0 * math.pi / max(n_fib, 1))
    fib_lam = 1.0 / (1.0 - math.cos(min(fib_spacing, 2.0)))
    xi = torch.cat([torch.stack(chosen) if chosen else torch.zeros(0, 3, dtype=target.dtype), fib], dim=0)
    lam = torch.cat([torch.full((len(chosen),), bright_lam), torch.full((n_fib,), fib_lam)]).to(target.dtype)
    return xi, lam


def _nonnegative_amplitudes(
    xi: torch.Tensor, lam: torch.Tensor, target: torch.Tensor, dirs: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """Least-squares non-negative amplitudes ``(K, 3)`` for fixed axes and sharpness (per channel)."""
    from scipy.optimize import nnls

    basis = torch.exp(lam * (dirs.reshape(-1, 3) @ xi.T - 1.0))  # (N, K)
    sqrt_w = weights.reshape(-1, 1).sqrt()
    A = (basis * sqrt_w).to(torch.float64).numpy()
    b = (target.reshape(-1, 3) * sqrt_w).to(torch.float64).numpy()
    mu = np.stack([nnls(A, b[:, c], maxiter=20 * A.shape[1])[0] for c in range(3)], axis=-1)
    return torch.from_numpy(mu).to(target.dtype)


def fit_sg(
    equirect: Any,
    n_lobes: int = LightConfig.n_lobes,
    steps: int = 600,
    fit_height: int = 64,
    lr: float = 0.05,
    irradiance_weight: float = 1.0,
    progress: Any = None,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Fit a mixture of ``n_lobes`` SGs to an equirect HDR map.

    The map is area-downsampled (solid-angle weighted, integral preserving) to
    ``fit_height x 2 fit_height``. Start: half the axes at the brightest directions (greedy, at
    least 12 degrees apart), the rest on a Fibonacci sphere, amplitudes by non-negative least
    squares. Then Adam (cosine-decayed learning rate) on unit axes, log sharpness and log
    amplitude minimising ``relative solid-angle-weighted L2 of radiance + irradiance_weight *
    relative L2 of the cosine-convolved irradiance`` (:func:`sg_irradiance` against the map's
    brute-force irradiance on an 8 x 16 grid of normals).

    Report: the errors of :func:`sg_fit_errors` plus
    ``{"lobes", "fit_resolution", "steps", "seconds"}``.

    Args:
        equirect: ``(H, W, 3)`` linear, non-negative map (numpy or torch).
        n_lobes: ``K``.
        steps: Adam iterations.
        fit_height: rows of the map the fit sees.
        lr: peak Adam learning rate.
        irradiance_weight: weight of the irradiance term (0 = radiance only).
        progress: optional callable ``progress(step, steps, loss)``.

    Returns:
        ``P`` ``(K, 7)`` float32 raw lobes (unit axes, positive sharpness and amplitudes) and the report.
    """
    # The fit is thousands of small tensor ops: intra-op threading only adds synchronisation
    # (5x slower on a loaded 2-core machine), so it runs single-threaded and restores the setting.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _fit_sg(equirect, n_lobes, steps, fit_height, lr, irradiance_weight, progress)
    finally:
        torch.set_num_threads(threads)


def _fit_sg(
    equirect: Any, n_lobes: int, steps: int, fit_height: int, lr: float, irradiance_weight: float, progress: Any
) -> tuple[torch.Tensor, dict[str, Any]]:
    start = time.perf_counter()
    image = torch.as_tensor(np.asarray(equirect) if not isinstance(equirect, torch.Tensor) else equirect)
    image = image.detach().to(torch.float32).cpu()
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] < 2 or image.shape[1] < 2:
        raise ValueError(f"fit_sg expects an (H, W, 3) map, got shape {tuple(image.shape)}")
    if not bool(torch.isfinite(image).all()) or bool((image < 0).any()):
        raise ValueError("fit_sg expects a finite, non-negative map (load it with palm.imageio.load_hdr)")

    peak = float(image.max())
    if peak <= 0.0:
        raise ValueError("fit_sg: the map is black")
    target = downsample_equirect(image / peak, fit_height)  # unit peak: no float32 overflow in sums
    h, w = target.shape[:2]
    dirs = equirect_dirs(h, w)
    weights = solid_angles(h, w)
    scale = float((target * weights[..., None]).sum() / (3 * 4 * math.pi))
    if scale <= 0.0:
        raise ValueError("fit_sg: the map is black")
    target = target / scale
    irr_normals = equirect_dirs(8, 16).reshape(-1, 3)
    irr_weights = solid_angles(8, 16).reshape(-1)
    irr_target = map_irradiance(target, irr_normals)

    xi0, lam0 = _initial_axes(target, dirs, n_lobes)
    mu0 = _nonnegative_amplitudes(xi0, lam0, target, dirs, weights)
    floor = 1e-4
    axis = xi0.clone().requires_grad_(True)
    log_lam = lam0.log().clone().requires_grad_(True)
    log_mu = (mu0 + floor).log().clone().requires_grad_(True)
    opt = torch.optim.Adam([axis, log_lam, log_mu], lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s / max(steps, 1), 1.0)))
    )
    flat_dirs = dirs.reshape(-1, 3)
    flat_target = target.reshape(-1, 3)
    flat_w = weights.reshape(-1)
    den_rad = (flat_w[:, None] * flat_target**2).sum()
    den_irr = (irr_weights[:, None] * irr_target**2).sum()

    def lobes() -> torch.Tensor:
        return sg_encode(axis / axis.norm(dim=-1, keepdim=True), log_lam.exp(), log_mu.exp())

    for step in range(steps):
        opt.zero_grad(set_to_none=True)
        P = lobes()
        loss = (flat_w[:, None] * (sg_eval(P, flat_dirs) - flat_target) ** 2).sum() / den_rad
        if irradiance_weight > 0:
            irr = sg_irradiance(P, irr_normals)
            loss = loss + irradiance_weight * (irr_weights[:, None] * (irr - irr_target) ** 2).sum() / den_irr
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            log_lam.clamp_(math.log(1e-3), math.log(1e5))
        if progress is not None:
            progress(step + 1, steps, float(loss))

    with torch.no_grad():
        P = lobes()
        P = sg_encode(P[:, 0:3], P[:, 3], P[:, 4:7].double() * scale * peak).to(torch.float32)
        if not bool(torch.isfinite(P).all()):
            raise ValueError("fit_sg: the fit did not converge to finite lobes")
        report = sg_fit_errors(P, image, fit_height)
    report.update(
        {"lobes": n_lobes, "fit_resolution": [h, w], "steps": steps, "seconds": round(time.perf_counter() - start, 2)}
    )
    return P, report


def sg_fit_errors(P: torch.Tensor, equirect: Any, fit_height: int = 64) -> dict[str, float]:
    """Relative RMS radiance and irradiance errors of lobes ``P`` against an equirect map.

    All three are solid-angle-weighted relative RMS errors over the sphere (RGB together):

    * ``rel_error``: radiance, on the map area-downsampled to ``fit_height`` rows (what a
      ``K``-lobe mixture can be asked to reproduce);
    * ``rel_error_full``: radiance, on the map at up to 256 rows (small, very bright sources
      such as a sun dominate it: an SG lobe spreads their energy over a wider cone);
    * ``irradiance_rel_error``: cosine-convolved irradiance, :func:`sg_irradiance` against the
      brute-force convolution of the 64-row map (texels of 2.8 degrees; the clamped-cosine
      kernel is smooth at that scale), on a 32 x 64 equirect grid of normals.

    Args:
        P: ``(K, 7)`` raw lobes.
        equirect: ``(H, W, 3)`` linear map (numpy or torch).
        fit_height: rows of the map ``rel_error`` is measured on.

    Returns:
        ``{"rel_error", "rel_error_full", "irradiance_rel_error"}`` floats.
    """
    image = torch.as_tensor(np.asarray(equirect) if not isinstance(equirect, torch.Tensor) else equirect)
    image = image.detach().to(torch.float32).cpu()
    P = P.detach().to(torch.float32).cpu()
    out = {}
    for key, rows in (("rel_error", fit_height), ("rel_error_full", 256)):
        ref = downsample_equirect(image, rows)
        h, w = ref.shape[:2]
        out[key] = round(_relative_rms(sg_eval(P, equirect_dirs(h, w)), ref, solid_angles(h, w)), 6)
    normals = equirect_dirs(32, 64)
    irr_map = map_irradiance(downsample_equirect(image, 64), normals.reshape(-1, 3)).reshape(32, 64, 3)
    out["irradiance_rel_error"] = round(_relative_rms(sg_irradiance(P, normals), irr_map, solid_angles(32, 64)), 6)
    return out


def normalise_exposure(lobes: torch.Tensor, target: float = 1.0) -> tuple[torch.Tensor, float]:
    """Scale SG amplitudes so that a white Lambertian surface's 95th-percentile radiance is ``target``.

    Returns:
        scaled (K, 7) lobes and the scale factor.
    """
    normals = fibonacci_sphere(256, dtype=lobes.dtype)
    irr = sg_irradiance(lobes, normals) / math.pi  # (256, 3)
    lum = irr @ torch.tensor([0.2126, 0.7152, 0.0722], dtype=lobes.dtype)
    level = float(torch.quantile(lum, 0.95))
    scale = target / max(level, 1e-8)
    out = lobes.clone()
    out[:, 4:7] = out[:, 4:7] * scale
    return out, scale


def neutral_light(lobes: torch.Tensor, exposure: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """A fitted light in the gauge the prior's data uses: grey on average, at ``exposure``.

    One photo fixes only the product of albedo and light per channel: ``(a / g) x (E g)`` shades a
    diffuse pixel as ``a x E`` for any ``g > 0``, so a fit can trade a warm light for pale skin. This
    picks the light that is grey on average (its mean irradiance over the sphere equal in the three
    channels, the grey-world assumption) and exposed as the environments the data and the studio use
    (:func:`normalise_exposure`), and returns the per-channel factor that carries the rest into the
    albedo.

    Args:
        lobes: ``(K, 7)`` raw lobes.
        exposure: a white Lambertian surface's 95th-percentile radiance under the result.

    Returns:
        ``(lobes (K, 7), gain (3,))``: an albedo ``a * gain`` under the new lobes shades (diffusely)
        as ``a`` under the given ones.
    """
    normals = fibonacci_sphere(1024, dtype=lobes.dtype)
    before = sg_irradiance(lobes, normals).mean(0).clamp_min(1e-8)
    grey = lobes.clone()
    grey[:, 4:7] = lobes[:, 4:7] * (before.mean() / before)
    grey, _ = normalise_exposure(grey, exposure)
    return grey, before / sg_irradiance(grey, normals).mean(0).clamp_min(1e-8)


def lobe_groups(lobes: torch.Tensor, n_single: int) -> list[torch.Tensor]:
    """Split the lobes into shadow groups: each of the ``n_single`` strongest alone, the rest together.

    Returns:
        list of index tensors (empty groups dropped).
    """
    energy = sg_integral(lobes).abs().sum(dim=-1)
    order = torch.argsort(energy, descending=True)
    groups = [order[i : i + 1] for i in range(min(n_single, len(order)))]
    if len(order) > n_single:
        groups.append(order[n_single:])
    return groups
