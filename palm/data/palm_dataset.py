"""Reader and checker of the PALM dataset's on-disk layout (spec section 10.1), synthetic sets included.

Per-subject folder (the release's layout, plus files only our synthetic sets carry)::

    <root>/meta.json                       synthetic sets only: generator, pose convention, ...
    <root>/<sid>/cameras.npy               {"cameras": {cam: {"K" 3x3, "Rt" 4x4 world->camera, "height", "width"}}}
    <root>/<sid>/poses.npy                 {"betas" (>=1,10), "hand_pose" (F,45), "global_orient" (F,3), "transl" (F,3)}
    <root>/<sid>/images/<cam>/<frame>.png  frame = 6-digit 1-based index; frame index = int(name) - 1
    <root>/<sid>/masks/<cam>/<frame>.png   0/255
    <root>/<sid>/mano/<cam>/<frame>.png    RGBA render of the registered hand; alpha = silhouette
    <root>/<sid>/normals/<cam>/<frame>.png RGB = (n + 1) / 2 * 255, OpenGL camera axes, 0 = missing
    <root>/<sid>/depth/<cam>/<frame>.png   16-bit, depth = value / 65535 * 1.8 m, 0 = missing
    <root>/<sid>/albedo/<cam>/<frame>.png  ground-truth linear albedo, sRGB-encoded (synthetic)
    <root>/<sid>/keypoints.npy             {"keypoints_3d" (F,21,3) world, "keypoints_2d" {cam: (F,21,2)}} (synthetic)
    <root>/<sid>/lighting.json             {"frames": {"000001": {"env", "rotation_y", "lobes" (K,7)}}} (synthetic)
    <root>/<sid>/subject.json, albedo_map.png, roughness_map.png   subject material (synthetic)

Pose convention: the PALM release stores ``hand_pose`` relative to MANO's mean hand pose; our
synthetic sets store it absolute for a flat-hand-mean layer and say so in ``meta.json``
(``"hand_pose_convention": "absolute_flat_hand_mean"``). Samples always carry absolute poses: a
mean-relative set needs MANO's mean pose (``pose_mean``, or the user's MANO file).

Every missing or malformed file raises :class:`PalmError` naming it. The pickled ``.npy`` files go
through :mod:`palm.safepickle` (numpy arrays and plain values only, size-bounded): a file that
names anything else raises :class:`palm.safepickle.UnsafePickleError`. ``palm data check`` and the
trainer's pre-flight check live in :mod:`palm.data.check`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from palm.data.types import CameraParams, FrameSample, HandParams
from palm.errors import PalmError
from palm.io import read_json
from palm.safepickle import load_npy_dict

#: Depth PNG scale: metres = value / 65535 * DEPTH_MAX_M.
DEPTH_MAX_M = 1.8
#: Pose conventions of ``meta.json``.
POSE_ABSOLUTE = "absolute_flat_hand_mean"
POSE_RELATIVE = "relative_to_mean"
#: Per-view image folders and whether a complete subject must have them.
IMAGE_FOLDERS = ("images", "masks", "mano", "normals", "depth", "albedo")
REQUIRED_FOLDERS = ("images", "masks")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")


def frame_name(index: int) -> str:
    """File stem of 0-based frame ``index`` (``0 -> "000001"``)."""
    return f"{index + 1:06d}"


def frame_index(name: str) -> int:
    """0-based index of a frame file stem (``"000001" -> 0``)."""
    return int(name) - 1


# ---------------------------------------------------------------------------------------------
# File readers (each raises PalmError naming the file)
# ---------------------------------------------------------------------------------------------


def read_cameras(path: str | os.PathLike) -> dict[str, CameraParams]:
    """Read ``cameras.npy``.

    Returns:
        ``{cam_id: CameraParams}`` in sorted camera order.
    """
    data = load_npy_dict(path)
    cams = data.get("cameras")
    if not isinstance(cams, dict) or not cams:
        raise PalmError(path, "expected a dict with a non-empty 'cameras' dict")
    out = {}
    for cam_id in sorted(cams):
        c = cams[cam_id]
        try:
            K = np.asarray(c["K"], dtype=np.float64)
            Rt = np.asarray(c["Rt"], dtype=np.float64)
            h, w = int(c["height"]), int(c["width"])
        except (KeyError, TypeError, ValueError, OverflowError) as exc:  # OverflowError: an infinite size
            raise PalmError(path, f"camera {cam_id}: needs K, Rt, height, width ({exc})") from None
        if K.shape != (3, 3) or Rt.shape not in ((4, 4), (3, 4)):
            raise PalmError(path, f"camera {cam_id}: K must be 3x3 and Rt 4x4, got {K.shape} and {Rt.shape}")
        if Rt.shape == (3, 4):
            Rt = np.vstack([Rt, [0.0, 0.0, 0.0, 1.0]])
        if not (np.isfinite(K).all() and np.isfinite(Rt).all()) or h <= 0 or w <= 0:
            raise PalmError(path, f"camera {cam_id}: non-finite values or empty image size")
        out[str(cam_id)] = CameraParams(K, Rt, h, w)
    return out


@dataclass
class PoseTable:
    """The registrations of one subject: ``F`` frames of one shape.

    Attributes:
        betas: (10,) float32.
        pose: (F, 16, 3) float32 axis-angle as stored (row 0 global orientation).
        transl: (F, 3) float32.
    """

    betas: np.ndarray
    pose: np.ndarray
    transl: np.ndarray

    @property
    def n_frames(self) -> int:
        return int(self.pose.shape[0])


def read_poses(path: str | os.PathLike) -> PoseTable:
    """Read ``poses.npy`` (``betas``, ``hand_pose`` (F,45), ``global_orient`` (F,3), ``transl`` (F,3))."""
    data = load_npy_dict(path)
    try:
        betas = np.atleast_1d(np.asarray(data["betas"], dtype=np.float32))
        if betas.size == 0:
            raise PalmError(path, "'betas' is empty")
        betas = betas.reshape(-1, betas.shape[-1])[0]
        hand_pose = np.asarray(data["hand_pose"], dtype=np.float32)
        glob = np.asarray(data["global_orient"], dtype=np.float32)
        transl = np.asarray(data["transl"], dtype=np.float32)
    except KeyError as exc:
        raise PalmError(path, f"missing key {exc} (needs betas, hand_pose, global_orient, transl)") from None
    except (TypeError, ValueError) as exc:
        raise PalmError(path, f"malformed arrays ({exc})") from None
    n = hand_pose.shape[0] if hand_pose.ndim == 2 else -1
    if hand_pose.shape != (n, 45) or glob.shape != (n, 3) or transl.shape != (n, 3):
        raise PalmError(
            path,
            f"expected hand_pose (F,45), global_orient (F,3), transl (F,3); got "
            f"{hand_pose.shape}, {glob.shape}, {transl.shape}",
        )
    if not (
        np.isfinite(hand_pose).all()
        and np.isfinite(glob).all()
        and np.isfinite(transl).all()
        and np.isfinite(betas).all()
    ):
        raise PalmError(path, "non-finite values")
    betas10 = np.zeros(10, np.float32)
    betas10[: min(10, betas.shape[0])] = betas[:10]
    pose = np.concatenate([glob[:, None, :], hand_pose.reshape(n, 15, 3)], axis=1)
    return PoseTable(betas=betas10, pose=pose, transl=transl)


def read_png(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as its raw integer array ((H, W) or (H, W, C), uint8 or uint16)."""
    import imageio.v3 as iio

    path = Path(path)
    if not path.is_file():
        raise PalmError(path, "image not found")
    try:
        return np.asarray(iio.imread(path))
    except Exception as exc:  # noqa: BLE001 - image plugins raise many types for corrupt files
        raise PalmError(path, f"cannot read image ({type(exc).__name__}: {exc})") from None


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """(H, W, 3) float32 in [0, 1] (alpha dropped, grey expanded)."""
    a = read_png(path)
    scale = 65535.0 if a.dtype == np.uint16 else 255.0
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=-1)
    if a.ndim != 3 or a.shape[-1] < 3:
        raise PalmError(path, f"expected an RGB image, got shape {a.shape}")
    return (a[..., :3].astype(np.float32) / scale).astype(np.float32)


def read_binary(path: str | os.PathLike, alpha: bool = False) -> np.ndarray:
    """(H, W) bool: the alpha channel (``alpha=True``) or the first channel, above half range."""
    a = read_png(path)
    half = 32767 if a.dtype == np.uint16 else 127
    if alpha:
        if a.ndim != 3 or a.shape[-1] != 4:
            raise PalmError(path, f"expected an RGBA image, got shape {a.shape}")
        return a[..., 3] > half
    return (a if a.ndim == 2 else a[..., 0]) > half


def read_depth(path: str | os.PathLike) -> np.ndarray:
    """(H, W) float32 metres from a 16-bit PNG (0 = missing)."""
    a = read_png(path)
    if a.dtype != np.uint16 or a.ndim != 2:
        raise PalmError(path, f"expected a 16-bit single-channel depth PNG, got {a.dtype} {a.shape}")
    return a.astype(np.float32) / 65535.0 * DEPTH_MAX_M


def read_normals(path: str | os.PathLike) -> np.ndarray:
    """(H, W, 3) float32 unit normals (OpenGL camera axes); zeros where the file stores 0."""
    a = read_png(path)
    if a.ndim != 3 or a.shape[-1] < 3:
        raise PalmError(path, f"expected an RGB normal map, got shape {a.shape}")
    scale = 65535.0 if a.dtype == np.uint16 else 255.0
    rgb = a[..., :3].astype(np.float32)
    n = rgb / scale * 2.0 - 1.0
    valid = rgb.sum(-1) > 0
    n = n / np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-6)
    return np.where(valid[..., None], n, 0.0).astype(np.float32)


def read_silhouette(path: str | os.PathLike) -> np.ndarray:
    """(H, W) bool: the alpha channel of an RGBA render (PALM's ``mano/`` files)."""
    return read_binary(path, alpha=True)


#: The reader of each per-view folder (``images`` and ``albedo`` as sRGB; ``albedo`` is made
#: linear by :meth:`PalmDataset.load`).
FOLDER_READERS = {
    "images": read_rgb,
    "masks": read_binary,
    "mano": read_silhouette,
    "normals": read_normals,
    "depth": read_depth,
    "albedo": read_rgb,
}


# ---------------------------------------------------------------------------------------------
# Mean-relative poses
# ---------------------------------------------------------------------------------------------


def mano_pose_mean(path: str | os.PathLike | None = None) -> np.ndarray:
    """MANO's mean hand pose (15, 3): ``hands_mean`` of the user's MANO_RIGHT.pkl.

    Args:
        path: the MANO file (default ``$PALM_MANO_PATH``).

    Raises:
        PalmError: when no MANO file is available (mean-relative poses cannot be converted).
    """
    from palm.hand import mano

    file = mano.find_mano(path)
    if file is None:
        raise PalmError(
            f"${mano.MANO_ENV}",
            "this dataset stores hand poses relative to MANO's mean pose; "
            "converting them needs your MANO_RIGHT.pkl (--mano PATH or $PALM_MANO_PATH)",
        )
    raw = mano.read_mano_pickle(file)
    if "hands_mean" not in raw:
        raise PalmError(file, "not a MANO model: missing key 'hands_mean'")
    mean = np.asarray(raw["hands_mean"], np.float32).reshape(-1)
    if mean.size != 45:
        raise PalmError(file, f"hands_mean has {mean.size} values, expected 45")
    return mean.reshape(15, 3)


def to_absolute(pose: np.ndarray, pose_mean: np.ndarray) -> np.ndarray:
    """Add the mean hand pose to rows 1-15 of a (..., 16, 3) mean-relative pose."""
    out = np.array(pose, dtype=np.float32, copy=True)
    out[..., 1:, :] += np.asarray(pose_mean, np.float32).reshape(15, 3)
    return out


# ---------------------------------------------------------------------------------------------
# The dataset
# ---------------------------------------------------------------------------------------------


class PalmDataset:
    """Random access to the samples of a PALM-layout folder.

    Args:
        root: dataset folder (holding ``<sid>/cameras.npy``).
        subjects: restrict to these subject ids (default: all).
        views: restrict to these camera ids (default: all).
        pose_mean: (15, 3) MANO mean pose for a mean-relative set (default: read from the user's
            MANO file when needed).

    ``len(ds)`` and ``ds[i]`` run over every (subject, frame, view) with an image on disk.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        subjects: list[str] | None = None,
        views: list[str] | None = None,
        pose_mean: np.ndarray | None = None,
    ):
        self.root = Path(root)
        if not self.root.is_dir():
            raise PalmError(self.root, "dataset folder not found" if not self.root.exists() else "not a folder")
        meta_path = self.root / "meta.json"
        self.meta: dict[str, Any] = read_json(meta_path) if meta_path.exists() else {}
        self.pose_convention = self.meta.get("hand_pose_convention", POSE_RELATIVE)
        if self.pose_convention not in (POSE_ABSOLUTE, POSE_RELATIVE):
            raise PalmError(meta_path, f"unknown hand_pose_convention '{self.pose_convention}'")
        self._pose_mean = pose_mean
        found = list_subjects(self.root)
        if not found:
            raise PalmError(self.root, "not a PALM-layout dataset (no <subject>/cameras.npy)")
        if subjects is not None:
            unknown = sorted(set(subjects) - set(found))
            if unknown:
                raise PalmError(self.root, f"no subject(s) {', '.join(unknown)}")
            found = [s for s in found if s in set(subjects)]
        self.subjects = found
        self._views = views
        self._cache: dict[str, dict[str, Any]] = {}
        self._index: list[tuple[str, int, str]] | None = None

    # -- per-subject files -----------------------------------------------------------------

    def cameras(self, sid: str) -> dict[str, CameraParams]:
        """``{cam_id: CameraParams}`` of subject ``sid``."""
        return self._subject(sid)["cameras"]

    def views(self, sid: str) -> list[str]:
        """Camera ids of subject ``sid`` (after the ``views`` filter)."""
        cams = list(self.cameras(sid))
        return [c for c in cams if self._views is None or c in self._views]

    def poses(self, sid: str) -> PoseTable:
        """The registrations of ``sid`` with **absolute** poses."""
        s = self._subject(sid)
        if "poses" not in s:
            table = read_poses(self.root / sid / "poses.npy")
            if self.pose_convention == POSE_RELATIVE:
                if self._pose_mean is None:
                    self._pose_mean = mano_pose_mean()
                table = PoseTable(table.betas, to_absolute(table.pose, self._pose_mean), table.transl)
            s["poses"] = table
        return s["poses"]

    def n_frames(self, sid: str) -> int:
        return self.poses(sid).n_frames

    def _subject(self, sid: str) -> dict[str, Any]:
        if sid not in self._cache:
            if sid not in self.subjects:
                raise PalmError(self.root / sid, "no such subject in the dataset")
            self._cache[sid] = {"cameras": read_cameras(self.root / sid / "cameras.npy")}
        return self._cache[sid]

    def _keypoints(self, sid: str) -> dict[str, Any] | None:
        s = self._subject(sid)
        if "keypoints" not in s:
            path = self.root / sid / "keypoints.npy"
            s["keypoints"] = load_npy_dict(path) if path.exists() else None
            if s["keypoints"] is not None and "keypoints_3d" not in s["keypoints"]:
                raise PalmError(path, "missing key 'keypoints_3d'")
        return s["keypoints"]

    def _lighting(self, sid: str) -> dict[str, Any] | None:
        s = self._subject(sid)
        if "lighting" not in s:
            path = self.root / sid / "lighting.json"
            s["lighting"] = read_json(path) if path.exists() else None
        return s["lighting"]

    # -- samples -----------------------------------------------------------------------------

    def index(self) -> list[tuple[str, int, str]]:
        """Every ``(subject, frame, view)`` whose image exists, sorted."""
        if self._index is None:
            items = []
            for sid in self.subjects:
                for cam in self.views(sid):
                    folder = self.root / sid / "images" / cam
                    if not folder.is_dir():
                        continue
                    for f in sorted(folder.iterdir()):
                        if f.suffix.lower() in IMAGE_EXTENSIONS and f.stem.isdigit():
                            items.append((sid, frame_index(f.stem), cam))
            self._index = sorted(items)
        return self._index

    def __len__(self) -> int:
        return len(self.index())

    def __getitem__(self, i: int) -> FrameSample:
        sid, frame, view = self.index()[i]
        return self.load(sid, frame, view)

    def __iter__(self) -> Iterator[FrameSample]:
        for i in range(len(self)):
            yield self[i]

    def image_path(self, sid: str, frame: int, view: str, folder: str = "images") -> Path:
        """Path of a per-view file (PNG; for ``images`` a JPEG is accepted when no PNG exists)."""
        base = self.root / sid / folder / view / frame_name(frame)
        png = base.with_suffix(".png")
        if folder == "images" and not png.exists():
            for ext in (".jpg", ".jpeg"):
                if base.with_suffix(ext).exists():
                    return base.with_suffix(ext)
        return png

    def load(self, sid: str, frame: int, view: str) -> FrameSample:
        """Read one sample; optional modalities are None when their folder does not exist.

        Raises:
            PalmError: a required file (image, cameras.npy, poses.npy) is missing or malformed, or
                an optional modality's folder exists but lacks this frame.
        """
        cams = self.cameras(sid)
        if view not in cams:
            raise PalmError(self.root / sid / "cameras.npy", f"no camera '{view}'")
        cam = cams[view]
        table = self.poses(sid)
        if not 0 <= frame < table.n_frames:
            raise PalmError(
                self.root / sid / "poses.npy",
                f"no registration for frame {frame_name(frame)} ({table.n_frames} frames)",
            )
        image = read_rgb(self.image_path(sid, frame, view))
        h, w = image.shape[:2]
        if (h, w) != (cam.height, cam.width):
            raise PalmError(
                self.image_path(sid, frame, view), f"image is {w}x{h} but camera {view} says {cam.width}x{cam.height}"
            )

        def modality(folder: str) -> Any:
            if not (self.root / sid / folder).is_dir():
                return None
            value = FOLDER_READERS[folder](self.image_path(sid, frame, view, folder))
            if value.shape[:2] != (h, w):
                raise PalmError(
                    self.image_path(sid, frame, view, folder),
                    f"size {value.shape[1]}x{value.shape[0]} differs from the image's {w}x{h}",
                )
            return value

        from palm.render.color import srgb_to_linear

        mask, mano, normal, depth, albedo = (modality(f) for f in ("masks", "mano", "normals", "depth", "albedo"))
        if albedo is not None:
            albedo = srgb_to_linear(albedo).astype(np.float32)
        hand = HandParams(pose=table.pose[frame].copy(), betas=table.betas.copy(), transl=table.transl[frame].copy())

        kp2d = kp3d = None
        kps = self._keypoints(sid)
        if kps is not None:
            kpath = self.root / sid / "keypoints.npy"
            k3 = np.asarray(kps["keypoints_3d"], np.float32)
            if k3.ndim != 3 or k3.shape[1:] != (21, 3) or k3.shape[0] <= frame:
                raise PalmError(kpath, f"keypoints_3d must be (F,21,3) with F > {frame}, got {k3.shape}")
            kp3d = k3[frame]
            k2 = kps.get("keypoints_2d", {}).get(view)
            if k2 is not None:
                k2 = np.asarray(k2, np.float32)
                if k2.ndim != 3 or k2.shape[1:] != (21, 2) or k2.shape[0] <= frame:
                    raise PalmError(kpath, f"keypoints_2d[{view}] must be (F,21,2), got {k2.shape}")
                kp2d = k2[frame]

        env_name = env_lobes = None
        light = self._lighting(sid)
        if light is not None:
            entry = light.get("frames", {}).get(frame_name(frame))
            if entry is not None:
                env_name = entry.get("env")
                if entry.get("lobes") is not None:
                    env_lobes = np.asarray(entry["lobes"], np.float32)
                    if env_lobes.ndim != 2 or env_lobes.shape[1] != 7:
                        raise PalmError(
                            self.root / sid / "lighting.json",
                            f"frame {frame_name(frame)}: lobes must be (K,7), got {env_lobes.shape}",
                        )

        return FrameSample(
            subject=sid,
            frame=frame,
            view=view,
            image=image,
            mask=mask,
            camera=cam,
            hand=hand,
            normal=normal,
            depth=depth,
            keypoints_2d=kp2d,
            keypoints_3d=kp3d,
            albedo=albedo,
            mano_mask=mano,
            env_name=env_name,
            env_lobes=env_lobes,
            meta={"path": str(self.image_path(sid, frame, view)), "pose_convention": POSE_ABSOLUTE},
        )


def list_subjects(root: str | os.PathLike) -> list[str]:
    """Sorted subject folders of ``root`` (those holding ``cameras.npy``)."""
    root = Path(root)
    return sorted(
        p.name for p in root.iterdir() if p.is_dir() and (p / "cameras.npy").exists() and not p.name.startswith(".")
    )
