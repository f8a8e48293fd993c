"""PalmNet: the multi-subject neural hand prior, assembled (spec sections 1-6).

One :class:`PalmNet` holds the learned parts (geometry, radiance and material fields, the pose
encoder, per-subject codes, the density scale and the SG emitter). Rendering a batch of rays of one
image goes:

    hand parameters --(hand model)--> bone transforms, posed vertices, w2s = A_root^-1
    world rays --(w2s)--> MANO-space rays --(occupancy grid)--> packed samples (empty space skipped)
    samples --(SNARF canonicalisation)--> canonical points --(fields)--> SDF, radiance, material
    --(Laplace density, compositing)--> RF image, opacity, depth, normals, material maps
    --(Monte-Carlo PBR with secondary rays under the SG light)--> PBR image

:class:`Frame` is what varies per image; :meth:`PalmNet.prepare` turns it into a
:class:`PreparedFrame` (bone transforms, skinning field, occupancy grid) reused by every ray chunk.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from palm.config import PalmNetConfig
from palm.deform import INVALID_SDF, SkinningField, canonicalize, gather_candidate, select_min_sdf
from palm.fields.geometry import GeometryNetwork
from palm.fields.latent import PCASpace, SubjectCodes
from palm.fields.material import MaterialNetwork
from palm.fields.pose import PoseEncoder
from palm.fields.radiance import RadianceNetwork
from palm.render import sampling, volume
from palm.render.color import linear_to_srgb
from palm.render.pbr import pbr_uniform_light
from palm.render.rays import Camera, local_dirs_to_world, pixel_rays, world_to_local
from palm.render.sg import sg_eval, sg_init

#: Largest change of the betas (max abs) for which a cached skinning-weight field is reused.
SKINNING_BETAS_TOL = 1e-2
#: Skinning fields a model keeps (those of the subjects seen most recently): prior training visits
#: its subjects in random order, and with one kept every image rebuilt its subject's field (0.27 s
#: of a 0.84 s image on an H200, 0.10 s on a 2-core CPU at 32^3). At the paper's 64^3 grid one field
#: is 16 MB.
SKINNING_CACHE_SIZE = 24

#: Secondary rays start this far (metres) from their interaction point, against self-shadowing.
SECONDARY_NEAR = 4e-3


@dataclass
class Frame:
    """What varies per image: the subject's codes and the hand's parameters (one hand).

    Attributes:
        shape_code: (32,) z_s.
        appearance_code: (32,) z_a.
        pose: (16, 3) axis-angle, row 0 global orientation (flat-hand-mean convention).
        betas: (n_betas,) hand-rig shape coefficients.
        transl: (3,) translation, metres.
        albedo_gain: (3,) per-channel factor on the material's albedo (an avatar's colour
            correction from the photo-detail stage, :func:`palm.render.sg.neutral_light`); None: 1.
    """

    shape_code: Tensor
    appearance_code: Tensor
    pose: Tensor
    betas: Tensor
    transl: Tensor
    albedo_gain: Tensor | None = None


@dataclass
class PreparedFrame:
    """Per-image quantities shared by all ray chunks (see :meth:`PalmNet.prepare`)."""

    w2s: Tensor  # (4, 4) world -> MANO space
    bone_T: Tensor  # (16, 4, 4) canonical -> MANO space
    skin: SkinningField
    grid: sampling.OccupancyGrid
    cond_geometry: Tensor  # (64,) [z_p, z_s]
    cond_appearance: Tensor  # (64,) [z_p, z_a]
    posed_vertices: Tensor  # (V, 3) MANO space
    albedo_gain: Tensor | None = None  # (3,) Frame.albedo_gain


@dataclass
class RenderOptions:
    """How to render a batch of rays."""

    training: bool = False
    importance: bool = True
    pbr: bool = True
    curvature: bool = False
    geometry_grad: bool = True
    """Keep the graph of the SDF gradient (needed when the geometry trains: eikonal, curvature)."""
    pbr_estimator: str | None = None
    """None: the config's ``pbr.estimator``; 'mc' or 'sg' to choose."""
    geometry_outputs_grad: bool = True
    """Let gradients flow through the SDF and feature at all. False when nothing upstream of them
    trains (frozen geometry, no pose correction): the backward pass then skips the geometry network."""
    global_illumination: bool | None = None
    """None: the config's value."""
    generator: torch.Generator | None = None

    def pbr_estimator_or(self, default: str) -> str:
        return self.pbr_estimator or default


@dataclass
class RayOutputs:
    """Per-ray outputs (N rays) plus per-sample terms for the losses (S samples)."""

    rgb_rf: Tensor  # (N, 3) sRGB, background composited
    opacity: Tensor  # (N,)
    depth: Tensor  # (N,) metres along the ray
    normal: Tensor  # (N, 3) world, weight-accumulated
    albedo: Tensor  # (N, 3) linear, weight-accumulated
    roughness: Tensor  # (N,)
    metallic: Tensor  # (N,)
    rgb_pbr: Tensor | None = None  # (N, 3) sRGB
    gradients: Tensor | None = None  # (S, 3) MANO-space SDF gradients (eikonal)
    curvature: Tensor | None = None  # (S,)
    n_evals: int = 0
    extras: dict = field(default_factory=dict)


class PalmNet(nn.Module):
    """The PALM-Net prior.

    Args:
        cfg: model hyper-parameters (``palm.config.PalmNetConfig``; paper defaults).
        hand: the hand model (``palm.hand.load_hand``); not part of the state dict.
        n_subjects: number of per-subject codes (training subjects).
    """

    def __init__(self, cfg: PalmNetConfig, hand: nn.Module, n_subjects: int = 1):
        super().__init__()
        self.cfg = cfg
        object.__setattr__(self, "hand", hand)  # not a sub-module: its buffers stay out of the state dict
        self.geometry = GeometryNetwork(cfg)
        self.radiance = RadianceNetwork(cfg)
        self.material = MaterialNetwork(cfg)
        self.pose_encoder = PoseEncoder(cfg.latent)
        self.codes = SubjectCodes(n_subjects, cfg.latent)
        self.beta_param = nn.Parameter(torch.tensor(float(cfg.density.beta_init)))
        self.light = nn.Parameter(sg_init(cfg.light.n_lobes, torch.Generator().manual_seed(0)))
        self.pca: dict[str, PCASpace] = {}
        self._skin_cache: list[tuple[Tensor, SkinningField]] = []  # least recently used first
        self.step = 0

    # -----------------------------------------------------------------------------------------
    # Schedules
    # -----------------------------------------------------------------------------------------

    def set_step(self, step: int | None, geometry_step: int | None = None) -> None:
        """Progressive encodings: the radiance grid and SH bands follow ``step``; the geometry grid
        follows ``geometry_step`` (None = all levels: image training, personalisation and test)."""
        self.step = step or 0
        self.radiance.set_step(step)
        self.geometry.set_step(geometry_step)

    @property
    def beta(self) -> Tensor:
        """Effective Laplace scale ``|beta_param| + beta_min``."""
        return volume.effective_beta(self.beta_param, self.cfg.density.beta_min)

    # -----------------------------------------------------------------------------------------
    # Per-image preparation
    # -----------------------------------------------------------------------------------------

    def skinning_field(self, betas: Tensor) -> SkinningField:
        """The subject's skinning-weight field, cached (the :data:`SKINNING_CACHE_SIZE` most recently
        used) and reused while ``betas`` stay within :data:`SKINNING_BETAS_TOL` of those it was built
        for (a pose-correction drift of the shape does not change the weights, and a rebuild costs
        0.10 s at the cpu preset's 32^3 on a 2-core CPU)."""
        key = betas.detach().cpu()
        for i, (known, skin) in enumerate(self._skin_cache):
            if known.shape == key.shape and (
                    key.numel() == 0 or float((known - key).abs().max()) <= SKINNING_BETAS_TOL):
                self._skin_cache.append(self._skin_cache.pop(i))
                return skin
        verts, _ = self.hand.rest(betas.detach()[None])
        skin = SkinningField.from_hand(verts[0], self.hand.skin_weights, self.cfg)
        self._skin_cache = [*self._skin_cache[-(SKINNING_CACHE_SIZE - 1):], (key, skin)]
        return skin

    def prepare(self, frame: Frame, generator: torch.Generator | None = None) -> PreparedFrame:
        """Bone transforms, skinning field, occupancy grid and conditioning of one image.

        ``generator`` (CPU) draws the occupancy grid's in-cell test points; the default is a fixed
        seed, so renders are deterministic.
        """
        out = self.hand(frame.pose[None], frame.betas[None], frame.transl[None])
        # A_root is the root's skinning transform (rest -> posed), so MANO space is the rest hand's
        # own frame (the canonical box lies inside the [-0.15, 0.15]^3 AABB), rotated with the hand
        a_root = out.bone_transforms[0, 0]
        w2s = torch.linalg.inv(a_root)
        bone_T = w2s[None] @ out.bone_transforms[0]
        posed = out.vertices[0] @ w2s[:3, :3].T + w2s[:3, 3]
        grid = sampling.OccupancyGrid.from_config(self.cfg.sampler, device=posed.device)
        grid.update(posed.detach(), generator=generator or torch.Generator().manual_seed(0))
        z_p = self.pose_encoder(frame.pose[None])[0]
        return PreparedFrame(
            w2s=w2s,
            bone_T=bone_T,
            skin=self.skinning_field(frame.betas),
            grid=grid,
            cond_geometry=torch.cat([z_p, frame.shape_code]),
            cond_appearance=torch.cat([z_p, frame.appearance_code]),
            posed_vertices=posed,
            albedo_gain=frame.albedo_gain,
        )

    # -----------------------------------------------------------------------------------------
    # Fields at deformed points
    # -----------------------------------------------------------------------------------------

    def _canonical(self, x_s: Tensor, prep: PreparedFrame, training: bool) -> tuple[Tensor, Tensor, Tensor]:
        """Min-SDF canonical correspondence of MANO-space points.

        Returns:
            ``x_c (P, 3)``, ``valid (P,)`` and the (detached) SDF there ``(P,)`` (``INVALID_SDF`` where
            no candidate is valid).
        """
        res = canonicalize(x_s, prep.bone_T, prep.skin, self.cfg, training=training)
        n, n_cand = res.valid.shape
        sdf_c = torch.full((n, n_cand), INVALID_SDF, device=x_s.device)
        if bool(res.valid.any()):
            with torch.no_grad():
                xc = res.x_canon.detach()[res.valid]
                cond = prep.cond_geometry.detach().expand(xc.shape[0], -1)
                sdf_c[res.valid] = self.geometry(xc, cond)[0]
        sdf_min, index, any_valid = select_min_sdf(sdf_c, res.valid)
        return gather_candidate(res.x_canon, index), any_valid, sdf_min

    def sdf_at(self, x_s: Tensor, prep: PreparedFrame) -> Tensor:
        """SDF (no gradients) at MANO-space points ``(P, 3) -> (P,)``; empty where no correspondence."""
        with torch.no_grad():
            return self._canonical(x_s, prep, training=False)[2]

    def canonical_sdf(self, x_c: Tensor, shape_code: Tensor, pose: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """SDF and geometry feature at canonical points ``x_c (P, 3)`` for a shape code, conditioned on
        the pose code of ``pose`` (default: the flat hand)."""
        pose = torch.zeros(16, 3, device=x_c.device) if pose is None else pose
        z_p = self.pose_encoder(pose[None])[0]
        return self.geometry(x_c, torch.cat([z_p, shape_code]).expand(x_c.shape[0], -1))

    def query_canonical(self, x_c: Tensor, shape_code: Tensor, appearance_code: Tensor, pose: Tensor | None = None):
        """Fields at canonical points (for baking): ``x_c (P, 3)`` -> sdf (P,), albedo (P, 3), roughness, metallic.

        The pose code is that of ``pose`` (default: the flat hand).
        """
        pose = torch.zeros(16, 3, device=x_c.device) if pose is None else pose
        sdf, feature = self.canonical_sdf(x_c, shape_code, pose)
        z_p = self.pose_encoder(pose[None])[0]
        ca = torch.cat([z_p, appearance_code]).expand(x_c.shape[0], -1)
        material = self.material(self.radiance.encode(x_c), feature, ca)
        return sdf, material.albedo, material.roughness, material.metallic

    # -----------------------------------------------------------------------------------------
    # Rendering
    # -----------------------------------------------------------------------------------------

    def render_rays(
        self,
        origins: Tensor,
        dirs: Tensor,
        prep: PreparedFrame,
        light: Tensor,
        background: Tensor,
        options: RenderOptions | None = None,
    ) -> RayOutputs:
        """Render N world-space rays of one prepared image.

        Args:
            origins, dirs: (N, 3) world rays (unit directions).
            prep: from :meth:`prepare`.
            light: (K, 7) SG environment (world directions).
            background: (3,) linear background colour.
            options: training/importance/PBR switches.
        """
        cfg = self.cfg
        options = options or RenderOptions()
        n_rays = origins.shape[0]
        o_s, d_s = world_to_local((origins, dirs), prep.w2s)
        beta = self.beta
        sdf_fn = (lambda p: self.sdf_at(p, prep)) if options.importance else None
        samples = sampling.sample_primary(
            o_s.detach(), d_s.detach(), prep.grid, sdf_fn=sdf_fn, beta=float(beta.detach()),
            n_steps=cfg.sampler.n_steps, importance_rounds=cfg.sampler.importance_rounds,
            importance_samples=cfg.sampler.importance_samples, stratified=options.training,
            generator=options.generator, chunk=cfg.sampler.chunk,
        )
        x_s = samples.points(o_s, d_s)
        x_c, valid, _ = self._canonical(x_s, prep, training=options.training)
        samples = samples.select(valid)
        x_s, x_c = x_s[valid], x_c[valid]
        n_evals = int(valid.numel())

        cond_g = prep.cond_geometry.expand(x_c.shape[0], -1)
        cond_a = prep.cond_appearance.expand(x_c.shape[0], -1)
        sdf, feature, grad_c = self.geometry.gradient(
            x_c, cond_g, create_graph=options.training and options.geometry_grad)
        if not options.geometry_outputs_grad:
            sdf, feature, grad_c = sdf.detach(), feature.detach(), grad_c.detach()
        # normals: canonical gradient -> MANO space by the blended rotation -> world
        w = prep.skin.query(x_c.detach())
        r_blend = torch.einsum("pj,jab->pab", w, prep.bone_T[:, :3, :3])
        grad_s = torch.einsum("pab,pb->pa", r_blend, grad_c)
        normal_w = nn.functional.normalize(local_dirs_to_world(grad_s, prep.w2s), dim=-1)

        sigma = volume.laplace_density(sdf, beta)
        alphas = volume.alphas_from_density(sigma, samples.deltas)
        d_world = dirs[samples.ray_indices]
        h_r = self.radiance.encode(x_c)
        rgb = self.radiance(h_r, feature, d_world, normal_w, cond_a)
        mat = self.material(h_r, feature, cond_a)
        if prep.albedo_gain is not None:
            mat.albedo = (mat.albedo * prep.albedo_gain.to(mat.albedo)).clamp(0, 1)
        vo = volume.volume_render(alphas, samples.ray_indices, n_rays, samples.t_mids, rgb=rgb, normals=normal_w)
        seg = lambda v: volume.segment_sum(vo.weights[:, None] * v, samples.ray_indices, n_rays)
        rgb_rf = linear_to_srgb(volume.composite_background(vo.rgb, vo.opacity, background).clamp(0, 1))
        out = RayOutputs(
            rgb_rf=rgb_rf,
            opacity=vo.opacity,
            depth=vo.depth,
            normal=vo.normals,
            albedo=seg(mat.albedo),
            roughness=seg(mat.roughness[:, None])[:, 0],
            metallic=seg(mat.metallic[:, None])[:, 0],
            gradients=grad_s,
            n_evals=n_evals,
        )
        if options.curvature and x_c.shape[0] > 0:
            n_c = nn.functional.normalize(grad_c, dim=-1)
            out.curvature = self.geometry.curvature(
                x_c, cond_g, n_c, create_graph=options.training, generator=options.generator
            )
        if options.pbr and options.pbr_estimator_or(cfg.pbr.estimator) == "sg":
            out.rgb_pbr = linear_to_srgb(self._pbr_sg(out, o_s, d_s, dirs, prep, light, background).clamp(0, 1))
        elif options.pbr:
            gi = cfg.pbr.global_illumination if options.global_illumination is None else options.global_illumination
            pbr = pbr_uniform_light(
                vo.weights, samples.ray_indices, n_rays, x_s.detach(), normal_w, mat.albedo, mat.roughness,
                mat.metallic, dirs, emitter=lambda dw: sg_eval(light, dw),
                trace_secondary=self._secondary_tracer(prep, gi), background=background,
                light_grid=cfg.pbr.light_grid, jitter=options.training, global_illumination=gi,
                generator=options.generator,
            )
            out.rgb_pbr = linear_to_srgb(pbr.rgb.clamp(0, 1))
            out.extras["n_secondary"] = pbr.n_secondary
        return out

    def _pbr_sg(self, out: RayOutputs, o_s: Tensor, d_s: Tensor, dirs: Tensor, prep: PreparedFrame, light: Tensor,
                background: Tensor) -> Tensor:
        """PBR with the BRDF integrated analytically against the SG lobes (``PBRConfig.estimator='sg'``).

        At each ray's composited surface point (expected depth; accumulated normal and material),
        ``L = sum_g V_g shade_sg(n, v, albedo, roughness, metallic, lobes_g)`` over the lobe groups
        of :func:`palm.render.sg.lobe_groups` (each of the strongest lobes alone, the rest together),
        with ``V_g`` the visibility of a shadow ray toward the lobe's axis (1 for the rest). The pixel
        is ``A L + (1 - A) bg``. Visibility carries no gradient; the shading does (material, normals
        through their weights, and the light).

        Returns:
            (N, 3) linear RGB.
        """
        from palm.render.brdf import shade_sg
        from palm.render.sg import lobe_groups

        a = out.opacity
        hit = a > 1e-4
        rgb = background.expand(a.shape[0], 3) * (1 - a)[:, None]
        if not bool(hit.any()):
            return rgb
        idx = hit.nonzero(as_tuple=True)[0]
        inv = 1.0 / a[idx, None]
        normal = nn.functional.normalize(out.normal[idx], dim=-1)
        albedo = (out.albedo[idx] * inv).clamp(0, 1)
        rough = (out.roughness[idx, None] * inv).clamp(0.01, 1)
        metal = (out.metallic[idx, None] * inv).clamp(0, 1)
        view = -dirs[idx]
        groups = lobe_groups(light.detach(), self.cfg.pbr.sg_shadow_lobes)
        xi = nn.functional.normalize(light[:, :3].detach(), dim=-1)
        trace = self._secondary_tracer(prep, global_illumination=False)
        points = (o_s[idx] + out.depth[idx, None] * d_s[idx]).detach()
        shaded = torch.zeros_like(albedo)
        for g in groups:
            term = shade_sg(normal, view, albedo, rough, metal, light[g])
            if g.numel() == 1:
                with torch.no_grad():
                    axis_world = xi[g].expand(idx.numel(), 3)
                    lit = (normal.detach() * axis_world).sum(-1) > 0
                    vis = torch.zeros(idx.numel(), device=a.device)
                    if bool(lit.any()):
                        vis[lit] = trace(points[lit], axis_world[lit])[0]
                term = term * vis[:, None]
            shaded = shaded + term
        return rgb.index_add(0, idx, a[idx, None] * shaded)

    def _secondary_tracer(self, prep: PreparedFrame, global_illumination: bool) -> Callable:
        """Visibility (and indirect RF radiance) of secondary rays from MANO-space points."""
        cfg = self.cfg

        def trace(origins_s: Tensor, dirs_world: Tensor) -> tuple[Tensor, Tensor]:
            d_s = dirs_world @ prep.w2s[:3, :3].T
            sdf_fn = lambda p: self.sdf_at(p, prep)
            beta = float(self.beta.detach())
            # Nothing can occlude beyond the AABB, so the secondary ray ends where it leaves it; the
            # samples are spaced like the primary ones (at least secondary_samples of them): a fixed
            # count over the full 1.5 m would make each interval several centimetres long, and one
            # sample inside a finger would then shadow everything behind it.
            _, t_exit = sampling.ray_aabb(origins_s, d_s, cfg.sampler.aabb_half)
            far = min(cfg.sampler.secondary_far, float(t_exit.clamp(min=0).max()) if t_exit.numel() else 0.0)
            step = sampling.default_step(cfg.sampler.aabb_half, cfg.sampler.n_steps)
            n_samples = max(cfg.sampler.secondary_samples, int(math.ceil((far - SECONDARY_NEAR) / step)) + 1)
            samples = sampling.march_secondary(
                origins_s, d_s, prep.grid, sdf_fn=sdf_fn, beta=beta, far=max(far, 2 * SECONDARY_NEAR),
                n_samples=n_samples, n_importance=cfg.sampler.secondary_importance,
                chunk=cfg.sampler.chunk, near=SECONDARY_NEAR,
            )
            m = origins_s.shape[0]
            pts = samples.points(origins_s, d_s)
            x_c, valid, _ = self._canonical(pts, prep, training=False)
            samples = samples.select(valid)
            x_c = x_c[valid]
            indirect = origins_s.new_zeros(m, 3)
            if x_c.shape[0] == 0:
                return origins_s.new_ones(m), indirect
            cond_g = prep.cond_geometry.expand(x_c.shape[0], -1)
            if global_illumination:
                sdf, feature, grad_c = self.geometry.gradient(x_c, cond_g)
                w = prep.skin.query(x_c)
                r_blend = torch.einsum("pj,jab->pab", w, prep.bone_T[:, :3, :3])
                n_w = nn.functional.normalize(
                    local_dirs_to_world(torch.einsum("pab,pb->pa", r_blend, grad_c), prep.w2s), dim=-1
                )
                cond_a = prep.cond_appearance.expand(x_c.shape[0], -1)
                rgb = self.radiance(self.radiance.encode(x_c), feature, dirs_world[samples.ray_indices], n_w, cond_a)
            else:
                sdf, _ = self.geometry(x_c, cond_g)
                rgb = None
            alphas = volume.alphas_from_density(volume.laplace_density(sdf, beta), samples.deltas)
            vo = volume.volume_render(alphas, samples.ray_indices, m, samples.t_mids, rgb=rgb)
            vis = (1.0 - vo.opacity).clamp(0, 1)
            if rgb is not None:
                indirect = vo.rgb
            return vis, indirect

        return trace

    @torch.no_grad()
    def render_image(
        self,
        camera: Camera,
        frame: Frame,
        light: Tensor | None = None,
        background: Tensor | None = None,
        pbr: bool = True,
        chunk: int = 2048,
        progress: Callable[[int, int], None] | None = None,
        cancel=None,
        pbr_estimator: str | None = "sg",
    ) -> dict[str, Tensor]:
        """Render a full image (no gradients), in chunks of rays (PBR with the noise-free SG estimator by default).

        Returns:
            dict of (H, W, C) tensors: ``rgb_rf`` and ``rgb_pbr`` (sRGB), ``opacity``, ``depth``,
            ``normal``, ``albedo``, ``roughness``, ``metallic``.
        """
        from palm.jobs import check_cancel

        light = self.light.detach() if light is None else light
        background = torch.ones(3, device=light.device) if background is None else background
        prep = self.prepare(frame)
        origins, dirs = pixel_rays(camera)
        n = origins.shape[0]
        # rays that miss the hand's AABB entirely are background: skip them
        o_s, d_s = world_to_local((origins, dirs), prep.w2s)
        t_near, t_far = sampling.ray_aabb(o_s, d_s, self.cfg.sampler.aabb_half)
        hit = (t_far > t_near.clamp(min=0)).nonzero(as_tuple=True)[0]
        keys = ("rgb_rf", "rgb_pbr", "opacity", "depth", "normal", "albedo", "roughness", "metallic")
        chans = {"rgb_rf": 3, "rgb_pbr": 3, "opacity": 1, "depth": 1, "normal": 3, "albedo": 3, "roughness": 1,
                 "metallic": 1}
        bg_srgb = linear_to_srgb(background.clamp(0, 1))
        result = {k: origins.new_zeros(n, chans[k]) for k in keys}
        result["rgb_rf"][:] = bg_srgb
        result["rgb_pbr"][:] = bg_srgb
        options = RenderOptions(training=False, importance=True, pbr=pbr, pbr_estimator=pbr_estimator)
        s, i = 0, 0
        while s < hit.numel():
            check_cancel(cancel)
            idx = hit[s:s + chunk]
            try:
                out = self.render_rays(origins[idx], dirs[idx], prep, light, background, options)
            except RuntimeError as exc:  # torch.cuda.OutOfMemoryError is a RuntimeError
                text = str(exc).lower()
                if ("out of memory" not in text and "can't allocate memory" not in text) or idx.numel() <= 1:
                    raise
                chunk = idx.numel() // 2  # out of memory: retry the same rays in chunks half as large
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                continue
            for k in keys:
                v = getattr(out, k)
                if v is None:
                    continue
                result[k][idx] = v.reshape(idx.numel(), -1)
            s, i = s + idx.numel(), i + 1
            if progress is not None:
                progress(i, i + math.ceil((hit.numel() - s) / chunk))
        h, w = camera.height, camera.width
        return {k: v.reshape(h, w, -1) for k, v in result.items()}
