"""Sources of MANO-format arrays: the user's ``MANO_RIGHT.pkl`` (through smplx) and the open rig.

MANO's licence does not allow shipping its files, so MANO stays a file the user brings: the path
comes from ``load_hand("mano", path)`` (the CLI's ``--mano PATH``) or ``$PALM_MANO_PATH``.

The official pickle stores some arrays as ``chumpy`` objects. Rather than importing chumpy (and
rather than running arbitrary pickled code), the file is read with the project's one restricted
unpickler (:mod:`palm.safepickle`: numpy arrays and plain values, size-bounded) plus MANO's own
allowances, scipy.sparse matrices and chumpy leaf arrays (as a stand-in class); the arrays are
then handed to ``smplx.MANO(data_struct=..., is_rhand=True, use_pca=False, flat_hand_mean=True)``
and read back from its buffers, so the user's model goes through smplx's own conversion before
reaching the one loader, :func:`palm.hand.model.hand_from_arrays`.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import os
from pathlib import Path
from typing import Any

import numpy as np

from palm.assets import HANDS
from palm.errors import PalmError
from palm.safepickle import MAX_ARRAY_BYTES, UnsafePickleError, load_pickle

#: Environment variable with the path of the user's MANO_RIGHT.pkl.
MANO_ENV = "PALM_MANO_PATH"
#: The embedded open rig.
OPEN_HAND_FILE = HANDS / "open_hand.npz"
#: Keys smplx needs to build a MANO layer.
MANO_PKL_KEYS = ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table", "f",
                 "hands_components", "hands_mean")  # fmt: skip


class _ChumpyArray:
    """Stand-in for a pickled ``chumpy.Ch``: keeps its state, exposes the array it wraps."""

    def __init__(self, *args: Any, **kwargs: Any):
        pass

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def array(self) -> np.ndarray:
        state = self.state if isinstance(self.state, dict) else {}
        if "x" not in state:
            raise ValueError("a chumpy expression that is not a plain array")
        return np.asarray(state["x"])


#: scipy sparse matrix classes a MANO file may hold (its J_regressor).
_SPARSE_CLASSES = frozenset({"csc_matrix", "csr_matrix", "coo_matrix"})


def _mano_globals(module: str, name: str) -> Any:
    """MANO's allowances on top of :mod:`palm.safepickle`'s numpy allow-list: chumpy leaves (as
    :class:`_ChumpyArray`), scipy sparse matrices and the Python 2 object reconstructor."""
    if module.split(".")[0] == "chumpy":
        return _ChumpyArray
    if module.split(".")[:2] == ["scipy", "sparse"] and name in _SPARSE_CLASSES:
        return getattr(importlib.import_module(module), name)
    if (module, name) == ("copyreg", "_reconstructor"):
        return _reconstructor
    if (module, name) == ("builtins", "object"):
        return object
    return None


def _reconstructor(cls: Any, base: Any, state: Any) -> Any:
    """``copyreg._reconstructor`` limited to the classes :func:`_mano_globals` allows."""
    allowed = cls is _ChumpyArray or (isinstance(cls, type) and cls.__name__ in _SPARSE_CLASSES)
    if not allowed or base is not object or state is not None:
        raise ValueError(f"cannot rebuild {cls!r} from {base!r}")
    return object.__new__(cls)


def read_mano_pickle(path: str | os.PathLike) -> dict[str, Any]:
    """Read a MANO ``.pkl`` into a dict of numpy arrays (chumpy leaves converted).

    Raises:
        PalmError: missing file, not a pickle, or a pickle that is not a dict of arrays.
    """
    path = Path(path)
    if not path.exists():
        raise PalmError(path, f"MANO model file not found (set --mano PATH or ${MANO_ENV})")
    if not path.is_file():
        raise PalmError(path, "expected a MANO_RIGHT.pkl file, found a folder")
    try:
        data = load_pickle(path, allow=_mano_globals)
    except UnsafePickleError:
        raise
    except PalmError as exc:
        detail = exc.message.removeprefix("not a readable pickle")
        raise PalmError(path, f"not a MANO model pickle{detail}") from None
    if not isinstance(data, dict):
        raise PalmError(path, f"not a MANO model: the pickle holds a {type(data).__name__}, not a dict")
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, _ChumpyArray):
            try:
                value = value.array()
            except ValueError as exc:
                raise PalmError(path, f"key '{key}' is {exc}") from None
        elif type(value).__name__ in _SPARSE_CLASSES:
            value = _checked_sparse(value, path, str(key))
        out[str(key)] = value
    return out


def _checked_sparse(value: Any, path: Path, key: str) -> Any:
    """A sparse matrix rebuilt by scipy's constructors from the unpickled one, its indices checked
    against its shape (scipy's kernels trust them) and its dense size bounded."""
    import scipy.sparse as sp

    try:
        shape = tuple(int(n) for n in value.shape)
        if len(shape) != 2 or min(shape) < 0 or shape[0] * shape[1] * 8 > MAX_ARRAY_BYTES:
            raise ValueError(f"shape {shape}")
        if isinstance(value, sp.coo_matrix):
            rows, cols = np.asarray(value.row), np.asarray(value.col)
            return sp.coo_matrix((np.asarray(value.data), (rows, cols)), shape=shape)  # checks the indices
        matrix = type(value)((np.asarray(value.data), np.asarray(value.indices), np.asarray(value.indptr)), shape=shape)
        matrix.check_format(full_check=True)
        return matrix
    except (AttributeError, TypeError, ValueError, IndexError, OverflowError) as exc:
        raise PalmError(path, f"key '{key}' is a malformed sparse matrix ({exc})") from None


def mano_arrays(path: str | os.PathLike) -> dict[str, Any]:
    """MANO-format arrays of the user's right-hand MANO model, as smplx builds them.

    Args:
        path: MANO_RIGHT.pkl.

    Returns:
        dict with v_template, shapedirs, posedirs (V,3,P), J_regressor, weights, kintree_table, f.

    Raises:
        PalmError: naming the file and what is missing or malformed.
    """
    raw = read_mano_pickle(path)
    for key in MANO_PKL_KEYS:
        if key not in raw:
            raise PalmError(path, f"not a MANO model: missing key '{key}'")
    import smplx
    import torch
    from smplx.utils import Struct

    try:
        with contextlib.redirect_stdout(io.StringIO()):  # smplx prints notes on stdout
            layer = smplx.MANO(
                str(path), data_struct=Struct(**raw), is_rhand=True, use_pca=False, flat_hand_mean=True,
                num_betas=int(np.shape(raw["shapedirs"])[-1]), dtype=torch.float32,
            )  # fmt: skip
    except Exception as exc:  # noqa: BLE001 - smplx raises anything on malformed arrays
        raise PalmError(path, f"malformed MANO model ({type(exc).__name__}: {exc})") from None
    n_v = layer.v_template.shape[0]
    posedirs = layer.posedirs.detach().cpu().numpy()  # (P, V*3)
    arrays = {
        "v_template": layer.v_template.cpu().numpy(),
        "shapedirs": layer.shapedirs.cpu().numpy(),
        "posedirs": posedirs.T.reshape(n_v, 3, -1),
        "J_regressor": layer.J_regressor.cpu().numpy(),
        "weights": layer.lbs_weights.cpu().numpy(),
        "kintree_table": np.stack([layer.parents.cpu().numpy(), np.arange(len(layer.parents))]),
        "f": np.asarray(layer.faces_tensor.cpu().numpy()),
    }
    for key in ("tip_vertex_ids", "seal_faces", "uv"):
        if key in raw:
            arrays[key] = np.asarray(raw[key])
    return arrays


def open_arrays(path: str | os.PathLike = OPEN_HAND_FILE) -> dict[str, np.ndarray]:
    """MANO-format arrays of the embedded open rig (``.npz`` written by tools/build_open_hand.py)."""
    path = Path(path)
    if not path.is_file():
        raise PalmError(path, "open hand rig not found (rebuild it with tools/build_open_hand.py)")
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError) as exc:
        raise PalmError(path, f"not a hand model archive ({exc})") from None


def find_mano(path: str | os.PathLike | None = None) -> Path | None:
    """The user's MANO file: ``path`` if given, else ``$PALM_MANO_PATH``, else None."""
    if path:
        return Path(path)
    env = os.environ.get(MANO_ENV)
    return Path(env) if env else None
