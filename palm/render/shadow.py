"""Shadows of an SG environment on a mesh: per-point visibility of lobe groups, and shading with it.

An SG light has tens of lobes; shadow-mapping each would cost one shadow map per lobe and still
miss the broad ones. Instead the lobes are split into groups (:func:`palm.render.sg.lobe_groups`:
the strongest alone, the rest together) and each group ``g`` gets one visibility per point,

    V_g(x) = sum_d S_g(w_d) c_d(x) vis_d(x) / sum_d S_g(w_d) c_d(x),

over shadow directions ``w_d`` (:func:`shadow_directions`: the strongest lobes' axes and a
Fibonacci sphere), with the group's radiance ``S_g(w) = sum_{k in g} mean(mu_k) exp(lambda_k
(w . xi_k - 1))``, the clamped cosine ``c_d(x) = max(n(x) . w_d, 0)`` and the binary shadow-map
visibility ``vis_d(x)`` of :func:`palm.render.raster.shadow_visibility`; 1 where the group does
not light the point. Shading is linear in the lobes, so the shadowed radiance is
``sum_g V_g(x) shade_sg(x, lobes[g])`` (:func:`shade_groups`).

The synthetic data generator and the raster renderer of avatars share this.
"""

from __future__ import annotations

import torch

from palm.render.brdf import shade_sg
from palm.render.raster import cluster_mesh, shadow_visibility
from palm.render.sg import fibonacci_sphere, lobe_groups, sg_integral


def shadow_directions(lobes: torch.Tensor, n_axes: int, n_uniform: int) -> torch.Tensor:
    """Directions tested for shadows: the axes of the ``n_axes`` strongest lobes + a Fibonacci sphere.

    Args:
        lobes: (K, 7) raw SG lobes.

    Returns:
        (D, 3) unit directions, ``D = min(n_axes, K) + n_uniform``.
    """
    xi = lobes[:, :3] / lobes[:, :3].norm(dim=-1, keepdim=True).clamp(min=1e-12)
    energy = sg_integral(lobes).abs().sum(dim=-1)  # (K,)
    top = torch.argsort(energy, descending=True)[: min(n_axes, lobes.shape[0])]
    return torch.cat([xi[top], fibonacci_sphere(n_uniform, dtype=lobes.dtype).to(lobes.device)], dim=0)


def group_visibility(
    points: torch.Tensor,
    normals: torch.Tensor,
    occluder_vertices: torch.Tensor,
    occluder_faces: torch.Tensor,
    lobes: torch.Tensor,
    groups: list[torch.Tensor],
    n_axes: int = 16,
    n_uniform: int = 32,
    resolution: int = 96,
    bias_texels: float = 2.5,
) -> torch.Tensor:
    """Visibility of each lobe group at surface points (module notes).

    Args:
        points: (N, 3) surface points. normals: (N, 3) unit normals there.
        occluder_vertices: (V, 3), occluder_faces: (F, 3) long: the shadow-casting mesh.
        lobes: (K, 7) raw SG lobes. groups: index tensors into ``lobes``.
        n_axes, n_uniform: shadow directions (:func:`shadow_directions`).
        resolution, bias_texels: shadow-map side and depth bias (:func:`shadow_visibility`).

    Returns:
        (N, G) in [0, 1].
    """
    dirs = shadow_directions(lobes, n_axes, n_uniform)  # (D, 3)
    vis = shadow_visibility(points, normals, occluder_vertices, occluder_faces, dirs, resolution=resolution,
                            bias_texels=bias_texels)  # (N, D)
    xi = lobes[:, :3] / lobes[:, :3].norm(dim=-1, keepdim=True).clamp(min=1e-12)
    lam = lobes[:, 3:4].abs()
    amp = lobes[:, 4:7].abs().mean(dim=-1, keepdim=True)
    radiance = amp * torch.exp(lam * (xi @ dirs.T - 1.0))  # (K, D)
    shape = torch.stack([radiance[g].sum(0) for g in groups])  # (G, D)
    cos = (normals @ dirs.T).clamp(min=0)  # (N, D)
    den = cos @ shape.T  # (N, G)
    num = (cos * vis) @ shape.T
    return torch.where(
        den > 1e-12 * shape.sum(-1).clamp(min=1e-30), num / den.clamp(min=1e-30), torch.ones_like(den)
    ).clamp(0.0, 1.0)


def mesh_group_visibility(
    vertices: torch.Tensor, normals: torch.Tensor, faces: torch.Tensor, lobes: torch.Tensor, n_single: int = 7,
    proxy_cell: float = 0.003,
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Lobe groups of ``lobes`` and the per-vertex visibility of each on a closed mesh.

    The mesh casts its shadows through a vertex-clustered proxy (:func:`palm.render.raster.cluster_mesh`,
    ``proxy_cell`` metres) to keep the shadow maps cheap.

    Args:
        vertices: (V, 3) posed positions; normals: (V, 3) unit; faces: (F, 3) long.
        lobes: (K, 7). n_single: lobes that get a group of their own.

    Returns:
        ``(groups, visibility (V, G))``.
    """
    groups = lobe_groups(lobes, n_single)
    proxy_v, proxy_f = cluster_mesh(vertices, faces, proxy_cell)
    return groups, group_visibility(vertices, normals, proxy_v, proxy_f, lobes, groups)


def shade_groups(
    normal: torch.Tensor,
    view: torch.Tensor,
    albedo: torch.Tensor,
    roughness: torch.Tensor,
    metallic: torch.Tensor,
    lobes: torch.Tensor,
    groups: list[torch.Tensor],
    visibility: torch.Tensor,
) -> torch.Tensor:
    """Shadowed SG shading ``sum_g V_g shade_sg(n, v, material, lobes[g])``.

    Args:
        normal, view: (N, 3) unit; albedo: (N, 3) linear; roughness, metallic: (N, 1).
        lobes: (K, 7); groups: index tensors; visibility: (N, G).

    Returns:
        (N, 3) linear radiance toward the camera.
    """
    out = torch.zeros_like(albedo)
    for g, idx in enumerate(groups):
        if not bool((visibility[:, g] > 0).any()):
            continue  # the group lights none of the points
        out = out + visibility[:, g : g + 1] * shade_sg(normal, view, albedo, roughness, metallic, lobes[idx])
    return out
