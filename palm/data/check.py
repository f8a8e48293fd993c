"""Validation of a PALM-layout folder: ``palm data check`` and the trainer's pre-flight check.

:func:`check_dataset` lists what a dataset holds and what it lacks. With ``decode=True``
(``palm data check --strict``, and :func:`verify_dataset`, which the trainer calls before stage 0)
every per-view file is also decoded with the reader the dataset uses for it and its size compared
with its camera's, so a dataset that passes cannot fail half-way through training on a file.

What counts as an error (``errors``, as opposed to ``missing`` files):

* ``cameras.npy`` / ``poses.npy`` that do not read (a refused pickle, see :mod:`palm.safepickle`,
  is not collected: it raises :class:`palm.safepickle.UnsafePickleError`);
* a ``meta.json`` with an unknown ``hand_pose_convention``;
* an empty (0-byte) per-view file;
* with ``decode``: a file that does not decode as its modality (e.g. depth that is not 16-bit
  single-channel) or whose size differs from its camera's ``width x height``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from palm.data.palm_dataset import (
    FOLDER_READERS,
    IMAGE_EXTENSIONS,
    IMAGE_FOLDERS,
    POSE_ABSOLUTE,
    POSE_RELATIVE,
    REQUIRED_FOLDERS,
    frame_index,
    frame_name,
    read_cameras,
    read_poses,
)
from palm.errors import PalmError
from palm.io import read_json
from palm.safepickle import UnsafePickleError


def check_dataset(root: str | os.PathLike, decode: bool = False) -> dict[str, Any]:
    """Validate a PALM-layout folder and summarise it.

    Expected files per subject: ``cameras.npy``, ``poses.npy`` and, for every registered frame
    (``poses.npy``) and every camera (``cameras.npy``), one file in each of ``images/``, ``masks/``
    and every optional per-view folder the dataset uses (``mano``, ``normals``, ``depth``,
    ``albedo``: required in all subjects once any subject has it).

    Args:
        root: the dataset folder.
        decode: also decode every per-view file and compare its size with its camera's.

    Returns:
        ``{"root", "subjects", "frames", "views", "images", "missing", "errors", "subject_ids",
        "view_ids", "modalities", "decoded"}``: counts (frames summed over subjects, views =
        distinct camera ids, images = RGB images found, decoded = files decoded), ``missing`` a
        sorted list of paths relative to ``root`` (empty when complete), ``errors`` a list of
        ``"path: problem"`` for malformed files.

    Raises:
        PalmError: ``root`` is not a folder or holds no subject at all.
        UnsafePickleError: a ``cameras.npy`` / ``poses.npy`` names code to run or is a size bomb.
    """
    report, problems = _check(Path(root), decode)
    return {**report, "errors": [str(p) for p in problems]}


def _check(root: Path, decode: bool, subjects: Sequence[str] | None = None) -> tuple[dict[str, Any], list[PalmError]]:
    """:func:`check_dataset`'s report (without ``errors``) and its problems, in order found;
    ``subjects``: check only these (each must be a subject folder of ``root``)."""
    if not root.exists():
        raise PalmError(root, "folder not found")
    if not root.is_dir():
        raise PalmError(root, "not a folder")
    candidates = sorted(
        p.name
        for p in root.iterdir()
        if p.is_dir()
        and not p.name.startswith(".")
        and any((p / n).exists() for n in ("cameras.npy", "poses.npy", "images"))
    )
    if not candidates:
        raise PalmError(root, "not a PALM-layout dataset (no <subject>/cameras.npy, poses.npy or images/)")
    if subjects is not None:
        unknown = [s for s in subjects if s not in candidates]
        if unknown:
            have = ", ".join(candidates[:10]) + (f", ... ({len(candidates)} in all)" if len(candidates) > 10 else "")
            raise PalmError(root, f"no subject {', '.join(map(repr, unknown))} in the dataset (it has {have})")
        candidates = sorted(set(subjects))
    errors: list[PalmError] = []
    if (root / "meta.json").exists():
        meta = read_json(root / "meta.json")  # malformed meta.json is an error about the whole folder
        convention = meta.get("hand_pose_convention", POSE_RELATIVE) if isinstance(meta, dict) else None
        if convention not in (POSE_ABSOLUTE, POSE_RELATIVE):
            errors.append(PalmError(root / "meta.json", f"unknown hand_pose_convention {convention!r}"))
    modalities = [f for f in IMAGE_FOLDERS if f in REQUIRED_FOLDERS or any((root / s / f).is_dir() for s in candidates)]
    missing: list[str] = []
    views: set[str] = set()
    n_frames = n_images = n_decoded = 0
    for sid in candidates:
        sdir = root / sid
        cams: dict[str, tuple[int, int] | None] = {}
        frames: list[int] = []
        for name in ("cameras.npy", "poses.npy"):
            if not (sdir / name).exists():
                missing.append(f"{sid}/{name}")
        try:
            if (sdir / "cameras.npy").exists():
                cams = {c: (p.height, p.width) for c, p in read_cameras(sdir / "cameras.npy").items()}
        except UnsafePickleError:
            raise
        except PalmError as exc:
            errors.append(exc)
        try:
            if (sdir / "poses.npy").exists():
                frames = list(range(read_poses(sdir / "poses.npy").n_frames))
        except UnsafePickleError:
            raise
        except PalmError as exc:
            errors.append(exc)
        if not cams and (sdir / "images").is_dir():  # fall back to what is on disk (sizes unknown)
            cams = {p.name: None for p in sorted((sdir / "images").iterdir()) if p.is_dir()}
        if not frames:
            stems = {f.stem for c in cams for f in (sdir / "images" / c).glob("*") if f.stem.isdigit()}
            frames = sorted(frame_index(s) for s in stems)
        views.update(cams)
        n_frames += len(frames)
        for cam, size in cams.items():
            for folder in modalities:
                present = _files(sdir / folder / cam)
                for fr in frames:
                    path = present.get(frame_name(fr))
                    if path is None:
                        missing.append(f"{sid}/{folder}/{cam}/{frame_name(fr)}.png")
                        continue
                    if folder == "images":
                        n_images += 1
                    problem = _file_problem(path, folder, cam, size, decode)
                    if problem is not None:
                        errors.append(problem)
                    elif decode:
                        n_decoded += 1
    report = {
        "root": str(root),
        "subjects": len(candidates),
        "frames": n_frames,
        "views": len(views),
        "images": n_images,
        "missing": sorted(missing),
        "subject_ids": candidates,
        "view_ids": sorted(views),
        "modalities": modalities,
        "decoded": n_decoded,
    }
    return report, errors


def verify_dataset(root: str | os.PathLike, subjects: Sequence[str] | None = None) -> dict[str, Any]:
    """The strict check as a pre-flight for training: every file present, readable and sized right.

    Runs :func:`check_dataset` with ``decode=True``, on ``subjects`` only when given (the ones a
    run trains on: a broken subject it leaves out does not stop it; a chosen one not in the
    folder does).

    Returns:
        The report of :func:`check_dataset` (complete: no missing files, no errors).

    Raises:
        PalmError: the first problem (named by its file), with how many more there are; a
            refused pickle raises :class:`palm.safepickle.UnsafePickleError`.
    """
    report, problems = _check(Path(root), decode=True, subjects=subjects)
    more = len(problems) + len(report["missing"]) - 1
    tail = f" (and {more} more problem(s): run 'palm data check --strict {report['root']}')" if more > 0 else ""
    if problems:
        raise PalmError(problems[0].path, problems[0].message + tail)
    if report["missing"]:
        raise PalmError(Path(report["root"]) / report["missing"][0], "file missing from the dataset" + tail)
    return {**report, "errors": []}


def _file_problem(path: Path, folder: str, cam: str, size: tuple[int, int] | None, decode: bool) -> PalmError | None:
    """The problem of an empty file, or (``decode``) one that does not decode or whose
    size differs from the camera's ``(height, width)``; None when it is fine."""
    try:
        if path.stat().st_size == 0:
            return PalmError(path, "empty file (0 bytes)")
        if not decode:
            return None
        pixels = FOLDER_READERS[folder](path)
    except PalmError as exc:
        return exc
    except OSError as exc:
        return PalmError(path, f"cannot read ({exc.strerror or exc})")
    h, w = pixels.shape[:2]
    if size is not None and (h, w) != tuple(size):
        return PalmError(path, f"image is {w}x{h} but camera {cam} says {size[1]}x{size[0]}")
    return None


def _files(folder: Path) -> dict[str, Path]:
    """Frame stem -> file in a per-view folder (a PNG wins over a JPEG of the same stem)."""
    if not folder.is_dir():
        return {}
    found: dict[str, Path] = {}
    for f in sorted(folder.iterdir()):
        if f.suffix.lower() in IMAGE_EXTENSIONS and (f.stem not in found or f.suffix.lower() == ".png"):
            found[f.stem] = f
    return found
