"""Typed configuration of PALM-Net: one place defines each hyper-parameter.

Defaults reproduce the paper's configuration (``../shared/spec/palm_net.md``, the "paper" preset);
``PRESETS["cpu"]`` shrinks sizes and schedules so that the same method runs on a 2-core CPU.
Every config is a frozen dataclass; ``dataclasses.replace`` makes variants, and
``to_dict``/``from_dict`` give the JSON that sits beside checkpoints.

This module imports the standard library only.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

# ---------------------------------------------------------------------------------------------
# Canonical space (spec section 2)
# ---------------------------------------------------------------------------------------------

#: Tight box around the canonical (flat, MANO-template) right hand, metres.
CANONICAL_BOX_MIN = (-0.0935, -0.0365, -0.0859)
CANONICAL_BOX_MAX = (0.1366, 0.0417, 0.1158)


@dataclass(frozen=True)
class CanonicalConfig:
    """The canonical cube: centre ``c`` and half side ``h``; ``p_hat = (p - c) / (2h) + 0.5``."""

    box_min: tuple[float, float, float] = CANONICAL_BOX_MIN
    box_max: tuple[float, float, float] = CANONICAL_BOX_MAX
    scale: float = 1.2
    """Half side = scale * (largest half extent of the box)."""

    @property
    def centre(self) -> tuple[float, float, float]:
        return tuple((a + b) / 2 for a, b in zip(self.box_min, self.box_max))  # type: ignore[return-value]

    @property
    def half_side(self) -> float:
        return self.scale * max(b - a for a, b in zip(self.box_min, self.box_max)) / 2


# ---------------------------------------------------------------------------------------------
# Fields (spec section 5)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HashGridConfig:
    """Multiresolution hash grid with a progressive (coarse-to-fine) level mask."""

    n_levels: int = 32
    n_features_per_level: int = 2
    log2_hashmap_size: int = 19
    base_resolution: int = 16
    per_level_scale: float = 1.447269237440378
    include_xyz: bool = True
    """Prepend ``2 p_hat - 1`` to the features (output dim 3 + L*F)."""
    start_level: int = 4  # levels active before ``start_step``
    start_step: int = 3000
    update_steps: int = 500
    """One more level every ``update_steps`` after ``start_step``."""

    @property
    def out_dim(self) -> int:
        return self.n_levels * self.n_features_per_level + (3 if self.include_xyz else 0)

    def tcnn_dict(self) -> dict[str, Any]:
        """The tiny-cuda-nn encoding config (the only place an ``otype`` string exists)."""
        return {
            "otype": "HashGrid",
            "n_levels": self.n_levels,
            "n_features_per_level": self.n_features_per_level,
            "log2_hashmap_size": self.log2_hashmap_size,
            "base_resolution": self.base_resolution,
            "per_level_scale": self.per_level_scale,
            "interpolation": "Linear",
        }


@dataclass(frozen=True)
class GeometryConfig:
    """Conditioned SDF network: hash encoding + [z_p, z_s] -> [sdf, 12 features]."""

    hidden_dim: int = 64
    n_hidden_layers: int = 1
    feature_dim: int = 13
    """Output size; channel 0 is the SDF (metres), the whole vector is the feature ``f``."""
    softplus_beta: float = 100.0
    sphere_init_radius: float = 0.5
    weight_norm: bool = True
    curvature_eps: float = 1e-5
    """Tangential offset (metres) of the Laplacian/curvature term."""


@dataclass(frozen=True)
class RadianceConfig:
    """Radiance MLP: [hash(67), f(13), SH(reflected dir), n(3), z_p, z_a] -> linear RGB."""

    hidden_dim: int = 64
    n_hidden_layers: int = 2
    sh_degree: int = 4
    sh_start_step: int = 3000
    sh_full_step: int = 18000


@dataclass(frozen=True)
class MaterialConfig:
    """Lipschitz MLP: [hash(67), f(13), z_p, z_a] -> albedo, roughness, metallic."""

    hidden_dim: int = 64
    n_hidden_layers: int = 2
    albedo_scale: float = 0.77
    albedo_bias: float = 0.03
    roughness_scale: float = 0.9
    roughness_bias: float = 0.09
    metallic_scale: float = 1.0
    metallic_bias: float = 0.0


@dataclass(frozen=True)
class LatentConfig:
    """Per-subject codes and the pose code."""

    pose_dim: int = 32
    shape_dim: int = 32
    appearance_dim: int = 32
    n_pca: int = 5
    init_std: float = 1e-8
    pca_add_mean: bool = True
    """Decode ``z = mean + c @ B`` (the release omits the mean; zero coefficients then give the mean subject)."""


@dataclass(frozen=True)
class DensityConfig:
    """Laplace (VolSDF) density ``sigma = Psi_beta(-s) / beta`` with learnable beta."""

    beta_init: float = 0.003
    """UNKNOWN in the release; 3 mm suits a metre-scale SDF and a 4 mm marching step (suggestion)."""
    beta_min: float = 1e-4


# ---------------------------------------------------------------------------------------------
# Deformer, sampling, light (spec sections 3, 4, 6)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeformerConfig:
    """SNARF-style canonicalisation with a fixed skinning-weight voxel grid."""

    skin_grid_res: int = 64
    n_nearest: int = 5
    n_inits: int = 16
    """Broyden initialisations: the ``n_inits`` bones with the largest skinning weight (16 = all)."""
    max_iters: int = 50
    cvg_thresh: float = 1e-5
    dvg_thresh: float = 1e-1
    dedup_tol: float = 1e-3
    """Candidates closer than ``dedup_tol * 2h`` to an earlier one are dropped."""


@dataclass(frozen=True)
class SamplerConfig:
    """Occupancy grid (empty-space skipping), primary and secondary ray sampling."""

    aabb_half: float = 0.15
    occ_grid_res: int = 64
    occ_dist: float = 0.015
    """Cells farther than this from the posed hand's vertices are empty (1.5 cm)."""
    n_steps: int = 128
    """Primary step = |AABB diagonal| / n_steps."""
    importance_rounds: int = 2
    importance_samples: int = 16
    secondary_far: float = 1.5
    secondary_samples: int = 64
    secondary_importance: int = 4
    chunk: int = 40000


@dataclass(frozen=True)
class LightConfig:
    """Spherical-Gaussian environment: ``E(w) = sum_k mu_k exp(lambda_k (w . xi_k - 1))``."""

    n_lobes: int = 64


@dataclass(frozen=True)
class PBRConfig:
    """Monte-Carlo PBR of the primary interaction points (render mode 'uniform_light')."""

    n_resamples: int = 512
    light_grid: tuple[int, int] = (16, 32)
    """Stratified uniform-sphere light directions (rows x cols = n_resamples)."""
    global_illumination: bool = True
    estimator: str = "mc"
    """'mc': the release's Monte-Carlo estimator, uniform light samples (spec 6.3). 'sg': the BRDF integrated against
    the SG lobes (palm.render.brdf.shade_sg) at each ray's surface point, shadow rays to the ``sg_shadow_lobes``
    strongest lobes -- the synthetic data's reference renderer: noise-free, right for sharp lights."""
    sg_shadow_lobes: int = 7


@dataclass(frozen=True)
class PalmNetConfig:
    """Everything that defines the PALM-Net model (not its training)."""

    canonical: CanonicalConfig = field(default_factory=CanonicalConfig)
    hash_geometry: HashGridConfig = field(default_factory=HashGridConfig)
    hash_radiance: HashGridConfig = field(default_factory=HashGridConfig)
    geometry: GeometryConfig = field(default_factory=GeometryConfig)
    radiance: RadianceConfig = field(default_factory=RadianceConfig)
    material: MaterialConfig = field(default_factory=MaterialConfig)
    latent: LatentConfig = field(default_factory=LatentConfig)
    density: DensityConfig = field(default_factory=DensityConfig)
    deformer: DeformerConfig = field(default_factory=DeformerConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    light: LightConfig = field(default_factory=LightConfig)
    pbr: PBRConfig = field(default_factory=PBRConfig)
    encoding_backend: str = "auto"
    """'auto' (tiny-cuda-nn when importable and on CUDA), 'torch' or 'tcnn'."""


# ---------------------------------------------------------------------------------------------
# Losses and schedules (spec sections 7, 8, 9)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LossWeights:
    """Supplementary Table 1. ``normal`` decays linearly from ``normal_start`` to ``normal_end``."""

    rf: float = 1.0
    pbr: float = 0.2
    segm: float = 0.1
    normal_start: float = 0.5
    normal_end: float = 0.1
    eikonal: float = 1e-5
    lpips: float = 0.1
    lap: float = 0.1
    latent: float = 1e-3
    sdf_anchor: float = 0.0
    """Stage 0's SDF loss kept on while stage 1 trains the geometry (0: off, as the paper; docs/training.md)."""


@dataclass(frozen=True)
class AdamConfig:
    """Adam, learning-rate warm-up and gradient clipping of prior training and personalisation (spec 8 and 9),
    declared once: :class:`TrainConfig` and :class:`PersonalizeConfig` take their defaults from it (``adam``)."""

    betas: tuple[float, float] = (0.9, 0.99)
    eps: float = 1e-15
    warmup_start_factor: float = 0.01
    grad_clip: float = 0.5


_ADAM = AdamConfig()


@dataclass(frozen=True)
class TrainConfig:
    """Prior training (stage 0 geometry pretraining + stage 1 image training)."""

    model: PalmNetConfig = field(default_factory=PalmNetConfig)
    weights: LossWeights = field(default_factory=LossWeights)
    # stage 0
    pretrain_steps: int = 20000
    """UNKNOWN in the release (suggestion)."""
    pretrain_points: int = 40960
    pretrain_noise: float = 0.005
    pretrain_box: tuple[float, float, float] = (0.18, 0.9, 0.18)
    pretrain_sdf_clamp: float = 0.02
    pretrain_weight: float = 1e4
    pretrain_subjects: int | None = 7
    """Subjects whose SDFs stage 0 fits (the release used 7; None = every training subject)."""
    anchor_points: int = 2048  # points per image step of the SDF anchor (weights.sdf_anchor), drawn as stage 0's
    # stage 1
    max_steps: int = 24000
    geometry_freeze_steps: int = 6001
    importance_start_step: int = 1000
    pbr_start_step: int = 12001
    lpips_start_step: int = 5
    normal_start_step: int = 6001
    images_per_step: int = 128
    pixels_per_image: int = 3
    patch_size: int = 32
    patch_choices: tuple[tuple[int, int], ...] = ((64, 2), (128, 4))
    """(crop size P, stride k) pairs the LPIPS patch is drawn from."""
    lr: float = 1e-3
    lr_codes: float = 5e-4
    lr_geometry: float = 5e-4
    lr_pose_encoder: float = 5e-4
    lr_pose_correction: float = 5e-4
    lr_density: float | None = None
    """Learning rate of beta (None: ``lr``, as the release; Adam moves beta ~1 mm per step at 1e-3)."""
    weight_decay_radiance_grid: float = 1e-4
    adam_betas: tuple[float, float] = _ADAM.betas
    adam_eps: float = _ADAM.eps
    warmup_steps: int = 1000
    warmup_start_factor: float = _ADAM.warmup_start_factor
    grad_clip: float = _ADAM.grad_clip
    checkpoint_every: int = 1000
    keep_last: int = 3
    validate_every: int = 6000
    seed: int = 0

    @property
    def adam(self) -> AdamConfig:
        return AdamConfig(self.adam_betas, self.adam_eps, self.warmup_start_factor, self.grad_clip)


@dataclass(frozen=True)
class DetailConfig:
    """The photo-detail stage after the paper's personalisation (:mod:`palm.detail`). Not in the paper."""

    res: int = 256  # side of the input-view crop fitted and scored
    mesh_res: int = 96  # marching-cubes cells along the hand box's longest side
    rig_fill: float | None = 0.001  # the rig's hand, this much thinner, fills what the prior's surface lacks (m)
    subdivide: int = 1  # then this many midpoint subdivisions
    proportion_steps: int = 200  # fit of segment lengths and palm size to the keypoints (0: the rig's; step 2)
    proportion_sd: float = 0.07  # their prior: log-normal, this standard deviation
    pose_steps: int = 100  # first the fingers' joints and place, fitted to the mask when the pose is from 2D landmarks
    pose_lr: tuple[float, float] = (1e-2, 2e-4)  # its Adam steps: radians, metres
    pose_prior: tuple[float, float, float] = (100.0, 1.0, 1.0)  # L2 per rad^2, per mm^2, per px^2 of depth motion
    thickness_steps: int = 100  # first the hand's thickness (offsets along the normals), within +-limit (m)
    thickness_limit: float = 0.003
    thickness_per_bone: bool = False  # one thickness per bone (one photo misreads finger poses as thickness)
    outline_steps: int = 200
    outline_lr: float = 2e-4  # Adam step of the canonical offsets, metres
    visibility_every: int = 5
    rim_cos: float = 0.3
    band_px: float = 8.0
    cover_px: float = 30.0
    offset_smooth: float = 150.0
    offset_l2: float = 0.01
    tangential: float = 1.0  # offsets may slide along the surface, L2 weight / this (0: along normals only)
    depth_weight: float = 1.0  # weight of the offsets' squared component along the view rays (px), unseen
    relief_steps: int = 100  # offsets along the normals fitted to the photo's shading before the albedo (step 4)
    relief_limit: float = 0.0015  # within +-this (m)
    relief_smooth: float = 1.0  # weight of their uniform Laplacian (per mm^2)
    albedo_steps: int = 300
    albedo_lr: float = 0.02
    albedo_smooth: float = 0.01
    albedo_l2: float = 1e-4
    albedo_range: float = 4.0  # the fitted albedo stays within this factor of its (colour-corrected) start
    neutral_light: bool = True  # fit the albedo under the light made grey at the display exposure (step 4)
    albedo_model: bool = False  # start the albedo from the prior's albedo model, if any (step 4; off: docs)


@dataclass(frozen=True)
class PersonalizeConfig:
    """Single-image personalisation (spec section 9)."""

    max_steps: int = 5200
    shape_freeze_step: int = 1500
    pbr_start_step: int = 2000
    images_per_step: int = 8
    pixels_per_image: int = 3
    patch_size: int = 32
    patch_choices: tuple[tuple[int, int], ...] = ((32, 1), (64, 2), (128, 4))
    lr: float = 5e-4
    lr_light: float = 1e-3
    lr_pose_correction: float = 1e-5
    weight_decay_pose_correction: float = 1e-5
    warmup_steps: int = 1000
    weights: LossWeights = field(
        default_factory=lambda: LossWeights(normal_start=0.0, normal_end=0.0, eikonal=0.0)
    )
    preview_every: int = 100
    seed: int = 0
    work_res: int | None = 256
    """Side (px) of the square crop around the hand fitted and scored (None: the images as given; suggestion)."""
    crop_scale: float = 1.25
    """The working crop's side is ``crop_scale`` x the longer side of the mask's bounding box."""
    preview_res: int = 48
    """Side of the preview renders sent every ``preview_every`` steps (0: snapshots only)."""
    adam_betas: tuple[float, float] = _ADAM.betas
    adam_eps: float = _ADAM.eps
    warmup_start_factor: float = _ADAM.warmup_start_factor
    grad_clip: float = _ADAM.grad_clip
    detail: DetailConfig | None = None
    """The photo-detail stage (None: the paper's personalisation only)."""

    @property
    def adam(self) -> AdamConfig:
        return AdamConfig(self.adam_betas, self.adam_eps, self.warmup_start_factor, self.grad_clip)


# ---------------------------------------------------------------------------------------------
# Presets
# ---------------------------------------------------------------------------------------------


def _cpu_model() -> PalmNetConfig:
    grid = HashGridConfig(
        n_levels=12, log2_hashmap_size=15, base_resolution=16, per_level_scale=1.5, start_step=300, update_steps=50
    )
    return PalmNetConfig(
        hash_geometry=grid,
        hash_radiance=grid,
        radiance=RadianceConfig(sh_start_step=300, sh_full_step=1800),
        deformer=DeformerConfig(skin_grid_res=32, n_inits=4, max_iters=12, cvg_thresh=1e-4),
        sampler=SamplerConfig(
            occ_grid_res=32, n_steps=64, importance_rounds=1, importance_samples=8, secondary_samples=16,
            secondary_importance=2,
        ),
        light=LightConfig(n_lobes=32),
        pbr=PBRConfig(n_resamples=32, light_grid=(4, 8)),
    )


def _scaled_train(model: PalmNetConfig, factor: float) -> TrainConfig:
    """Scale every step milestone of the paper schedule by ``factor`` (spec section 13)."""
    base = TrainConfig()
    s = lambda n: max(1, int(round(n * factor)))
    return dataclasses.replace(
        base,
        model=model,
        pretrain_steps=s(base.pretrain_steps),
        pretrain_points=4096,
        pretrain_subjects=None,
        max_steps=s(base.max_steps),
        # On a CPU the image stage keeps the pretrained geometry frozen throughout: it saves the
        # double backward through the SDF gradient (most of a step's cost), and on data rendered
        # from the hand rig the pretraining target is the true geometry.
        geometry_freeze_steps=s(base.max_steps),
        importance_start_step=s(base.importance_start_step),
        pbr_start_step=s(base.pbr_start_step),
        normal_start_step=s(base.normal_start_step),
        images_per_step=4,
        pixels_per_image=64,
        patch_size=16,
        patch_choices=((32, 2), (64, 4)),
        warmup_steps=s(base.warmup_steps),
        checkpoint_every=200,
        validate_every=s(base.validate_every),
    )


#: Prior-training presets. ``paper`` is the published configuration.
PRESETS: dict[str, TrainConfig] = {
    "paper": TrainConfig(),
    "cpu": _scaled_train(_cpu_model(), 0.1),
}


#: Personalisation presets. ``paper`` is the published schedule; ``fast`` is a few CPU minutes.
PERSONALIZE_PRESETS: dict[str, PersonalizeConfig] = {
    "paper": PersonalizeConfig(),
    "fast": PersonalizeConfig(
        max_steps=120, shape_freeze_step=40, pbr_start_step=60, images_per_step=1, pixels_per_image=64,
        patch_size=16, patch_choices=((16, 1), (32, 2)), lr=1e-2, lr_light=2e-2, warmup_steps=10, preview_every=20,
        work_res=128, detail=DetailConfig(),
        # the curvature term doubles a step's cost while the shape is fitted; fast mode drops it
        weights=LossWeights(normal_start=0.0, normal_end=0.0, eikonal=0.0, lap=0.0),
    ),
}


def scaled_schedule(cfg: PersonalizeConfig, steps: int) -> PersonalizeConfig:
    """``cfg`` with ``max_steps = steps`` and its milestones (and detail steps) scaled by ``steps / cfg.max_steps``."""
    f = steps / cfg.max_steps
    s = lambda n: max(1, round(n * f))
    detail = cfg.detail and dataclasses.replace(cfg.detail, outline_steps=s(cfg.detail.outline_steps),
                                                albedo_steps=s(cfg.detail.albedo_steps))
    return dataclasses.replace(cfg, max_steps=steps, shape_freeze_step=s(cfg.shape_freeze_step),
                               pbr_start_step=s(cfg.pbr_start_step), warmup_steps=s(cfg.warmup_steps),
                               preview_every=max(1, min(cfg.preview_every, steps)), detail=detail)


# ---------------------------------------------------------------------------------------------
# (De)serialisation
# ---------------------------------------------------------------------------------------------


def to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-ready dict of a (nested) config dataclass."""
    return dataclasses.asdict(cfg)


def from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Rebuild a (nested) config dataclass from :func:`to_dict` output; unknown keys are an error."""
    hints = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        if key not in hints:
            raise KeyError(f"unknown config field {cls.__name__}.{key}")
        default = getattr(cls(), key) if _has_default(hints[key]) else None
        if dataclasses.is_dataclass(default) and isinstance(value, dict):
            kwargs[key] = from_dict(type(default), value)
        elif isinstance(value, list):
            kwargs[key] = _tupleize(value)
        else:
            kwargs[key] = value
    return cls(**kwargs)


def apply_overrides(cfg: Any, overrides: list[str], path: str = "--set") -> Any:
    """Apply ``KEY=VALUE`` overrides to a (nested) config, e.g. ``model.sampler.n_steps=64``.

    Values are parsed as JSON when possible (numbers, lists, booleans), else kept as strings.
    """
    import json

    for item in overrides:
        if "=" not in item:
            raise ValueError(f"{path} {item}: expected KEY=VALUE")
        key, raw = item.split("=", 1)
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        cfg = _replace_path(cfg, key.strip().split("."), _tupleize(value), item)
    return cfg


def _replace_path(cfg: Any, keys: list[str], value: Any, item: str) -> Any:
    names = {f.name for f in dataclasses.fields(cfg)}
    if keys[0] not in names:
        raise ValueError(f"{item}: {type(cfg).__name__} has no field '{keys[0]}'")
    if len(keys) == 1:
        current = getattr(cfg, keys[0])
        if dataclasses.is_dataclass(current):
            raise ValueError(f"{item}: '{keys[0]}' is a group; set one of its fields")
        if isinstance(current, (int, float)) and not isinstance(current, bool) and isinstance(value, (int, float)):
            value = type(current)(value)
        return dataclasses.replace(cfg, **{keys[0]: value})
    return dataclasses.replace(cfg, **{keys[0]: _replace_path(getattr(cfg, keys[0]), keys[1:], value, item)})


def check_overrides(cfg: Any, overrides: list[str], path: str = "--set") -> None:
    """Refuse ``KEY=VALUE`` overrides whose value does not fit the field's declared type.

    Integers must be whole numbers >= 0, floats finite numbers, booleans ``true``/``false``,
    tuples lists of the right length and element types; ``None`` only where the field allows it.
    Run it before :func:`apply_overrides` (which converts numbers to the field's type).

    Raises:
        ValueError: ``"<item>: <what is wrong>"`` for the first bad item.
    """
    import json
    import typing

    for item in overrides:
        if "=" not in item:
            raise ValueError(f"{path} {item}: expected KEY=VALUE")
        key, raw = item.split("=", 1)
        node: Any = cfg
        hint: Any = None
        for name in key.strip().split("."):
            if not dataclasses.is_dataclass(node) or name not in {f.name for f in dataclasses.fields(node)}:
                raise ValueError(f"{item}: {type(node).__name__} has no field '{name}'")
            hint = typing.get_type_hints(type(node))[name]
            node = getattr(node, name)
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        if not dataclasses.is_dataclass(node) and not _fits(value, hint):
            raise ValueError(f"{item}: expected {_describe(hint)}, got '{raw[:40]}'")


def changed_fields(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Dotted names of the fields whose values differ between two configs of the same class."""
    out = []
    for f in dataclasses.fields(a):
        va, vb = getattr(a, f.name), getattr(b, f.name)
        if dataclasses.is_dataclass(va) and dataclasses.is_dataclass(vb):
            out += changed_fields(va, vb, f"{prefix}{f.name}.")
        elif va != vb:
            out.append(f"{prefix}{f.name}")
    return out


def check_train_config(cfg: TrainConfig) -> None:
    """Refuse a training configuration that cannot run (after ``--set``): ValueError naming the field."""
    for name in ("images_per_step", "checkpoint_every"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"{name} must be at least 1, got {getattr(cfg, name)}")
    for name in ("lr", "lr_codes", "lr_geometry", "lr_pose_encoder", "lr_pose_correction", "grad_clip"):
        if not getattr(cfg, name) > 0:
            raise ValueError(f"{name} must be a positive number, got {getattr(cfg, name)}")
    if cfg.patch_size > 0:
        for p, k in cfg.patch_choices:
            if p != cfg.patch_size * k:
                raise ValueError(f"patch_choices ({p}, {k}) does not give a {cfg.patch_size}-ray patch "
                                 f"(P must be patch_size * k)")


def _fits(value: Any, hint: Any) -> bool:
    """Whether a JSON value fits a type hint of the configs (numbers: see :func:`check_overrides`)."""
    import math
    import types
    import typing

    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        return any(_fits(value, a) for a in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool) and value >= 0
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if hint is str:
        return isinstance(value, str)
    if origin is tuple:
        if not isinstance(value, list):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_fits(v, args[0]) for v in value)
        return len(value) == len(args) and all(_fits(v, a) for v, a in zip(value, args))
    return True


def _describe(hint: Any) -> str:
    import types
    import typing

    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        return " or ".join(_describe(a) for a in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of ({_describe(args[0])})"
        return f"a list of {len(args)} ({', '.join(_describe(a) for a in args)})"
    return {int: "a whole number >= 0", float: "a finite number", bool: "true or false", str: "a string",
            type(None): "null"}.get(hint, str(hint))


def _has_default(f: dataclasses.Field) -> bool:
    return f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING  # type: ignore[misc]


def _tupleize(value: Any) -> Any:
    return tuple(_tupleize(v) for v in value) if isinstance(value, list) else value


#: A miniature of the cpu preset whose steps take about a second: smoke runs and tests.
PRESETS["tiny"] = apply_overrides(PRESETS["cpu"], [
    "images_per_step=2", "pixels_per_image=12", "patch_size=4", "patch_choices=[[8,2]]", "pretrain_points=512",
    "model.sampler.n_steps=32", "model.sampler.occ_grid_res=16", "model.deformer.skin_grid_res=16",
    "model.deformer.max_iters=8", "model.deformer.n_inits=2", "model.hash_geometry.n_levels=4",
    "model.hash_geometry.log2_hashmap_size=10", "model.hash_radiance.n_levels=4",
    "model.hash_radiance.log2_hashmap_size=10", "importance_start_step=1", "pbr_start_step=2",
    "model.pbr.light_grid=[2,2]", "model.sampler.secondary_samples=6", "model.sampler.secondary_importance=0",
    "model.light.n_lobes=4", "checkpoint_every=1000",
])
