"""Shared pytest configuration: capability markers skip cleanly where a capability is missing."""

from __future__ import annotations

import os

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


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs CUDA")
    cuda = _has_cuda()
    for item in items:
        if "gpu" in item.keywords and not cuda:
            item.add_marker(skip_gpu)
