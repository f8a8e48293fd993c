"""The simplified Disney BRDF of PALM-Net (spec section 6.2) and its real-time SG shading.

Notation: ``n`` normal, ``v`` unit direction to the camera, ``l`` unit direction to the light,
``h = normalize(v + l)``, ``alpha = roughness`` (used directly as the GGX alpha, not squared),
``m`` metallic, ``a`` albedo (linear RGB). Every function returns the BRDF **times the cosine**
``max(n.l, 0)``; the combination the renderer uses is

    brdf_cos = (1 - m) a * diffuse_cos + specular_cos.

Shapes: ``normal``, ``view``, ``light`` ``(..., 3)`` unit vectors; ``albedo`` ``(..., 3)``;
``roughness`` and ``metallic`` ``(..., 1)`` or ``(...)``; all broadcastable. Outputs ``(..., 3)``
(``diffuse_cos``: ``(..., 1)``).

:func:`shade_sg` integrates the BRDF against an SG environment in closed form; the studio's
real-time viewport shader mirrors it line for line.
"""

from __future__ import annotations

import math

import torch

from palm.render.sg import sg_cosine_lobe, sg_decode, sg_irradiance

#: Schlick-Fresnel exponent approximation ``2^((A c + B) c)`` (spherical-Gaussian / Unreal fit).
FRESNEL_A = -5.55473
FRESNEL_B = -6.98316
#: Dielectric reflectance at normal incidence.
F0_DIELECTRIC = 0.04
#: Cosines at or below this are "below the horizon" (spec).
COS_EPS = 1e-6


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``(..., 3) x (..., 3) -> (..., 1)``."""
    return (a * b).sum(dim=-1, keepdim=True)


def _channel(x: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor:
    """A per-point scalar as ``(..., 1)``: accepts ``(...)``, ``(..., 1)`` or a Python float."""
    x = torch.as_tensor(x, dtype=like.dtype, device=like.device)
    if x.ndim == like.ndim - 1:
        x = x[..., None]
    return x


def ggx_d(cos_nh: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """GGX / Trowbridge-Reitz NDF, ``alpha^2 / (pi ((n.h)^2 (alpha^2 - 1) + 1)^2 + 1e-6)``."""
    a2 = alpha * alpha
    return a2 / (math.pi * (cos_nh * cos_nh * (a2 - 1.0) + 1.0) ** 2 + 1e-6)


def smith_g1(cos_nx: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Schlick-Smith masking, ``(n.x) / ((n.x)(1 - k) + k)``, ``k = (alpha + 1)^2 / 8`` (0 if denominator <= 1e-6)."""
    k = (alpha + 1.0) ** 2 / 8.0
    den = cos_nx * (1.0 - k) + k
    return torch.where(den > 1e-6, cos_nx / den.clamp_min(1e-6), torch.zeros_like(den))


def fresnel_schlick(cos_vh: torch.Tensor, f0: torch.Tensor) -> torch.Tensor:
    """``F0 + (1 - F0) 2^((-5.55473 c - 6.98316) c)`` with ``c = |v.h|``."""
    c = cos_vh.abs()
    return f0 + (1.0 - f0) * torch.exp2((FRESNEL_A * c + FRESNEL_B) * c)


def base_reflectance(albedo: torch.Tensor, metallic: torch.Tensor) -> torch.Tensor:
    """``F0 = 0.04 (1 - m) + a m`` ``(..., 3)``."""
    return F0_DIELECTRIC * (1.0 - metallic) + albedo * metallic


def diffuse_cos(normal: torch.Tensor, light: torch.Tensor) -> torch.Tensor:
    """Lambert term with cosine, ``max(n.l, 0) / pi``; multiply by ``k_d = (1 - m) a``.

    Returns:
        ``(..., 1)``.
    """
    return _dot(normal, light).clamp_min(0.0) / math.pi


def specular_cos(
    normal: torch.Tensor,
    view: torch.Tensor,
    light: torch.Tensor,
    albedo: torch.Tensor,
    roughness: torch.Tensor | float,
    metallic: torch.Tensor | float,
) -> torch.Tensor:
    """GGX specular with cosine, ``D(h) G1(v) G1(l) F(v.h) / (4 (n.v) + 1e-6)``.

    Zero unless ``n.v > 1e-6`` and ``n.l > 1e-6``.

    Returns:
        ``(..., 3)``.
    """
    alpha = _channel(roughness, normal)
    m = _channel(metallic, normal)
    half = view + light
    half = half / half.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    cos_nv = _dot(normal, view)
    cos_nl = _dot(normal, light)
    d = ggx_d(_dot(normal, half), alpha)
    g = smith_g1(cos_nv, alpha) * smith_g1(cos_nl, alpha)
    f = fresnel_schlick(_dot(view, half), base_reflectance(albedo, m))
    value = d * g * f / (4.0 * cos_nv + 1e-6)
    visible = (cos_nv > COS_EPS) & (cos_nl > COS_EPS)
    return torch.where(visible, value, torch.zeros_like(value))


def brdf_cos(
    normal: torch.Tensor,
    view: torch.Tensor,
    light: torch.Tensor,
    albedo: torch.Tensor,
    roughness: torch.Tensor | float,
    metallic: torch.Tensor | float,
) -> torch.Tensor:
    """The full BRDF times cosine, ``(1 - m) a max(n.l, 0)/pi + f_s cos``.

    Returns:
        ``(..., 3)``.
    """
    m = _channel(metallic, normal)
    return (1.0 - m) * albedo * diffuse_cos(normal, light) + specular_cos(normal, view, light, albedo, roughness, m)


def shade_sg(
    normal: torch.Tensor,
    view: torch.Tensor,
    albedo: torch.Tensor,
    roughness: torch.Tensor | float,
    metallic: torch.Tensor | float,
    P: torch.Tensor,
) -> torch.Tensor:
    """Outgoing radiance under an SG environment (no visibility), deterministic and closed form.

    * Diffuse: ``(1 - m) a / pi * sg_irradiance(P, n)``.
    * Specular (spherical warping, Wang et al. 2009): the GGX NDF is approximated by an SG around
      ``n`` with sharpness ``s = 2 / alpha^2`` and the amplitude that keeps it normalised,
      ``int D (n.h) dh = 1``, i.e. ``1 / (2 pi (1/s - 1/s^2 + e^{-s}/s^2))`` (``~ 1/(pi alpha^2)``
      for smooth surfaces). It is warped into the light domain: axis ``r = reflect(-v, n)``,
      sharpness ``s / (4 max(n.v, 1e-4))``. Its product with each light lobe is again an SG
      (axis ``(s_w r + lam_k xi_k)/d``, sharpness ``d = |s_w r + lam_k xi_k|``, amplitude
      ``mu_k e^{d - s_w - lam_k}``), integrated against the clamped cosine ``max(n.l, 0)`` in
      closed form (:func:`~palm.render.sg.sg_cosine_lobe`, which clips the lobe at the
      horizon). The other factors are taken at the lobe centre, where ``h = n`` and ``n.r = n.v``:
      ``F(c = n.v) G1(v) / ((4 n.v + 1e-6) ((n.v)(1 - k) + k))`` (the ``n.l`` of ``G1(l)`` is the
      clamped cosine above). Zero when ``n.v <= 1e-6``.

    Args:
        normal: ``(..., 3)`` unit normals.
        view: ``(..., 3)`` unit directions to the camera.
        albedo: ``(..., 3)`` linear RGB.
        roughness: ``(..., 1)`` or ``(...)`` GGX alpha.
        metallic: ``(..., 1)`` or ``(...)``.
        P: ``(K, 7)`` raw SG lobes.

    Returns:
        ``(..., 3)`` linear RGB radiance towards the camera.
    """
    alpha = _channel(roughness, normal).clamp_min(1e-3)
    m = _channel(metallic, normal)
    diffuse = (1.0 - m) * albedo / math.pi * sg_irradiance(P, normal)

    cos_nv = _dot(normal, view)  # (..., 1)
    ndf_sharpness = 2.0 / (alpha * alpha)  # (..., 1)
    s = ndf_sharpness
    ndf_amplitude = 1.0 / (2.0 * math.pi * (1.0 / s - (1.0 - torch.exp(-s)) / (s * s)))
    reflected = 2.0 * cos_nv * normal - view  # (..., 3)
    warped_sharpness = ndf_sharpness / (4.0 * cos_nv.clamp_min(1e-4))  # (..., 1)

    xi, lam, mu = sg_decode(P)  # (K, 3), (K,), (K, 3)
    combined = warped_sharpness[..., None] * reflected[..., None, :] + lam[:, None] * xi  # (..., K, 3)
    d = combined.norm(dim=-1).clamp_min(1e-6)  # (..., K)
    cos_axis_n = (combined * normal[..., None, :]).sum(dim=-1) / d  # (..., K)
    overlap = torch.exp(d - warped_sharpness - lam) * sg_cosine_lobe(d, cos_axis_n)  # (..., K)
    light = ndf_amplitude * (overlap @ mu)  # (..., 3)

    k = (alpha + 1.0) ** 2 / 8.0
    g1_v = smith_g1(cos_nv, alpha)
    f = fresnel_schlick(cos_nv, base_reflectance(albedo, m))
    specular = light * f * g1_v / ((4.0 * cos_nv + 1e-6) * (cos_nv * (1.0 - k) + k))
    specular = torch.where(cos_nv > COS_EPS, specular, torch.zeros_like(specular))
    return diffuse + specular
