"""Pre-integrated SG lighting for the viewport: irradiance and prefiltered specular equirect maps.

The exact viewport shader evaluates the engine's ``palm.render.brdf.shade_sg`` per pixel, a loop
over all lobes (64) with a clamped-cosine integral each. The pre-integrated shader instead reads
textures computed here (torch, CPU) when the environment changes; its rotation about +y is a
shader uniform, so turning the environment recomputes nothing.

* Diffuse: ``E(n) = sg_irradiance(P, n)`` on an equirect grid (exact at the texels).
* Specular: ``shade_sg`` integrates the light against the warped GGX lobe ``G(w) =
  exp(s_w (w.r - 1))`` times the clamped cosine ``max(w.n, 0)``. The cosine is written as an SG
  around ``n`` (sharpness :data:`COSINE_SG_SHARPNESS`); the product of the two is one SG with axis
  ``a = (s_w r + c n) / d`` and sharpness ``d = |s_w r + c n|``. The texture layer of sharpness
  ``d`` holds the environment's mean radiance under that SG,
  ``M(a, d) = int E(w) exp(d (w.a - 1)) dw / int exp(d (w.a - 1)) dw`` (closed form per lobe, see
  :func:`palm.render.sg.sg_inner_product`), and the shader multiplies it by the exact
  ``sg_cosine_lobe(s_w, n.v)`` (the integral for a constant environment). So the approximation is
  exact for a constant environment, and ``M`` is looked up where the lobe actually points.
  Layers are log2-spaced in ``d``; the shader interpolates between the two nearest.

Equirect convention (``palm.render.envmap.dir_to_uv``): ``u = atan2(x, z)/2pi + 0.5``,
``v = asin(y)/pi + 0.5``, image row 0 = sky.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from palm.render.envmap import equirect_dirs
from palm.render.sg import sg_decode, sg_inner_product, sg_integral, sg_irradiance

#: Sharpness of the SG that stands for the clamped cosine ``max(w.n, 0)`` (its common fit).
COSINE_SG_SHARPNESS = 2.133
#: Specular layers: sharpness ``d = 2^(SPECULAR_LOG2_D0 + l)``, l = 0 .. SPECULAR_LAYERS - 1 (2 .. 512).
SPECULAR_LOG2_D0 = 1.0
SPECULAR_LAYERS = 9
IRRADIANCE_HEIGHT = 64
SPECULAR_HEIGHT = 128
#: Layers this blurry (sharpness <= 2^4) are computed at a quarter of the height and upsampled.
SMOOTH_LOG2_D = 4.0
#: Environments whose maps are kept (switching back to one of them costs nothing).
CACHE_SIZE = 8
_CACHE: dict[bytes, PreintegratedLight] = {}


@dataclass(frozen=True)
class PreintegratedLight:
    """Textures of one environment (not rotated).

    Attributes:
        irradiance: (H, 2H, 3) float32 ``sg_irradiance`` per direction, row 0 = sky.
        specular: (L, H', 2H', 3) float32 mean radiance under the SG of layer ``l``.
    """

    irradiance: np.ndarray
    specular: np.ndarray


def equirect_directions(height: int) -> torch.Tensor:
    """Unit directions of the texel centres of an (H, 2H) equirect image -> (H, 2H, 3), row 0 = sky."""
    return equirect_dirs(height, 2 * height)


def mean_radiance(lobes: torch.Tensor, axes: torch.Tensor, sharpness: float) -> torch.Tensor:
    """Mean radiance of the SG environment under the SG ``exp(d (w.a - 1))``.

    Args:
        lobes: (K, 7) raw SG lobes.
        axes: (N, 3) unit axes ``a``.
        sharpness: ``d``.

    Returns:
        (N, 3) linear RGB.
    """
    xi, lam, mu = sg_decode(lobes.float())
    d = torch.tensor(float(sharpness))
    out = [sg_inner_product(a[:, None, :], d, xi[None], lam[None]) @ mu for a in axes.split(8192)]  # (n, K) @ (K, 3)
    unit_lobe = torch.tensor([[0.0, 0.0, 1.0, float(sharpness), 1.0, 1.0, 1.0]])
    return torch.cat(out) / sg_integral(unit_lobe)[0, 0]


def _upsample_equirect(image: torch.Tensor, height: int) -> torch.Tensor:
    """Bilinear resize of an equirect (h, 2h, 3) image to (height, 2 height, 3), wrapping in longitude."""
    x = image.permute(2, 0, 1)[None]
    x = torch.cat([x[..., -1:], x, x[..., :1]], dim=-1)  # one texel of wrap on each side
    scale = height / image.shape[0]
    out = torch.nn.functional.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)
    pad = round(scale)
    return out[0, :, :, pad:pad + 2 * height].permute(1, 2, 0)


def preintegrate(lobes: np.ndarray, irradiance_height: int = IRRADIANCE_HEIGHT,
                 specular_height: int = SPECULAR_HEIGHT) -> PreintegratedLight:
    """The irradiance and specular textures of an (unrotated) environment ``lobes`` (K, 7).

    The last :data:`CACHE_SIZE` environments are remembered.
    """
    p = torch.as_tensor(np.asarray(lobes, np.float32)).reshape(-1, 7)
    key = p.numpy().tobytes() + bytes(f"{irradiance_height},{specular_height}", "ascii")
    if key in _CACHE:
        return _CACHE[key]
    with torch.no_grad():
        dirs = equirect_directions(irradiance_height)
        irradiance = sg_irradiance(p, dirs.reshape(-1, 3)).reshape(*dirs.shape[:2], 3)
        axes = {h: equirect_directions(h).reshape(-1, 3) for h in (specular_height, specular_height // 4)}
        layers = []
        for layer in range(SPECULAR_LAYERS):
            log2_d = SPECULAR_LOG2_D0 + layer
            h = specular_height // 4 if log2_d <= SMOOTH_LOG2_D else specular_height
            image = mean_radiance(p, axes[h], 2.0**log2_d).reshape(h, 2 * h, 3)
            layers.append(image if h == specular_height else _upsample_equirect(image, specular_height))
    maps = PreintegratedLight(irradiance.numpy().astype(np.float32), torch.stack(layers).numpy().astype(np.float32))
    while len(_CACHE) >= CACHE_SIZE:
        _CACHE.pop(next(iter(_CACHE)))
    _CACHE[key] = maps
    return maps
