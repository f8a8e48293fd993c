"""A personalised avatar on disk: a small folder that belongs to one prior.

```
<avatar>/avatar.safetensors  shape/appearance PCA coefficients and decoded codes, SG light (K, 7)
<avatar>/avatar.json         {"format": "palm-avatar-v1", "prior_hash", "pose" (16x3), "betas",
                              "transl", "camera": {"K", "Rt", "height", "width"}, "left", "photo"}
<avatar>/report.json         what personalisation measured (PSNR/SSIM/LPIPS, steps, seconds, preset)
<avatar>/mesh.safetensors    the refined mesh of the photo-detail stage (palm.bake.save_baked), optional
```
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from palm.errors import PalmError
from palm.io import atomic_dir, read_json

FORMAT = "palm-avatar-v1"
MESH_FILE = "mesh.safetensors"
"""The refined avatar's skinned canonical mesh (the photo-detail stage, :mod:`palm.detail`); what
every consumer shows when present."""


@dataclass
class Avatar:
    """Everything that makes a personalised hand, relative to its prior."""

    shape_coeffs: torch.Tensor  # (K,)
    appearance_coeffs: torch.Tensor  # (K,)
    shape_code: torch.Tensor  # (32,)
    appearance_code: torch.Tensor  # (32,)
    light: torch.Tensor  # (L, 7) fitted SG environment
    pose: np.ndarray  # (16, 3) axis-angle (corrected)
    betas: np.ndarray  # (n_betas,)
    transl: np.ndarray  # (3,)
    camera: dict[str, Any]  # {"K": 3x3, "Rt": 4x4, "height", "width"}
    prior_hash: str
    left: bool = False
    photo: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def camera_obj(self):
        from palm.render.rays import Camera

        return Camera.from_dict(self.camera)


def save_avatar(path: str | os.PathLike, avatar: Avatar, report: dict[str, Any] | None = None) -> None:
    """Write the avatar folder atomically (replacing an existing one only when complete)."""
    from safetensors.torch import save_file

    tensors = {
        "shape_coeffs": avatar.shape_coeffs,
        "appearance_coeffs": avatar.appearance_coeffs,
        "shape_code": avatar.shape_code,
        "appearance_code": avatar.appearance_code,
        "light": avatar.light,
    }
    tensors = {k: v.detach().cpu().float().clone() for k, v in tensors.items()}  # own memory each
    meta = {
        "format": FORMAT,
        "prior_hash": avatar.prior_hash,
        "pose": np.asarray(avatar.pose, dtype=float).tolist(),
        "betas": np.asarray(avatar.betas, dtype=float).tolist(),
        "transl": np.asarray(avatar.transl, dtype=float).tolist(),
        "camera": {k: (np.asarray(v).tolist() if not isinstance(v, (int, float)) else v) for k, v in avatar.camera.items()},
        "left": bool(avatar.left),
        "photo": avatar.photo,
        **{k: v for k, v in avatar.extra.items() if k != "mesh"},  # the mesh has its own file
    }
    with atomic_dir(path) as tmp:
        save_file(tensors, str(tmp / "avatar.safetensors"))
        (tmp / "avatar.json").write_text(json.dumps(meta, indent=2) + "\n")
        if report is not None:
            (tmp / "report.json").write_text(json.dumps(report, indent=2) + "\n")


def load_avatar(path: str | os.PathLike, prior_hash: str | None = None) -> Avatar:
    """Read an avatar folder; with ``prior_hash``, refuse an avatar made for another prior."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(path)
    if not folder.is_dir():
        raise PalmError(folder, "avatar folder not found" if not folder.exists() else "not an avatar folder")
    meta = read_json(folder / "avatar.json")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise PalmError(folder / "avatar.json", f"not a palm-studio avatar (expected format '{FORMAT}')")
    for key in ("prior_hash", "pose", "betas", "transl", "camera"):
        if key not in meta:
            raise PalmError(folder / "avatar.json", f"missing key '{key}'")
    weights = folder / "avatar.safetensors"
    if not weights.is_file():
        raise PalmError(weights, "file not found")
    try:
        t = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as exc:
        raise PalmError(weights, f"not a readable safetensors file ({exc})") from None
    for key in ("shape_coeffs", "appearance_coeffs", "shape_code", "appearance_code", "light"):
        if key not in t:
            raise PalmError(weights, f"missing tensor '{key}'")
    pose, betas, transl = _hand_arrays(meta, folder / "avatar.json")
    _check_tensors(t, weights)
    if prior_hash is not None and meta["prior_hash"] != prior_hash:
        raise PalmError(folder, f"made for prior {meta['prior_hash']}, not for the loaded prior {prior_hash}")
    extra = {k: v for k, v in meta.items() if k not in {"format", "prior_hash", "pose", "betas", "transl", "camera",
                                                           "left", "photo", "mesh"}}
    gain = extra.get("albedo_gain")
    if gain is not None and not (isinstance(gain, list) and len(gain) == 3
                                 and all(isinstance(g, (int, float)) and 0.01 <= g <= 100 for g in gain)):
        raise PalmError(folder / "avatar.json", "'albedo_gain' must be 3 numbers between 0.01 and 100")
    if (folder / MESH_FILE).is_file():
        from palm.bake import load_baked

        extra["mesh"] = load_baked(folder / MESH_FILE)
    return Avatar(
        shape_coeffs=t["shape_coeffs"], appearance_coeffs=t["appearance_coeffs"], shape_code=t["shape_code"],
        appearance_code=t["appearance_code"], light=t["light"], pose=pose,
        betas=betas, transl=transl,
        camera=meta["camera"], prior_hash=meta["prior_hash"], left=bool(meta.get("left", False)),
        photo=str(meta.get("photo", "")), extra=extra,
    )


MAX_CODE = 4096
"""Longest code or coefficient vector an avatar may hold (the paper's codes have 32 entries)."""
MAX_BETAS = 300
"""Most shape parameters (MANO has 10; SMPL-X-style rigs up to 300)."""


def _check_tensors(t: dict[str, torch.Tensor], path: Path) -> None:
    """Shapes, finiteness and a light that lights: refuse what would render as garbage."""
    from palm.render.bounds import MAX_LOBES, MAX_SG_AMPLITUDE

    for key in ("shape_coeffs", "appearance_coeffs", "shape_code", "appearance_code"):
        least = 0 if key.endswith("coeffs") else 1  # a prior without PCA has no coefficients
        if t[key].dim() != 1 or not least <= t[key].numel() <= MAX_CODE:
            raise PalmError(path, f"'{key}' must be a vector of {least} to {MAX_CODE} numbers, found "
                                  f"{tuple(t[key].shape)}")
    for key, value in t.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise PalmError(path, f"'{key}' contains NaN or infinite values")
    light = t["light"]
    if light.dim() != 2 or light.shape[1] != 7 or not 0 < light.shape[0] <= MAX_LOBES:
        raise PalmError(path, f"light must be (K, 7) with 1 to {MAX_LOBES} lobes, found {tuple(light.shape)}")
    if float(light[:, 4:7].abs().max()) > MAX_SG_AMPLITUDE or not bool((light[:, 4:7] > 0).any()):
        raise PalmError(path, f"light has no positive amplitude or one beyond {MAX_SG_AMPLITUDE:g}")
    if bool((light[:, 0:3].norm(dim=-1) == 0).any()):
        raise PalmError(path, "light has a lobe with a zero axis")


def _hand_arrays(meta: dict[str, Any], path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validated ``pose (16, 3)``, ``betas (n,)``, ``transl (3,)`` of ``avatar.json``; checks its camera too."""
    from palm.render.rays import Camera

    try:
        pose = np.asarray(meta["pose"], dtype=np.float32)
        betas = np.asarray(meta["betas"], dtype=np.float32)
        transl = np.asarray(meta["transl"], dtype=np.float32)
    except (TypeError, ValueError, OverflowError) as exc:
        raise PalmError(path, f"pose, betas and transl must be arrays of numbers ({exc})") from None
    if pose.shape != (16, 3):
        raise PalmError(path, f"pose must be 16x3, found {pose.shape}")
    if betas.ndim != 1 or betas.size > MAX_BETAS or transl.shape != (3,):
        raise PalmError(path, f"betas must be a list of numbers and transl 3 numbers, found {betas.shape} and "
                              f"{transl.shape}")
    if not (np.isfinite(pose).all() and np.isfinite(betas).all() and np.isfinite(transl).all()):
        raise PalmError(path, "pose, betas or transl contain NaN or infinite values")
    if not isinstance(meta["prior_hash"], str):
        raise PalmError(path, "prior_hash must be a string")
    try:
        Camera.from_dict(meta["camera"], path=str(path))
    except (TypeError, ValueError, RuntimeError, OverflowError) as exc:
        raise PalmError(path, f"camera needs K (3x3), Rt (4x4), height and width ({exc})") from None
    return pose, betas, transl
