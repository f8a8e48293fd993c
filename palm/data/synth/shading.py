"""Shadows, lighting and the reference renderer of one view of the synthetic set.

See :mod:`palm.data.synth` for what a pixel is: the engine's BRDF under the frame's SG lobes,
one shadow factor per lobe group, anti-aliased against the background environment.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from palm.data.synth.config import SynthConfig
from palm.data.types import CameraParams
from palm.errors import PalmError
from palm.render.shadow import shade_groups


def welded_normals(vertices: torch.Tensor, hand: Any) -> torch.Tensor:
    """(B, V, 3) smooth vertex normals, averaged across UV seams (welded) when the rig says how."""
    from palm.render.raster import vertex_normals

    weld = getattr(hand, "weld_index", None)
    if weld is None:
        return vertex_normals(vertices, hand.faces)
    weld = weld.to(vertices.device)
    n_groups = int(weld.max()) + 1
    faces_w = weld[hand.faces.to(vertices.device)]
    pos = torch.zeros(vertices.shape[0], n_groups, 3, dtype=vertices.dtype, device=vertices.device)
    pos[:, weld] = vertices
    return vertex_normals(pos, faces_w)[:, weld]


def uv_gradients(vertices: torch.Tensor, faces: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """Surface gradients of the texture coordinates, per vertex (area-weighted over its faces).

    On a triangle with corners ``p_i`` and values ``u_i`` the gradient of the linear ``u`` is
    ``sum_i u_i (n x e_i) / (2 A)`` with ``e_i`` the edge opposite corner ``i`` (counter-clockwise),
    ``n`` the unit normal and ``A`` the area.

    Args:
        vertices: (V, 3) (any pose: the gradients follow the surface). faces: (F, 3). uv: (V, 2).

    Returns:
        (V, 6): ``grad u`` (3) then ``grad v`` (3), in units of UV per metre.
    """
    p = vertices[faces]  # (F, 3, 3)
    q = uv.to(vertices.dtype)[faces]  # (F, 3, 2)
    cross = torch.linalg.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0])
    twice_area = cross.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    nrm = cross / twice_area
    edges = torch.stack([p[:, 2] - p[:, 1], p[:, 0] - p[:, 2], p[:, 1] - p[:, 0]], dim=1)  # opposite each corner
    perp = torch.linalg.cross(nrm[:, None].expand_as(edges), edges)  # (F, 3, 3)
    grad = torch.einsum("fkc,fkd->fcd", q, perp) / twice_area[:, None]  # (F, 2, 3)
    acc = torch.zeros(vertices.shape[0], 2, 3, dtype=vertices.dtype, device=vertices.device)
    weighted = (grad * twice_area[:, None]).reshape(-1, 1, 2, 3).expand(-1, 3, 2, 3).reshape(-1, 2, 3)
    acc.index_add_(0, faces.reshape(-1), weighted)
    total = torch.zeros(vertices.shape[0], dtype=vertices.dtype, device=vertices.device)
    total.index_add_(0, faces.reshape(-1), twice_area.expand(-1, 3).reshape(-1))
    return (acc / total.clamp(min=1e-12)[:, None, None]).reshape(-1, 6)


def bumped_normals(normal: torch.Tensor, grad_uv: torch.Tensor, bump: torch.Tensor) -> torch.Tensor:
    """Normals of a surface displaced by a height ``h`` along its normal (first order):
    ``n' = normalize(n - grad h)`` with ``grad h = h_u grad u + h_v grad v``.

    Args:
        normal: (N, 3) unit. grad_uv: (N, 6) from :func:`uv_gradients`. bump: (N, 2) ``(h_u, h_v)``.

    Returns:
        (N, 3) unit normals.
    """
    grad_h = bump[:, :1] * grad_uv[:, 0:3] + bump[:, 1:2] * grad_uv[:, 3:6]
    grad_h = grad_h - (grad_h * normal).sum(-1, keepdim=True) * normal  # stay in the tangent plane
    out = normal - grad_h
    return out / out.norm(dim=-1, keepdim=True).clamp(min=1e-12)


def lobe_visibility(
    vertices: torch.Tensor,
    normals: torch.Tensor,
    hand: Any,
    lobes: torch.Tensor,
    groups: list[torch.Tensor],
    cfg: SynthConfig,
) -> torch.Tensor:
    """Per-vertex visibility of each lobe group (see the module notes).

    ``V_g(x) = sum_d S_g(w_d) c_d(x) vis_d(x) / sum_d S_g(w_d) c_d(x)`` over the shadow directions
    ``w_d`` (:func:`palm.render.shadow.shadow_directions`), with the group's radiance
    ``S_g(w) = sum_{k in g} mean(mu_k) exp(lambda_k (w . xi_k - 1))``, the cosine
    ``c_d(x) = max(n(x) . w_d, 0)`` and the binary shadow-map visibility ``vis_d(x)``; 1 where the
    denominator vanishes (the group does not light the point).

    Args:
        vertices: (V, 3) posed world vertices. normals: (V, 3). lobes: (K, 7). groups: index tensors.

    Returns:
        (V, G) in [0, 1].
    """
    from palm.render.raster import cluster_mesh
    from palm.render.shadow import group_visibility

    sealed_v, sealed_f = hand.sealed_mesh(vertices)
    proxy_v, proxy_f = cluster_mesh(sealed_v, sealed_f, cfg.shadow_proxy_cell)
    return group_visibility(vertices, normals, proxy_v, proxy_f, lobes, groups, cfg.shadow_lobe_axes,
                            cfg.shadow_uniform_dirs, cfg.shadow_resolution, cfg.shadow_bias_texels)


# ---------------------------------------------------------------------------------------------
# Shading and rendering
# ---------------------------------------------------------------------------------------------


@dataclass
class FrameScene:
    """A posed subject under one light, shared by all views of a frame."""

    vertices: torch.Tensor  # (V, 3) world
    normals: torch.Tensor  # (V, 3)
    faces: torch.Tensor  # (F + S, 3): rig faces then the wrist seal
    n_rig_faces: int
    uv: torch.Tensor | None
    vertex_albedo: torch.Tensor  # (V, 3)
    vertex_roughness: torch.Tensor  # (V,)
    albedo_map: torch.Tensor | None
    roughness_map: torch.Tensor | None
    metallic: float
    lobes: torch.Tensor  # (K, 7)
    groups: list[torch.Tensor]
    visibility: torch.Tensor  # (V, G)
    background: Any  # callable dirs (N,3) -> (N,3) linear radiance
    bump_map: torch.Tensor | None = None  # (T, T, 2) dh/du, dh/dv (metres per unit UV)
    uv_grad: torch.Tensor | None = None  # (V, 6) posed grad u, grad v (see uv_gradients)


def _surface(
    scene: FrameScene, K: np.ndarray, Rt: torch.Tensor, centre: torch.Tensor, h: int, w: int
) -> dict[str, torch.Tensor]:
    """Rasterise the scene and gather the shading inputs of every covered pixel (row-major)."""
    from palm.render.raster import interpolate, rasterize_pinhole, sample_texture

    dev, dt = scene.vertices.device, scene.vertices.dtype
    frags = rasterize_pinhole(scene.vertices, scene.faces, torch.as_tensor(K, dtype=dt, device=dev), Rt, h, w)
    mask = frags.mask[0]
    fid = frags.face_id[0][mask]
    seal = fid >= scene.n_rig_faces
    attrs = [scene.vertices, scene.normals, scene.vertex_albedo, scene.vertex_roughness[:, None], scene.visibility]
    bumped = scene.uv is not None and scene.bump_map is not None and scene.uv_grad is not None
    if scene.uv is not None:
        attrs.append(scene.uv)
    if bumped:
        attrs.append(scene.uv_grad)
    packed = interpolate(torch.cat(attrs, dim=-1), scene.faces, frags)[0][mask]
    G = scene.visibility.shape[1]
    pos, nrm = packed[:, 0:3], packed[:, 3:6]
    alb, rough, vis = packed[:, 6:9], packed[:, 9:10], packed[:, 10 : 10 + G]
    if scene.uv is not None and scene.albedo_map is not None:
        uv = packed[:, 10 + G : 12 + G]
        alb = torch.where(seal[:, None], alb, sample_texture(scene.albedo_map, uv))
        rough = torch.where(seal[:, None], rough, sample_texture(scene.roughness_map, uv))
    tri = scene.vertices[scene.faces[fid]]
    flat = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    nrm = torch.where(seal[:, None], flat, nrm)
    nrm = nrm / nrm.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    geo = nrm
    if bumped:
        uv = packed[:, 10 + G : 12 + G]
        detail = bumped_normals(nrm, packed[:, 12 + G : 18 + G], sample_texture(scene.bump_map, uv))
        nrm = torch.where(seal[:, None], nrm, detail)
    view = centre - pos
    view = view / view.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    return {
        "mask": mask,
        "normal": nrm,
        "geo_normal": geo,
        "albedo": alb,
        "roughness": rough,
        "vis": vis,
        "view": view,
        "depth": frags.depth[0][mask],
    }


def _shade(scene: FrameScene, surf: dict[str, torch.Tensor], select: torch.Tensor | None = None) -> torch.Tensor:
    """Radiance of the covered pixels of ``surf`` (or of the ``select`` subset of them)."""
    keys = ("normal", "view", "albedo", "roughness", "vis")
    n, v, a, r, vis = (surf[k] if select is None else surf[k][select] for k in keys)
    m = torch.full_like(r, scene.metallic)
    return shade_groups(n, v, a, r, m, scene.lobes, scene.groups, vis)


def render_view(scene: FrameScene, cam: CameraParams, supersample: int) -> dict[str, np.ndarray]:
    """Render one camera (see the module notes).

    Anti-aliasing: pixels whose ``supersample`` x ``supersample`` sub-pixel samples are all covered
    are shaded once at their centre; pixels partly covered average their shaded samples with the
    background samples (in linear RGB).

    Returns:
        ``rgb`` (H, W, 3) float32 linear, ``mask`` (H, W) bool, ``depth`` (H, W) metres (0 = bg),
        ``normal_gl`` (H, W, 3) (zeros on bg), ``albedo`` (H, W, 3) linear (zeros on bg),
        ``shade`` (H, W) grey preview of the registered hand.
    """
    from palm.render.rays import pixel_rays

    H, W = cam.height, cam.width
    dev, dt = scene.vertices.device, scene.vertices.dtype
    Rt = torch.as_tensor(cam.Rt, dtype=dt, device=dev)
    centre = torch.as_tensor(cam.centre, dtype=dt, device=dev)

    base = _surface(scene, cam.K, Rt, centre, H, W)
    mask = base["mask"]
    depth = torch.zeros(H, W, dtype=dt, device=dev)
    depth[mask] = base["depth"]
    n_cam = base["geo_normal"] @ Rt[:3, :3].T  # the registered mesh's normal (no relief detail)
    n_gl = torch.zeros(H, W, 3, dtype=dt, device=dev)
    n_gl[mask] = n_cam * torch.tensor([1.0, -1.0, -1.0], dtype=dt, device=dev)
    albedo = torch.zeros(H, W, 3, dtype=dt, device=dev)
    albedo[mask] = base["albedo"]
    shade = torch.zeros(H, W, dtype=dt, device=dev)
    shade[mask] = 0.25 + 0.7 * (base["geo_normal"] * base["view"]).sum(-1).clamp(min=0)

    s = max(1, int(supersample))
    _, dirs = pixel_rays(CameraParams(cam.K, cam.Rt, H, W).to_camera(dtype=dt).to(dev))
    rgb = scene.background(dirs).reshape(H, W, 3).to(dt)
    if s == 1:
        rgb[mask] = _shade(scene, base)
    else:
        Ks = cam.K.copy()
        Ks[:2] *= s
        fine = _surface(scene, Ks, Rt, centre, H * s, W * s)
        cover = fine["mask"].to(dt).reshape(H, s, W, s).mean(dim=(1, 3))
        full = (cover >= 1.0) & mask
        mixed = (cover > 0) & ~full
        rgb[full] = _shade(scene, base, full[mask])
        if bool(mixed.any()):
            # Sub-pixel samples of the mixed pixels: shade the covered ones, look up the background for the rest.
            pix_of_sample = torch.arange(H * W, device=dev).reshape(H, 1, W, 1).expand(H, s, W, s).reshape(H * s, W * s)
            in_mixed = mixed.reshape(-1)[pix_of_sample]  # (sH, sW)
            sel_fg = in_mixed[fine["mask"]]  # covered samples that belong to mixed pixels
            fg_pix = pix_of_sample[fine["mask"]][sel_fg]
            acc = torch.zeros(H * W, 3, dtype=dt, device=dev)
            acc.index_add_(0, fg_pix, _shade(scene, fine, sel_fg))
            bg_mask = in_mixed & ~fine["mask"]
            _, fine_dirs = pixel_rays(CameraParams(Ks, cam.Rt, H * s, W * s).to_camera(dtype=dt).to(dev))
            bg_pix = pix_of_sample[bg_mask]
            acc.index_add_(0, bg_pix, scene.background(fine_dirs[bg_mask.reshape(-1)]).to(dt))
            rgb.view(-1, 3)[mixed.reshape(-1)] = acc[mixed.reshape(-1)] / (s * s)
    return {
        "rgb": rgb.cpu().numpy().astype(np.float32),
        "mask": mask.cpu().numpy(),
        "depth": depth.cpu().numpy().astype(np.float32),
        "normal_gl": n_gl.cpu().numpy().astype(np.float32),
        "albedo": albedo.cpu().numpy().astype(np.float32),
        "shade": shade.cpu().numpy().astype(np.float32),
    }


# ---------------------------------------------------------------------------------------------
# Environments
# ---------------------------------------------------------------------------------------------


class Environments:
    """Loads each environment once: SG lobes and, where found, the source HDR for the background."""

    def __init__(self, names: tuple[str, ...] | None):
        from palm.render.environment import list_presets

        self.names = list(names) if names else list_presets()
        if not self.names:
            raise PalmError("assets/envmaps", "no environment presets installed (pass --envs with SG/HDR files)")
        self._cache: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = {}

    def get(self, name: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        if name not in self._cache:
            from palm.imageio import HDR_EXTENSIONS, load_hdr
            from palm.render.environment import load_environment
            from palm.render.envmap import downsample_equirect

            loaded = load_environment(name)
            lobes, info = loaded if isinstance(loaded, tuple) else (loaded, {})
            hdr = None
            for candidate in self._hdr_candidates(name, info):
                if candidate.suffix.lower() in HDR_EXTENSIONS and candidate.is_file():
                    hdr = downsample_equirect(load_hdr(candidate), 128)
                    break
            self._cache[name] = (torch.as_tensor(lobes, dtype=torch.float32), hdr)
        return self._cache[name]

    @staticmethod
    def _hdr_candidates(name: str, info: dict[str, Any]) -> list[Path]:
        from palm.assets import ROOT

        out = [Path(name)]
        for key in ("path", "source", "source_path", "hdr"):
            if isinstance(info.get(key), str):
                p = Path(info[key])
                out += [p, ROOT.parent / "shared" / "data" / "hdri" / "blender_studiolights" / p.name]
        out.append(ROOT.parent / "shared" / "data" / "hdri" / "blender_studiolights" / f"{name}.exr")
        return out


def background_fn(mode: str, lobes: torch.Tensor, hdr: torch.Tensor | None, rot: np.ndarray, scale: float):
    """dirs (N, 3) world -> (N, 3) linear radiance of the background."""
    from palm.render.envmap import dir_to_uv
    from palm.render.sg import sg_eval

    R = torch.as_tensor(rot, dtype=torch.float32)

    def fn(dirs: torch.Tensor) -> torch.Tensor:
        if mode == "black":
            return torch.zeros_like(dirs)
        if mode == "white":
            return torch.ones_like(dirs)
        if hdr is None:
            return sg_eval(lobes, dirs)
        local = dirs @ R.to(dirs.dtype)  # R^T d: back into the map's frame
        uv = dir_to_uv(local)
        img = hdr.permute(2, 0, 1)[None].to(dirs.dtype)
        grid = torch.stack([uv[:, 0] * 2 - 1, (1 - uv[:, 1]) * 2 - 1], dim=-1).reshape(1, 1, -1, 2)
        out = torch.nn.functional.grid_sample(img, grid, mode="bilinear", padding_mode="border", align_corners=False)
        return out[0, :, 0].T * scale

    return fn
