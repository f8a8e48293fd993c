"""Real spherical harmonics up to band 3 ("degree 4" in tiny-cuda-nn's naming: 16 coefficients).

The basis is orthonormal over the unit sphere (integral of ``Y_i Y_j`` is ``delta_ij``), with the
Condon-Shortley sign convention of the usual graphics tables. :func:`sh_encode_unit` takes
directions fed as ``(w + 1) / 2`` (tiny-cuda-nn's SphericalHarmonics input convention).
"""

from __future__ import annotations

import math

import torch

#: Coefficient slices of the bands ``l = 0..3``.
BAND_SLICES = ((0, 1), (1, 4), (4, 9), (9, 16))


def n_coeffs(degree: int) -> int:
    """Coefficients of a "degree" ``degree`` encoding (bands ``0..degree-1``): ``degree**2``."""
    return degree * degree


def sh_basis(dirs: torch.Tensor, degree: int = 4) -> torch.Tensor:
    """Evaluate the real SH basis.

    Args:
        dirs: ``(..., 3)`` unit directions.
        degree: number of bands, 1..4.

    Returns:
        ``(..., degree**2)`` coefficients, band-major.
    """
    if not 1 <= degree <= 4:
        raise ValueError(f"SH degree must be 1..4, got {degree}")
    x, y, z = dirs.unbind(-1)
    out = [torch.full_like(x, 0.28209479177387814)]
    if degree > 1:
        c1 = 0.4886025119029199
        out += [-c1 * y, c1 * z, -c1 * x]
    if degree > 2:
        xx, yy, zz = x * x, y * y, z * z
        out += [
            1.0925484305920792 * x * y,
            -1.0925484305920792 * y * z,
            0.31539156525252005 * (3.0 * zz - 1.0),
            -1.0925484305920792 * x * z,
            0.5462742152960396 * (xx - yy),
        ]
    if degree > 3:
        out += [
            -0.5900435899266435 * y * (3.0 * xx - yy),
            2.890611442640554 * x * y * z,
            -0.4570457994644658 * y * (5.0 * zz - 1.0),
            0.3731763325901154 * z * (5.0 * zz - 3.0),
            -0.4570457994644658 * x * (5.0 * zz - 1.0),
            1.445305721320277 * z * (xx - yy),
            -0.5900435899266435 * x * (xx - 3.0 * yy),
        ]
    return torch.stack(out, dim=-1)


def sh_encode_unit(u: torch.Tensor, degree: int = 4) -> torch.Tensor:
    """SH of directions given in ``[0, 1]^3`` as ``u = (w + 1) / 2``: ``(..., 3) -> (..., degree**2)``."""
    return sh_basis(2.0 * u - 1.0, degree)


def sh_band_weights(step: int | None, start_step: int, full_step: int, degree: int = 4) -> torch.Tensor:
    """Progressive band weights ``w_l = (1 - cos(pi clamp(alpha - l, 0, 1))) / 2`` (spec section 5.4).

    ``alpha = degree * max(t - start_step, 0) / (full_step - start_step)``; ``step=None`` (inference,
    personalisation) gives all ones.

    Returns:
        ``(degree,)`` float32 weights, one per band.
    """
    if step is None:
        return torch.ones(degree)
    alpha = degree * max(step - start_step, 0) / max(full_step - start_step, 1)
    bands = torch.arange(degree, dtype=torch.float64)
    w = (1.0 - torch.cos(math.pi * torch.clamp(alpha - bands, 0.0, 1.0))) / 2.0
    return w.float()


def expand_band_weights(band_weights: torch.Tensor) -> torch.Tensor:
    """Per-band weights ``(degree,)`` -> per-coefficient weights ``(degree**2,)`` (band ``l`` has ``2l+1``)."""
    degree = band_weights.shape[0]
    counts = torch.tensor([2 * band + 1 for band in range(degree)], device=band_weights.device)
    return band_weights.repeat_interleave(counts)
