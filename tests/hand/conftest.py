"""Fixtures of the hand-model tests: a random but valid MANO-format model file."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import scipy.sparse


def random_mano_arrays(seed: int = 0, n_verts: int = 778) -> dict:
    """Random arrays with MANO's key names and shapes (778 vertices so smplx's tip ids exist)."""
    rng = np.random.default_rng(seed)
    parents = np.array([-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14])
    kintree = np.stack([parents, np.arange(16)]).astype(np.int64)
    kintree[0, 0] = 4294967295  # what MANO's own file stores for the root
    logits = rng.normal(size=(n_verts, 16)) * 3
    weights = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    reg = rng.uniform(size=(16, n_verts)) * (rng.uniform(size=(16, n_verts)) < 0.05)
    reg[:, 0] += 1e-3
    reg /= reg.sum(1, keepdims=True)
    idx = np.arange(n_verts - 2)
    return {
        "v_template": rng.normal(scale=0.05, size=(n_verts, 3)),
        "shapedirs": rng.normal(scale=0.005, size=(n_verts, 3, 10)),
        "posedirs": rng.normal(scale=0.002, size=(n_verts, 3, 135)),
        "J_regressor": scipy.sparse.csc_matrix(reg),
        "weights": weights,
        "kintree_table": kintree,
        "f": np.stack([idx, idx + 1, idx + 2], 1).astype(np.uint32),
        "hands_components": rng.normal(size=(45, 45)),
        "hands_mean": rng.normal(scale=0.1, size=45),
    }


def write_pickle(path, data: dict) -> None:
    with open(path, "wb") as fh:
        pickle.dump(data, fh, protocol=2)


@pytest.fixture
def mano_file(tmp_path):
    """Path of a random MANO_RIGHT.pkl (plain numpy/scipy arrays in a pickled dict)."""
    path = tmp_path / "MANO_RIGHT.pkl"
    write_pickle(path, random_mano_arrays())
    return path
