"""The sRGB transfer function (IEC 61966-2-1), the one place the project converts colour encodings.

All shading is linear RGB; PNGs on disk are sRGB. Both functions accept a ``torch.Tensor`` or a
``numpy.ndarray`` of any shape and return the same kind (elementwise, no clamping to ``[0, 1]``:
callers clamp, as the spec's final-image formula ``clamp(sRGB(C), 0, 1)`` does). Negative inputs
follow the linear segment, so the functions are continuous, monotonic and have finite gradients
everywhere.
"""

from __future__ import annotations

from typing import Any

#: Linear-segment threshold of the OETF (linear side) and of the EOTF (encoded side).
_LINEAR_KNEE = 0.0031308
_ENCODED_KNEE = 0.04045


def linear_to_srgb(x: Any) -> Any:
    """Encode linear RGB with the piecewise sRGB OETF.

    ``12.92 x`` for ``x <= 0.0031308``, else ``1.055 x^(1/2.4) - 0.055``.

    Args:
        x: linear values, any shape (torch tensor or numpy array).

    Returns:
        sRGB-encoded values, same shape and type.
    """
    if _is_torch(x):
        import torch

        curve = 1.055 * torch.clamp(x, min=_LINEAR_KNEE) ** (1.0 / 2.4) - 0.055
        return torch.where(x <= _LINEAR_KNEE, 12.92 * x, curve)
    import numpy as np

    x = np.asarray(x)
    curve = 1.055 * np.maximum(x, _LINEAR_KNEE) ** (1.0 / 2.4) - 0.055
    return np.where(x <= _LINEAR_KNEE, 12.92 * x, curve).astype(_float_dtype(x), copy=False)


def srgb_to_linear(x: Any) -> Any:
    """Decode sRGB values to linear RGB (the inverse of :func:`linear_to_srgb`).

    ``x / 12.92`` for ``x <= 0.04045``, else ``((x + 0.055) / 1.055)^2.4``.

    Args:
        x: sRGB-encoded values, any shape (torch tensor or numpy array).

    Returns:
        Linear values, same shape and type.
    """
    if _is_torch(x):
        import torch

        curve = ((torch.clamp(x, min=_ENCODED_KNEE) + 0.055) / 1.055) ** 2.4
        return torch.where(x <= _ENCODED_KNEE, x / 12.92, curve)
    import numpy as np

    x = np.asarray(x)
    curve = ((np.maximum(x, _ENCODED_KNEE) + 0.055) / 1.055) ** 2.4
    return np.where(x <= _ENCODED_KNEE, x / 12.92, curve).astype(_float_dtype(x), copy=False)


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch")


def _float_dtype(x: Any) -> Any:
    import numpy as np

    return x.dtype if np.issubdtype(x.dtype, np.floating) else np.float64
