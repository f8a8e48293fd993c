"""The studio's only door into the engine: guarded adapters over ``palm`` and the job functions.

Every engine feature the studio uses is reached through a function here. Features that a build
may lack (a trained prior, personalisation, training, the neural renderer) are probed once; when
missing, the adapter reports a short note that the panel shows, and the control is disabled.
Job functions take ``(emit, cancel, ...)`` like every :mod:`palm.jobs` computation and run on a
worker thread; they never touch Dear PyGui.
"""

from __future__ import annotations

import importlib
import inspect
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from palm.errors import PalmError
from palm.jobs import Log, Progress, Snapshot, check_cancel

RELAXED_PRESETS = ("relaxed", "rest", "neutral", "open", "flat")
MIRROR_X = np.diag([-1.0, 1.0, 1.0, 1.0]).astype(np.float32)


def optional(module: str, attr: str | None = None) -> Any:
    """``module`` (or its ``attr``) when importable, else None."""
    try:
        mod = importlib.import_module(module)
    except ImportError:
        return None
    return getattr(mod, attr, None) if attr else mod


def call_with(fn: Callable[..., Any], **available: Any) -> Any:
    """Call ``fn`` with those of ``available`` that its signature accepts (keyword arguments).

    The engine's long functions (personalise, train, neural render) are written by other parts of
    the project; this keeps the studio working across small signature differences.
    """
    params = inspect.signature(fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return fn(**available)
    return fn(**{k: v for k, v in available.items() if k in params})


# ------------------------------------------------------------------------------------------------
# Hand rig, poses
# ------------------------------------------------------------------------------------------------


def load_rig(name: str = "open") -> tuple[Any, str]:
    """The hand model ``palm.hand.load_hand(name)``, or a procedural stand-in and a note why."""
    load_hand = optional("palm.hand", "load_hand")
    if load_hand is not None:
        try:
            return load_hand(name), ""
        except (PalmError, OSError) as exc:
            note = f"hand rig failed to load ({exc}): using a stand-in"
    else:
        note = "palm.hand.load_hand missing in this build: using a stand-in hand"
    from app.standin import StandInHand

    return StandInHand(), note


def pose_presets() -> list[str]:
    names = optional("palm.hand", "POSE_PRESETS")
    return list(names) if names else []


def load_pose(name_or_file: str) -> np.ndarray:
    """A preset name or pose JSON file -> (16, 3) float32 axis-angle."""
    _load_pose = optional("palm.hand", "load_pose")
    if _load_pose is None:
        raise PalmError(name_or_file, "pose presets need palm.hand (missing in this build)")
    return np.asarray(_load_pose(name_or_file), np.float32).reshape(16, 3)


def default_preset(presets: list[str]) -> str:
    for name in RELAXED_PRESETS:
        if name in presets:
            return name
    return presets[0] if presets else ""


def save_pose(path: str | os.PathLike, pose: np.ndarray, left: bool = False) -> None:
    """Write a pose JSON (``{"pose": [[3] x 16], "left": bool}``) atomically."""
    from palm.io import write_json

    write_json(path, {"pose": np.asarray(pose, float).round(6).tolist(), "left": bool(left)})


def read_pose_file(path: str | os.PathLike) -> np.ndarray:
    """A pose JSON written by :func:`save_pose` or a palm.hand pose file -> (16, 3)."""
    from palm.io import read_json

    try:
        return load_pose(str(path))
    except (ImportError, AttributeError):
        pass
    data = read_json(path)
    pose = np.asarray(data.get("pose") if isinstance(data, dict) else data, np.float32)
    if pose.size != 48:
        raise PalmError(path, f"expected a (16, 3) pose, got {pose.size} numbers")
    return pose.reshape(16, 3)


def bone_transforms(hand: Any, pose: np.ndarray, betas: np.ndarray | None = None, left: bool = False) -> np.ndarray:
    """LBS bone matrices (16, 4, 4) that move the canonical (right, flat) avatar into ``pose``.

    For a left hand the rig mirrors at the boundary (``x -> -x``); the avatar mesh stays the
    right-hand canonical mesh, so the mirror is folded into the matrices: ``B_left @ S``.
    """
    import torch

    from app.standin import StandInHand

    if isinstance(hand, StandInHand):
        bones = _np(hand(pose, betas, left=left).bone_transforms).reshape(16, 4, 4).astype(np.float32)
        return bones @ MIRROR_X if left else bones
    p = torch.as_tensor(np.asarray(pose, np.float32)).reshape(1, 16, 3)
    b = None if betas is None else torch.as_tensor(np.asarray(betas, np.float32)).reshape(1, -1)
    with torch.no_grad():
        out = hand(pose=p, betas=b, left=left) if left else hand(pose=p, betas=b)
    bones = out.bone_transforms.reshape(16, 4, 4).cpu().numpy().astype(np.float32)
    return bones @ MIRROR_X if left else bones


# ------------------------------------------------------------------------------------------------
# Prior, avatar, bakes
# ------------------------------------------------------------------------------------------------


@dataclass
class PriorInfo:
    prior: Any
    n_shape: int
    n_appearance: int
    shape_std: np.ndarray
    appearance_std: np.ndarray
    path: str


def _std(pca: Any, n: int) -> np.ndarray:
    for name in ("std", "explained_std"):
        if getattr(pca, name, None) is not None:
            return np.asarray(_np(getattr(pca, name)), np.float32).reshape(-1)[:n]
    var = getattr(pca, "explained_variance", None)
    if var is not None:
        return np.sqrt(np.maximum(np.asarray(_np(var), np.float32).reshape(-1)[:n], 0.0))
    return np.ones(n, np.float32)


def load_prior(path: str | os.PathLike | None = None) -> tuple[PriorInfo | None, str]:
    """The trained prior with its PCA, or ``(None, note)`` when this build or install has none."""
    from palm.assets import DEFAULT_PRIOR

    path = Path(path) if path else DEFAULT_PRIOR
    loader = optional("palm.prior", "load_prior")
    if loader is None:
        return None, "no prior support in this build (palm.prior missing): showing the hand rig"
    if optional("palm.bake", "bake_from_prior") is None:
        return None, "palm.bake.bake_from_prior missing: showing the hand rig"
    if not path.exists():
        return None, f"no prior at {path}: showing the hand rig (train one in the Training tab)"
    prior = loader(path)
    if prior.pca_shape is None or prior.pca_appearance is None:
        return None, f"the prior at {path} has no PCA spaces yet: showing the hand rig"
    ns, na = int(prior.pca_shape.n_components), int(prior.pca_appearance.n_components)
    return PriorInfo(prior, ns, na, _std(prior.pca_shape, ns), _std(prior.pca_appearance, na), str(path)), ""


def bake_rig(hand: Any) -> Any:
    """The hand rig's mean-shape mesh as a ``palm.bake.BakedAvatar``."""
    from palm.bake import bake_from_hand

    return bake_from_hand(hand)


def bake_prior(prior: PriorInfo, shape: np.ndarray, appearance: np.ndarray, resolution: int) -> Any:
    from palm.bake import bake_from_prior

    return bake_from_prior(prior.prior, np.asarray(shape, np.float32), np.asarray(appearance, np.float32), resolution)


def job_bake(emit, cancel, prior: PriorInfo, shape: np.ndarray, appearance: np.ndarray, resolutions=(32, 96)):
    """Bake coarse then finer; each result is published as a Snapshot ``{"avatar", "resolution"}``."""
    avatar = None
    for i, res in enumerate(resolutions):
        check_cancel(cancel)
        emit(Progress(i, len(resolutions), f"bake {res}^3"))
        avatar = bake_prior(prior, shape, appearance, res)
        emit(Snapshot(i, {"avatar": avatar, "resolution": res}))
    emit(Progress(len(resolutions), len(resolutions), "baked"))
    return avatar


def random_coefficients(std: np.ndarray, rng: np.random.Generator, limit: float = 2.5) -> np.ndarray:
    """A sample of the prior's Gaussian PCA space, clipped to ``limit`` standard deviations."""
    return (np.clip(rng.standard_normal(len(std)), -limit, limit) * std).astype(np.float32)


# ------------------------------------------------------------------------------------------------
# Environments
# ------------------------------------------------------------------------------------------------


def env_presets() -> list[str]:
    fn = optional("palm.render.envmap", "list_presets")
    return list(fn()) if fn else []


def load_environment(name_or_file: str) -> tuple[np.ndarray, dict]:
    """SG lobes (K, 7) float32 of a preset / SG JSON / HDR file, and its info dict."""
    from palm.render.envmap import load_environment as _load

    lobes, info = _load(name_or_file)
    return np.asarray(_np(lobes), np.float32).reshape(-1, 7), dict(info)


def env_thumbnail(name: str, size: tuple[int, int] = (96, 48)) -> np.ndarray | None:
    """The preset's preview PNG resized to ``size`` (W, H) as (H, W, 4) float32, or None."""
    from palm.assets import ENVMAPS

    path = ENVMAPS / f"{name}.png"
    if not path.is_file():
        return None
    import imageio.v3 as iio
    from PIL import Image

    img = Image.fromarray(np.asarray(iio.imread(path))[..., :3].astype(np.uint8)).resize(size)
    rgba = np.concatenate([np.asarray(img, np.float32) / 255.0, np.ones((size[1], size[0], 1), np.float32)], -1)
    return rgba


def job_fit_environment(emit, cancel, path: str):
    """Fit SG lobes to an HDR/EXR map (or read an SG JSON) -> (lobes, info)."""
    emit(Log(f"fitting SG environment to {path}"))
    emit(Progress(0, 1, "fitting"))
    lobes, info = load_environment(path)
    check_cancel(cancel)
    emit(Progress(1, 1, "fitted"))
    return lobes, info


def export_environment(path: str, lobes: np.ndarray, name: str = "") -> None:
    """Save lobes as SG JSON (``.json``) or as an equirect image (``.png``/``.exr``)."""
    export_env = optional("palm.export", "export_env")
    if export_env is not None:
        export_env(path, np.asarray(lobes, np.float32), source=name or "palm-studio")
        return
    from palm.io import write_json

    if not path.endswith(".json"):
        raise PalmError(path, "this build can only export environments as SG .json (palm.export missing)")
    write_json(path, {"lobes": np.asarray(lobes, float).tolist(), "source": name or "palm-studio"})


# ------------------------------------------------------------------------------------------------
# Photo, personalisation, training, neural render, export, doctor
# ------------------------------------------------------------------------------------------------


def personalize_available(prior: Any = "unchecked") -> str:
    """'' when personalisation can run (with ``prior`` when given), else why not."""
    if optional("palm.data.photo", "preprocess_photo") is None:
        return "photo preprocessing (palm.data.photo.preprocess_photo) missing in this build"
    if optional("palm.train.personalize", "personalize") is None:
        return "personalisation (palm.train.personalize) missing in this build"
    if prior is None:
        return "personalisation needs a trained prior with PCA (assets/priors/default or the Training tab)"
    return ""


def job_preprocess(emit, cancel, path: str):
    """Detect the hand, fit the rig and segment the mask: a ``palm.data.photo.PhotoResult``."""
    fn = optional("palm.data.photo", "preprocess_photo")
    if fn is None:
        raise PalmError(path, "photo preprocessing is not available in this build")
    emit(Progress(0, 1, "preprocessing photo"))
    result = fn(path)
    check_cancel(cancel)
    emit(Progress(1, 1, "photo ready"))
    return result


def job_personalize(emit, cancel, photo_result: Any, prior: PriorInfo | None, out_dir: str, preset: str = "fast"):
    """``palm.train.personalize.personalize`` on the accepted photo; writes the avatar folder."""
    fn = optional("palm.train.personalize", "personalize")
    if fn is None or prior is None:
        raise PalmError(out_dir, personalize_available(prior) or "personalisation is not available")
    from palm.config import PERSONALIZE_PRESETS

    cfg = PERSONALIZE_PRESETS.get(preset) or next(iter(PERSONALIZE_PRESETS.values()))
    avatar = fn(photo_result, prior.prior, cfg, out_dir, emit, cancel, preset=preset)
    emit(Log(f"avatar saved to {out_dir}"))
    return out_dir if avatar is not None else None


def training_available() -> str:
    if optional("palm.train.trainer", "Trainer") is None:
        return "prior training (palm.train.trainer) missing in this build"
    return ""


def job_train(emit, cancel, dataset: str, preset: str, out_dir: str):
    """Train a prior (``palm train``) in ``out_dir``, then export it with its PCA to ``out_dir/prior``."""
    trainer_mod = optional("palm.train.trainer")
    if trainer_mod is None:
        raise PalmError(dataset, "prior training is not available in this build")
    if not dataset or not Path(dataset).is_dir():
        raise PalmError(dataset or "dataset", "dataset folder not found")
    opts = trainer_mod.TrainOptions(data=dataset, out=out_dir, preset=preset, tensorboard=False)
    trainer_mod.Trainer(opts, emit, cancel).fit()
    check_cancel(cancel)
    prior_dir = str(Path(out_dir) / "prior")
    trainer_mod.export_prior(out_dir, prior_dir)
    return prior_dir


def neural_available() -> str:
    if optional("palm.model", "render_image") is None:
        return "the neural renderer (palm.model.render_image) is missing in this build"
    return ""


def job_neural_render(emit, cancel, prior: PriorInfo | None, shape, appearance, pose, lobes, K, Rt, width, height):
    fn = optional("palm.model", "render_image")
    if fn is None:
        raise PalmError("neural", "the neural renderer is not available in this build")
    return call_with(fn, prior=None if prior is None else prior.prior, shape=shape, appearance=appearance,
                     shape_coeffs=shape, appearance_coeffs=appearance, pose=pose, lobes=lobes, light=lobes, K=K,
                     Rt=Rt, width=width, height=height, emit=emit, cancel=cancel)


def export_available() -> str:
    return "" if optional("palm.export") is not None else "palm.export missing in this build"


def export_image(path: str, image: np.ndarray) -> None:
    """Write the viewport image (H, W, 3|4) uint8 sRGB to PNG/EXR (``palm.export.write_image``)."""
    from palm.render.color import srgb_to_linear

    rgba = np.ones((*image.shape[:2], 4), np.float32)
    rgba[..., :3] = srgb_to_linear(np.asarray(image[..., :3], np.float32) / 255.0)
    write_image = optional("palm.export", "write_image")
    if write_image is None:
        raise PalmError(path, "image export needs palm.export (missing in this build)")
    write_image(path, rgba)


def export_mesh(path: str, avatar: Any, hand: Any, pose: np.ndarray, betas: np.ndarray | None) -> Any:
    """Posed mesh (OBJ/PLY bake the pose in; glTF keeps the skin) through ``palm.export.export_mesh``."""
    fn = optional("palm.export", "export_mesh")
    if fn is None:
        raise PalmError(path, "mesh export needs palm.export (missing in this build)")
    return call_with(fn, path=path, avatar=avatar, pose=np.asarray(pose, np.float32), hand=hand, betas=betas)


def export_turntable(path: str, render_fn: Callable[[float], np.ndarray], frames: int = 36) -> Any:
    """A turntable video/GIF; ``render_fn(azimuth_deg)`` returns linear RGBA (H, W, 4)."""
    fn = optional("palm.export", "export_turntable")
    if fn is None:
        raise PalmError(path, "turntable export needs palm.export (missing in this build)")
    return call_with(fn, path=path, render_fn=render_fn, frames=frames)


def load_avatar_file(folder: str) -> dict[str, Any]:
    """A personalised avatar folder -> ``{"shape", "appearance", "lobes", "pose", "left"}`` numpy values."""
    loader = optional("palm.avatar", "load_avatar")
    if loader is None:
        raise PalmError(folder, "avatars need palm.avatar (missing in this build)")
    a = loader(folder)
    return {
        "shape": _np(a.shape_coeffs).astype(np.float32).reshape(-1),
        "appearance": _np(a.appearance_coeffs).astype(np.float32).reshape(-1),
        "lobes": _np(a.light).astype(np.float32).reshape(-1, 7),
        "pose": np.asarray(a.pose, np.float32).reshape(16, 3),
        "left": bool(getattr(a, "left", False)),
    }


def fallback_lobes() -> np.ndarray:
    """A neutral studio light when no environment presets are installed."""
    fn = optional("palm.export", "default_lobes")
    if fn is not None:
        return np.asarray(fn(), np.float32).reshape(-1, 7)
    return np.array([[0.4, 0.8, 0.45, 8.0, 3.0, 2.9, 2.7], [-0.6, 0.2, 0.5, 3.0, 0.8, 0.85, 1.0],
                     [0.0, 1.0, 0.0, 0.8, 0.35, 0.38, 0.42]], np.float32)


def doctor_report() -> dict:
    fn = optional("palm.doctor", "report")
    if fn is None:
        return {"doctor": "palm.doctor missing in this build"}
    try:
        return call_with(fn, probe_gl=False)
    except Exception as exc:  # noqa: BLE001 - the panel shows whatever went wrong
        return {"doctor": f"failed: {type(exc).__name__}: {exc}"}


def _np(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def angle_deg(rad: float) -> float:
    return math.degrees(rad)
