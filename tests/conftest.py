"""Shared pytest configuration: capability markers skip cleanly where a capability is missing."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")


def _has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:  # pragma: no cover
        return False


@pytest.fixture(scope="module")
def prior(tmp_path_factory):
    """A tiny random prior (:func:`palm.eval.make_tiny_prior`), one per test module."""
    from palm.eval import make_tiny_prior
    from palm.prior import load_prior

    path = tmp_path_factory.mktemp("prior") / "tiny"
    make_tiny_prior(path)
    return load_prior(path)


@pytest.fixture(scope="module")
def shipped():
    """The shipped prior: its baked surface is a hand (the tiny test prior's is a random blob)."""
    from palm.assets import DEFAULT_PRIOR
    from palm.prior import load_prior

    return load_prior(DEFAULT_PRIOR)


@pytest.fixture(scope="module")
def framed(shipped):
    """The shipped prior's flat hand, baked and seen from across its palm plane, 96 px:
    ``(mesh, camera, axes)``, where ``axes[2]`` is the camera's viewing axis (the hand's normal)."""
    import torch

    from palm.bake import bake_from_prior
    from palm.render.rays import Camera

    mesh = bake_from_prior(shipped, resolution=40, rig_fill=0.001)
    centre = mesh.vertices.mean(0)
    axes = np.linalg.svd(mesh.vertices - centre, full_matrices=False)[2]
    axes *= np.sign(axes[np.arange(3), np.abs(axes).argmax(1)])[:, None]  # SVD's signs are arbitrary: fix them
    rot = np.stack([axes[0], np.cross(axes[2], axes[0]), axes[2]])
    Rt = np.eye(4, dtype=np.float32)
    Rt[:3, :3] = rot
    Rt[:3, 3] = -rot @ centre + [0.0, 0.0, 0.45]
    K = np.array([[250.0, 0, 48], [0, 250.0, 48], [0, 0, 1]], np.float32)
    return mesh, Camera(torch.as_tensor(K), torch.as_tensor(Rt), 96, 96), axes


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs CUDA")
    cuda = _has_cuda()
    for item in items:
        if "gpu" in item.keywords and not cuda:
            item.add_marker(skip_gpu)
