"""The studio's door into the engine: thin adapters over ``palm`` and the job functions.

Every engine feature the studio uses is reached through a function here, with plain imports of
``palm``. What can still be missing at run time is data, not code: without a trained prior the
studio shows the hand rig, and the panels say why personalisation and the neural view wait for one.
Job functions take ``(emit, cancel, ...)`` like every :mod:`palm.jobs` computation and run on a
worker thread; they never touch Dear PyGui.
"""

from __future__ import annotations

import math
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from palm.bake import to_numpy
from palm.errors import PalmError
from palm.jobs import Log, Progress, Snapshot, check_cancel

RELAXED_PRESETS = ("relaxed", "rest", "neutral", "open", "flat")


# ------------------------------------------------------------------------------------------------
# Poses
# ------------------------------------------------------------------------------------------------


def pose_presets() -> list[str]:
    from palm.hand import POSE_PRESETS

    return list(POSE_PRESETS)


def load_pose(name_or_file: str) -> np.ndarray:
    """A preset name or pose file (``palm.hand.load_pose``) -> (16, 3) float32 axis-angle."""
    from palm.hand import load_pose as _load_pose

    return np.asarray(_load_pose(name_or_file), np.float32).reshape(16, 3)


def pose_side(path: str) -> bool | None:
    """The hand side a pose file was saved for (:func:`save_pose`'s ``"left"``), or None when it
    does not say (a preset, a ``.npy`` file, a pose written elsewhere)."""
    from palm.io import read_json

    if Path(path).suffix.lower() != ".json" or not Path(path).is_file():
        return None
    data = read_json(path)
    left = data.get("left") if isinstance(data, dict) else None
    return left if isinstance(left, bool) else None


def default_preset(presets: list[str]) -> str:
    for name in RELAXED_PRESETS:
        if name in presets:
            return name
    return presets[0] if presets else ""


def save_pose(path: str | os.PathLike, pose: np.ndarray, left: bool = False) -> None:
    """Write a palm-pose-v1 JSON (``palm.hand.poses.pose_json``, plus ``"left"``) atomically."""
    from palm.hand.poses import pose_json
    from palm.io import write_json

    write_json(path, {**pose_json(np.asarray(pose, np.float64)), "left": bool(left)})


# ------------------------------------------------------------------------------------------------
# Prior, avatar, bakes
# ------------------------------------------------------------------------------------------------


#: Grid resolution (cells along the hand box's longest side) of a slider move's coarse re-bake and
#: of the refine pass that follows it.
COARSE_RES = 40
FINE_RES = 96
#: Bakers kept per prior (one per resolution / rig shape in use).
MAX_BAKERS = 4


#: The PCA sliders span +-SLIDER_SIGMA standard deviations of the prior's subjects.
SLIDER_SIGMA = 3.0
#: A component holding less than this share of the variance has no spread among the subjects.
DEAD_RATIO = 1e-4


@dataclass
class PriorInfo:
    """The active prior (``palm.prior.Prior``), its PCA sizes and spreads, and its cached bakers.

    ``*_std`` are the standard deviations (sqrt of ``explained_variance``) of the subjects' PCA
    coefficients, ``*_ratio`` their shares of the variance, ``*_range`` (K, 2) the lowest and highest
    coefficient of the training subjects (the slider subject is held inside it: beyond the subjects
    the decoded geometry stops being a hand), ``names`` a short description per component (filled
    by :func:`job_describe_components`).
    """

    prior: Any
    n_shape: int
    n_appearance: int
    shape_std: np.ndarray
    appearance_std: np.ndarray
    path: str
    bakers: dict = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    shape_ratio: np.ndarray | None = None
    appearance_ratio: np.ndarray | None = None
    shape_range: np.ndarray | None = None
    appearance_range: np.ndarray | None = None
    names: dict = field(default_factory=dict)

    @property
    def content_hash(self) -> str:
        return str(self.prior.content_hash)

    def std(self, which: str) -> np.ndarray:
        return self.shape_std if which == "shape" else self.appearance_std

    def ratio(self, which: str) -> np.ndarray:
        r = self.shape_ratio if which == "shape" else self.appearance_ratio
        return np.ones(len(self.std(which)), np.float32) if r is None else r

    def live(self, which: str, i: int) -> bool:
        """Whether the subjects vary along component ``i`` at all."""
        return bool(self.ratio(which)[i] >= DEAD_RATIO and self.std(which)[i] > 0)

    def to_sigma(self, which: str, coeffs: np.ndarray) -> np.ndarray:
        """Coefficients -> standard deviations of the subjects (0 along a component without spread)."""
        sd = self.std(which)
        c = np.asarray(coeffs, np.float64).reshape(-1)[: len(sd)]
        return np.where(sd > 0, c / np.where(sd > 0, sd, 1.0), 0.0).astype(np.float32)

    def held(self, which: str, coeffs: np.ndarray) -> np.ndarray:
        """``coeffs`` held inside the training subjects' range (what a slider subject decodes)."""
        rng = self.shape_range if which == "shape" else self.appearance_range
        c = np.asarray(coeffs, np.float32).reshape(-1)
        if rng is None:
            return c.copy()
        return np.clip(c, rng[: len(c), 0], rng[: len(c), 1]).astype(np.float32)

    def label(self, which: str, i: int) -> str:
        """``"shape 1 (92%) size"``: index, share of the variance, derived name (when known)."""
        pct = 100.0 * float(self.ratio(which)[i])
        share = f"{pct:.0f}%" if pct >= 1 else f"{pct:.1f}%" if pct >= 0.05 else "0%"
        name = self.names.get(which, {}).get(i, "")
        return f"{which} {i + 1} ({share})" + (f" {name}" if name else "")

    def baker(self, resolution: int, betas: np.ndarray | None = None, exact: bool = True):
        """The :class:`palm.rebake.PriorBaker` of this resolution and rig shape (created once)."""
        from palm.rebake import PriorBaker

        b = None if betas is None or not np.any(betas) else np.asarray(betas, np.float32).reshape(-1)
        key = (int(resolution), bool(exact), None if b is None else b.tobytes())
        with self.lock:
            if key not in self.bakers:
                while len(self.bakers) >= MAX_BAKERS:
                    self.bakers.pop(next(iter(self.bakers)))
                self.bakers[key] = PriorBaker(self.prior, resolution, b, exact=exact)
            return self.bakers[key]


@dataclass(frozen=True)
class Subject:
    """What a bake or a neural render needs to know about the subject.

    Attributes:
        shape, appearance: (K,) PCA coefficients.
        shape_code, appearance_code: (32,) codes that override the coefficients (avatars), or None.
        betas: (n_betas,) rig shape, or None for the mean shape.
        albedo_gain: (3,) an avatar's colour correction of the neural albedo (``Frame.albedo_gain``), or None.
    """

    shape: np.ndarray
    appearance: np.ndarray
    shape_code: np.ndarray | None = None
    appearance_code: np.ndarray | None = None
    betas: np.ndarray | None = None
    albedo_gain: np.ndarray | None = None

    def codes(self, prior: PriorInfo):
        """``(z_s, z_a)`` (32,) tensors of this subject."""
        import torch

        z_s, z_a = prior.prior.codes_from_coeffs(self.shape, self.appearance)
        if self.shape_code is not None:
            z_s = torch.as_tensor(np.asarray(self.shape_code, np.float32)).to(z_s)
        if self.appearance_code is not None:
            z_a = torch.as_tensor(np.asarray(self.appearance_code, np.float32)).to(z_a)
        return z_s, z_a


def load_prior(path: str | os.PathLike | None = None) -> tuple[PriorInfo | None, str]:
    """The trained prior with its PCA (``palm.prior.load_prior``), or ``(None, note)`` without one.

    A missing default prior is not an error (the studio shows the hand rig and says so); a prior
    folder given explicitly that cannot be read raises its :class:`PalmError`.
    """
    from palm.assets import DEFAULT_PRIOR
    from palm.prior import load_prior as _load

    folder = Path(path) if path else DEFAULT_PRIOR
    if not folder.exists():
        if path:
            raise PalmError(folder, "prior not found")
        return None, f"no prior at {folder}: showing the hand rig (train one in the Training tab)"
    prior = _load(folder)
    if prior.pca_shape is None or prior.pca_appearance is None:
        return None, f"the prior at {folder} has no PCA spaces: showing the hand rig"
    ns, na = int(prior.pca_shape.n_components), int(prior.pca_appearance.n_components)
    info = PriorInfo(prior, ns, na, _std(prior.pca_shape, ns), _std(prior.pca_appearance, na), str(folder))
    for which, pca, n in (("shape", prior.pca_shape, ns), ("appearance", prior.pca_appearance, na)):
        ratio = to_numpy(pca.explained_variance_ratio).astype(np.float32).reshape(-1)[:n]
        setattr(info, f"{which}_ratio", ratio)
        setattr(info, f"{which}_range", _subject_range(prior, which, pca, n))
    return info, ""


def _std(pca: Any, n: int) -> np.ndarray:
    """Standard deviation of each PCA coefficient, (n,)."""
    return np.sqrt(np.maximum(to_numpy(pca.explained_variance).astype(np.float32).reshape(-1)[:n], 0.0))


def _subject_range(prior: Any, which: str, pca: Any, n: int) -> np.ndarray | None:
    """(n, 2) lowest and highest PCA coefficient of the prior's training subjects (their codes
    projected, ``PCASpace.project``), or None when the prior does not carry its subjects' codes."""
    import torch

    try:
        with torch.no_grad():
            codes = getattr(prior.model.codes, which).weight.detach().float().cpu()
            c = to_numpy(pca.project(codes)).astype(np.float32)[:, :n]
    except (AttributeError, RuntimeError, TypeError):
        return None
    if len(c) < 2:
        return None
    return np.stack([c.min(0), c.max(0)], axis=1)


def bake_rig(hand: Any, betas: np.ndarray | None = None) -> Any:
    """The hand rig's rest mesh as a ``palm.bake.BakedAvatar``."""
    from palm.bake import bake_from_hand

    return bake_from_hand(hand, betas)


def bake_prior(prior: PriorInfo, subject: Subject, resolution: int = COARSE_RES, exact: bool = False,
               cancel=None) -> Any:
    """The subject baked from the prior (``bake_from_prior`` with the bakers' caches)."""
    return prior.baker(resolution, subject.betas, exact).bake(
        subject.shape, subject.appearance, subject.shape_code, subject.appearance_code, cancel=cancel)


def job_bake(emit, cancel, prior: PriorInfo, subject: Subject, resolutions=(COARSE_RES, FINE_RES)):
    """Bake coarse (interpolated material), then refine (exact); each is a Snapshot ``{"avatar", "resolution"}``."""
    avatar = None
    for i, res in enumerate(resolutions):
        check_cancel(cancel)
        emit(Progress(i, len(resolutions), f"grid {res}"))
        avatar = bake_prior(prior, subject, res, exact=i > 0, cancel=cancel)
        check_cancel(cancel)
        emit(Snapshot(i, {"avatar": avatar, "resolution": res}))
    emit(Progress(len(resolutions), len(resolutions), "baked"))
    return avatar


def random_coefficients(prior: PriorInfo, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A subject drawn from the prior's PCA Gaussians (``PCASpace.sample_coeffs``)."""
    import torch

    g = torch.Generator().manual_seed(int(seed))
    shape = prior.prior.pca_shape.sample_coeffs(1, g)[0]
    appearance = prior.prior.pca_appearance.sample_coeffs(1, g)[0]
    return to_numpy(shape).astype(np.float32), to_numpy(appearance).astype(np.float32)


#: Environment entry of a personalised avatar's fitted light.
AVATAR_ENV = "fitted (avatar)"


def load_avatar_file(folder: str, prior: PriorInfo | None) -> dict[str, Any]:
    """A personalised avatar folder (``palm.avatar.load_avatar``) as numpy values.

    Returns:
        ``{"shape", "appearance"}`` (K,) coefficients, ``{"shape_code", "appearance_code"}`` (32,),
        ``"lobes"`` (L, 7), ``"pose"`` (16, 3) (a left hand's is the posture
        fitted to the mirrored photo: the studio shows its mirror image), ``"betas"`` (n_betas,), ``"left"``, ``"camera"`` dict,
        ``"mesh"``: the refined mesh of the photo-detail stage or None.

    Raises:
        PalmError: no prior loaded, or the avatar belongs to another prior.
    """
    from palm.avatar import load_avatar

    if prior is None:
        raise PalmError(folder, "an avatar needs the prior it was made from (none is loaded: use --prior DIR)")
    a = load_avatar(folder, prior_hash=prior.content_hash)
    return {
        "shape": to_numpy(a.shape_coeffs).astype(np.float32).reshape(-1),
        "appearance": to_numpy(a.appearance_coeffs).astype(np.float32).reshape(-1),
        "shape_code": to_numpy(a.shape_code).astype(np.float32).reshape(-1),
        "appearance_code": to_numpy(a.appearance_code).astype(np.float32).reshape(-1),
        "lobes": to_numpy(a.light).astype(np.float32).reshape(-1, 7),
        "pose": np.asarray(a.pose, np.float32).reshape(16, 3),
        "betas": np.asarray(a.betas, np.float32).reshape(-1),
        "left": bool(a.left),
        "camera": dict(a.camera),
        "mesh": a.extra.get("mesh"),
        "albedo_gain": None if a.extra.get("albedo_gain") is None else np.asarray(a.extra["albedo_gain"], np.float32),
    }


# ------------------------------------------------------------------------------------------------
# Environments
# ------------------------------------------------------------------------------------------------


def env_presets() -> list[str]:
    """Names of the shipped SG environments (``palm.render.environment.list_presets``).

    Raises:
        PalmError: none installed (``assets/envmaps/<name>.json`` missing).
    """
    from palm.assets import ENVMAPS
    from palm.render.environment import list_presets

    names = list(list_presets())
    if not names:
        raise PalmError(ENVMAPS, "no environment presets (<name>.json) found: the assets are incomplete")
    return names


def load_environment(name_or_file: str) -> tuple[np.ndarray, dict]:
    """SG lobes (K, 7) float32 of a preset / SG JSON / HDR file, and its info dict."""
    from palm.render.environment import display_light

    lobes, info = display_light(name_or_file)
    return np.asarray(to_numpy(lobes), np.float32).reshape(-1, 7), dict(info)


def y_rotation(angle: float) -> np.ndarray:
    """(3, 3) float32 rotation about world +y by ``angle`` radians (how the studio turns an environment)."""
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]], np.float32)


def turn_environment(lobes: np.ndarray, angle: float) -> np.ndarray:
    """Lobes (K, 7) turned about +y by ``angle`` radians (``palm.render.sg.sg_rotate``)."""
    import torch

    from palm.render.sg import sg_rotate

    p = torch.as_tensor(np.asarray(lobes, np.float32)).reshape(-1, 7)
    return sg_rotate(p, torch.from_numpy(y_rotation(angle))).numpy()


def env_image(lobes: np.ndarray, height: int) -> np.ndarray:
    """The environment as a linear equirect image (H, 2H, 3) float32, row 0 = sky (``sg_to_equirect``)."""
    import torch

    from palm.render.sg import sg_to_equirect

    with torch.no_grad():
        return sg_to_equirect(torch.as_tensor(np.asarray(lobes, np.float32)).reshape(-1, 7), height).numpy()


def env_thumbnail(name: str, size: tuple[int, int] = (96, 48)) -> np.ndarray:
    """The preset's preview ``<name>.png`` resized to ``size`` (W, H) -> (H, W, 4) float32 RGBA.

    Without a preview image, the preset's SG lobes are drawn instead (tone-mapped equirect).
    """
    from PIL import Image

    from palm.assets import ENVMAPS
    from palm.imageio import to_srgb8

    path = ENVMAPS / f"{name}.png"
    if path.is_file():
        img = Image.open(path).convert("RGB").resize(size, Image.BILINEAR)
        rgb = np.asarray(img, np.float32) / 255.0
    else:
        lobes, _ = load_environment(name)
        rgb = np.asarray(to_srgb8(env_image(lobes, size[1])), np.float32)[..., :3] / 255.0
    return np.concatenate([rgb, np.ones((size[1], size[0], 1), np.float32)], -1)


def job_fit_environment(emit, cancel, path: str):
    """Load a preset / SG JSON or fit SG lobes to an HDR/EXR map, then pre-integrate the viewport's
    light (``app.prefilter`` keeps it, so the switch is instant) -> (lobes, info)."""
    from app.gl_renderer import MAX_LOBES
    from app.prefilter import preintegrate

    emit(Progress(0, 2, "fitting" if Path(path).suffix.lower() in (".exr", ".hdr") else "loading"))
    lobes, info = load_environment(path)
    check_cancel(cancel)
    emit(Progress(1, 2, "pre-integrating the light"))
    preintegrate(np.ascontiguousarray(lobes.reshape(-1, 7)[:MAX_LOBES]))
    emit(Progress(2, 2, "ready"))
    return lobes, info


def export_environment(path: str, lobes: np.ndarray, name: str = "") -> None:
    """Save lobes as SG JSON or a linear equirect ``.exr`` (``palm.export.preview.export_env``), or a
    tone-mapped ``.png`` (512x256)."""
    from palm.export.preview import export_env
    from palm.imageio import write_image

    if Path(path).suffix.lower() == ".png":
        write_image(path, env_image(lobes, 256))
    else:
        export_env(path, np.asarray(lobes, np.float32).reshape(-1, 7), source=name or "palm-studio")


# ------------------------------------------------------------------------------------------------
# Photo, personalisation, training, export, doctor
# ------------------------------------------------------------------------------------------------


def personalize_available(prior: PriorInfo | None) -> str:
    """'' when personalisation can run with ``prior``, else why not."""
    if prior is None:
        return "personalisation needs a trained prior with PCA (assets/priors/default or the Training tab)"
    return ""


def job_preprocess(emit, cancel, path: str):
    """Detect the hand, fit the rig and segment the mask: a ``palm.data.photo.pipeline.PhotoResult``."""
    from palm.data.photo.pipeline import preprocess_photo

    emit(Progress(0, 1, "preprocessing photo"))
    result = preprocess_photo(path)
    check_cancel(cancel)
    emit(Progress(1, 1, "photo ready"))
    return result


def job_personalize(emit, cancel, photo_result: Any, prior: PriorInfo | None, out_dir: str, preset: str = "fast"):
    """``palm.train.personalize.personalize`` on the accepted photo; writes the avatar folder ``out_dir``.

    The job's Snapshot events carry ``shape_coeffs``/``appearance_coeffs``, ``shape_code``/
    ``appearance_code`` and ``light`` (the viewport follows them); Previews are sRGB renders.
    """
    why = personalize_available(prior)
    if why:
        raise PalmError(out_dir, why)
    from palm.config import PERSONALIZE_PRESETS
    from palm.train.personalize import personalize

    if preset not in PERSONALIZE_PRESETS:
        raise PalmError(preset, f"unknown personalisation preset (choose from {', '.join(PERSONALIZE_PRESETS)})")
    personalize(photo_result, prior.prior, PERSONALIZE_PRESETS[preset], out_dir, _staged(emit), cancel, preset=preset)
    emit(Progress(1, 1, "saved"))
    emit(Log(f"avatar saved to {out_dir}"))
    return out_dir


def _staged(emit):
    """Personalisation's events with its stages after the last step: the fit's Progress counts
    towards ``total + 2``, then "final render and metrics" and "writing the avatar" follow (the bar
    never sits full while the job goes on)."""
    total = [0]

    def staged(event):
        if isinstance(event, Progress) and event.total > 0:
            total[0] = event.total
            last = event.step >= event.total
            event = Progress(event.step, event.total + 2, "final render and metrics" if last else
                             f"fitting{' (pbr)' if event.message == 'pbr' else ''}", event.losses, event.eta_s)
        elif isinstance(event, Snapshot) and total[0] and event.step >= total[0]:
            emit(Progress(total[0] + 1, total[0] + 2, "writing the avatar"))
        emit(event)

    return staged


def training_presets() -> list[str]:
    from palm.config import PRESETS

    return list(PRESETS)


def job_train(emit, cancel, dataset: str, preset: str, out_dir: str):
    """Train a prior (``palm train``) in ``out_dir``, then export it with its PCA to ``out_dir/prior``."""
    from palm.train.trainer import Trainer, TrainOptions, export_prior

    if not dataset or not Path(dataset).is_dir():
        raise PalmError(dataset or "dataset", "dataset folder not found")
    Trainer(TrainOptions(data=dataset, out=out_dir, preset=preset, tensorboard=False), emit, cancel).fit()
    check_cancel(cancel)
    prior_dir = str(Path(out_dir) / "prior")
    export_prior(out_dir, prior_dir)
    return prior_dir


def export_image(path: str, image: np.ndarray) -> None:
    """Write the viewport image (H, W, 3|4) uint8 sRGB to PNG/EXR (``palm.imageio.write_image``)."""
    from palm.imageio import write_image
    from palm.render.color import srgb_to_linear

    rgba = np.ones((*image.shape[:2], 4), np.float32)
    rgba[..., :3] = srgb_to_linear(np.asarray(image[..., :3], np.float32) / 255.0)
    write_image(path, rgba)


def export_mesh(path: str, avatar: Any, hand: Any, pose: np.ndarray, betas: np.ndarray | None,
                left: bool = False) -> Any:
    """Posed mesh (OBJ/PLY bake the pose in; glTF keeps the skin) through ``palm.export.mesh.export_mesh``;
    ``left``: the left hand the viewport shows (the mirror image of the right hand in ``pose``)."""
    from palm.export.mesh import export_mesh as _export_mesh

    return _export_mesh(path, avatar, pose=np.asarray(pose, np.float32), hand=hand, betas=betas, left=left)


def export_turntable(path: str, render_fn, frames: int = 36) -> Any:
    """A turntable video/GIF (``palm.export.preview.export_turntable``); ``render_fn(azimuth_deg)``
    returns linear RGBA (H, W, 4)."""
    from palm.export.preview import export_turntable as _export_turntable

    return _export_turntable(path, render_fn, frames)


def doctor_report() -> dict:
    """``palm doctor``'s report (``palm.cli.doctor.report``) without the OpenGL probe (the studio has GL)."""
    from palm.cli.doctor import report

    try:
        return report(probe_gl=False)
    except Exception as exc:  # noqa: BLE001 - the panel shows whatever went wrong
        return {"doctor": f"failed: {type(exc).__name__}: {exc}"}


def studio_home() -> Path:
    """Where the studio keeps what it makes (avatars): ``$PALM_STUDIO_HOME`` or ``~/palm-studio``.

    Not beside the photo: photos often sit in read-only or shared folders.
    """
    return Path(os.environ.get("PALM_STUDIO_HOME", Path.home() / "palm-studio"))


def new_avatar_folder(stem: str) -> Path:
    """A fresh ``<studio home>/avatars/<stem>_avatar[_N]`` path (the folder itself is made by the job)."""
    base = studio_home() / "avatars"
    base.mkdir(parents=True, exist_ok=True)
    out = base / f"{stem}_avatar"
    n = 2
    while out.exists():
        out = base / f"{stem}_avatar_{n}"
        n += 1
    return out
