"""Sources of MANO-format arrays: the user's ``MANO_RIGHT.pkl`` (through smplx) and the open rig.

MANO's licence does not allow shipping its files, so MANO stays a file the user brings: the path
comes from ``load_hand("mano", path)`` (the CLI's ``--mano PATH``) or ``$PALM_MANO_PATH``.

The official pickle stores some arrays as ``chumpy`` objects. Rather than importing chumpy (and
rather than running arbitrary pickled code), the file is read with a restricted unpickler that
accepts numpy, scipy.sparse and chumpy leaf arrays only; the arrays are then handed to
``smplx.MANO(data_struct=..., is_rhand=True, use_pca=False, flat_hand_mean=True)`` and read back from
its buffers, so the user's model goes through smplx's own conversion before reaching the one
loader, :func:`palm.hand.model.hand_from_arrays`.
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from palm.assets import HANDS
from palm.errors import PalmError

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


_SAFE_GLOBALS = {
    ("copyreg", "_reconstructor"),
    ("builtins", "object"),
    ("_codecs", "encode"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
}


class _MANOUnpickler(pickle.Unpickler):
    """Only rebuilds numpy arrays, scipy sparse matrices and chumpy leaf arrays."""

    def find_class(self, module: str, name: str) -> Any:
        if module.split(".")[0] == "chumpy":
            return _ChumpyArray
        if (module, name) in _SAFE_GLOBALS:
            return super().find_class(module, name)
        if module.startswith("scipy.sparse") and name in {"csc_matrix", "csr_matrix", "coo_matrix"}:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refuses to load {module}.{name}")


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
        with open(path, "rb") as fh:
            data = _MANOUnpickler(fh, encoding="latin1").load()
    except pickle.UnpicklingError as exc:
        raise PalmError(path, f"not a MANO model pickle ({exc})") from None
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError, ImportError) as exc:
        raise PalmError(path, f"not a MANO model pickle ({type(exc).__name__}: {exc})") from None
    if not isinstance(data, dict):
        raise PalmError(path, f"not a MANO model: the pickle holds a {type(data).__name__}, not a dict")
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, _ChumpyArray):
            try:
                value = value.array()
            except ValueError as exc:
                raise PalmError(path, f"key '{key}' is {exc}") from None
        out[str(key)] = value
    return out


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
