"""Shared builders for the reliability tests: small valid inputs that the tests then break.

Everything is made in temporary folders: a hand-written PALM-layout dataset (one subject, one
camera, one frame, 32 x 32), a tiny prior and an avatar that belongs to it, and a checkpoint.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]

#: Model fields shrunk so that a prior is small and quick to build (values of tests/train).
TINY_MODEL = (
    "model.hash_geometry.n_levels=4", "model.hash_geometry.log2_hashmap_size=10",
    "model.hash_radiance.n_levels=4", "model.hash_radiance.log2_hashmap_size=10", "model.light.n_lobes=4",
    "model.sampler.n_steps=32", "model.sampler.occ_grid_res=16", "model.deformer.skin_grid_res=16",
)


def run_palm(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``python -m palm ARGS`` from the repository root and capture its output."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore::DeprecationWarning"}
    return subprocess.run([sys.executable, "-m", "palm", *args], capture_output=True, text=True, cwd=ROOT, check=False,
                          timeout=timeout, env=env)


def make_dataset(root: Path, res: int = 32, frames: int = 1) -> Path:
    """A complete PALM-layout dataset: subject ``0000``, camera ``cam0``, ``frames`` frames.

    Poses are stored flat-hand absolute (``meta.json``), so no MANO file is needed to read it.
    """
    from PIL import Image

    from palm.data.palm_dataset import POSE_ABSOLUTE, frame_name

    sdir = root / "0000"
    K = np.array([[2.0 * res, 0, res / 2], [0, 2.0 * res, res / 2], [0, 0, 1]])
    Rt = np.eye(4)
    Rt[2, 3] = 0.5
    sdir.mkdir(parents=True)
    np.save(sdir / "cameras.npy", {"cameras": {"cam0": {"K": K, "Rt": Rt, "height": res, "width": res}}})
    np.save(sdir / "poses.npy", {"betas": np.zeros(10), "hand_pose": np.zeros((frames, 45)),
                                 "global_orient": np.zeros((frames, 3)), "transl": np.zeros((frames, 3))})
    (root / "meta.json").write_text(json.dumps({"hand_pose_convention": POSE_ABSOLUTE}))
    rng = np.random.default_rng(0)
    for folder in ("images", "masks"):
        (sdir / folder / "cam0").mkdir(parents=True)
        for f in range(frames):
            if folder == "images":
                pixels = (rng.random((res, res, 3)) * 255).astype(np.uint8)
            else:
                pixels = np.zeros((res, res), np.uint8)
                pixels[res // 4 : -res // 4, res // 4 : -res // 4] = 255
            Image.fromarray(pixels).save(sdir / folder / "cam0" / f"{frame_name(f)}.png")
    return root


def tiny_config():
    from palm import config as C

    return C.apply_overrides(C.PRESETS["cpu"], list(TINY_MODEL))


def make_prior(folder: Path, seed: int = 0) -> str:
    """Save a randomly initialised tiny prior (2 subjects); returns its content hash."""
    import torch

    from palm.hand import load_hand
    from palm.model import PalmNet
    from palm.prior import save_prior

    torch.manual_seed(seed)
    return save_prior(folder, PalmNet(tiny_config().model, load_hand("open"), 2))


def make_avatar(folder: Path, prior_hash: str) -> Path:
    """Save a valid avatar (mean subject, flat hand, 32 x 32 camera) for the prior ``prior_hash``."""
    import torch

    from palm.avatar import Avatar, save_avatar

    Rt = np.eye(4)
    Rt[2, 3] = 0.5
    avatar = Avatar(
        shape_coeffs=torch.zeros(5), appearance_coeffs=torch.zeros(5), shape_code=torch.zeros(32),
        appearance_code=torch.zeros(32), light=torch.rand(4, 7), pose=np.zeros((16, 3)), betas=np.zeros(10),
        transl=np.zeros(3), camera={"K": [[64.0, 0, 16], [0, 64.0, 16], [0, 0, 1]], "Rt": Rt.tolist(),
                                    "height": 32, "width": 32},
        prior_hash=prior_hash,
    )
    save_avatar(folder, avatar, report={"psnr_masked": 0.0})
    return folder


def make_checkpoint(run: Path, step: int = 3) -> Path:
    """A checkpoint of a tiny model (no optimiser state) in ``run/checkpoints``; returns its path."""
    import torch

    from palm import config as C
    from palm.hand import load_hand
    from palm.model import PalmNet
    from palm.train.checkpoint import save_checkpoint

    cfg = tiny_config()
    torch.manual_seed(0)
    model = PalmNet(cfg.model, load_hand("open"), 1)
    return save_checkpoint(run, step, model, None, {"config": C.to_dict(cfg), "preset": "cpu", "seed": 0})


@pytest.fixture(scope="session")
def tiny_prior(tmp_path_factory) -> tuple[Path, str]:
    """``(folder, content_hash)`` of a valid tiny prior; copy it before changing anything."""
    folder = tmp_path_factory.mktemp("prior") / "prior"
    return folder, make_prior(folder)


@pytest.fixture(scope="session")
def tiny_avatar(tmp_path_factory, tiny_prior) -> Path:
    """A valid avatar folder made for ``tiny_prior``; copy it before changing anything."""
    return make_avatar(tmp_path_factory.mktemp("avatar") / "avatar", tiny_prior[1])
