"""Pickled dataset and model files are read through palm.safepickle: no code runs, no size bomb goes off.

An attack file is a ``cameras.npy`` whose pickle names ``os.system`` / ``subprocess.call``: it must
be refused, naming the file, and the command must not run (its marker file stays absent). A bomb
is a few hundred bytes that declare gigabytes: it must be refused before anything is allocated
(the bombs run in a child process under a 2 GiB address-space limit, so a regression fails the
test instead of the machine).
"""

from __future__ import annotations

import io
import os
import pickle
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from palm.errors import PalmError
from palm.safepickle import MAX_ARRAY_BYTES, UnsafePickleError, load_npy_dict, loads

from .conftest import ROOT, make_dataset

_RECONSTRUCT = np.empty(0).__reduce__()[0]  # numpy's own array reconstructor, whatever its module path
MEMORY_LIMIT = 2 * 2**30


class _RunsCommand:
    """Pickles as a call of ``fn(arg)`` (what an attacker's file holds)."""

    def __init__(self, fn, arg):
        self.fn, self.arg = fn, arg

    def __reduce__(self):
        return (self.fn, (self.arg,))


class _ObjectArrayBomb:
    """Pickles as numpy's reconstructor plus a state declaring ``n`` object elements but holding one."""

    def __init__(self, n: int):
        self.n = n

    def __reduce__(self):
        return (_RECONSTRUCT, (np.ndarray, (0,), b"b"), (1, (self.n,), np.dtype(object), False, [None]))


class _ShapeBomb:
    """Pickles as ``_reconstruct(ndarray, (n,), dtype('O'))``: numpy would allocate the shape it is given."""

    def __init__(self, n: int):
        self.n = n

    def __reduce__(self):
        return (_RECONSTRUCT, (np.ndarray, (self.n,), np.dtype(object)))


def _npy_with_payload(path: Path, payload: bytes) -> Path:
    """A ``.npy`` file holding a 0-d object array whose pickle is ``payload`` (what np.save writes)."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "|O", "fortran_order": False, "shape": ()})
    path.write_bytes(buf.getvalue() + payload)
    return path


def _attack_payloads(marker: Path) -> dict[str, bytes]:
    return {
        "os.system": pickle.dumps({"cameras": _RunsCommand(os.system, f"touch {marker}")}, protocol=3),
        "subprocess.call": pickle.dumps({"cameras": _RunsCommand(subprocess.call, ["touch", str(marker)])}, protocol=3),
    }


def _bomb_payloads() -> dict[str, bytes]:
    n = 1_500_000_000  # 1.5e9 object pointers = 12 GB
    return {
        "object-array-state": pickle.dumps(_ObjectArrayBomb(n), protocol=3),
        "reconstruct-shape": pickle.dumps(_ShapeBomb(n), protocol=3),
        # NONE, LONG_BINPUT 2**31: the C unpickler would grow its memo table to 2**32 slots
        "memo-index": b"\x80\x03Nr" + struct.pack("<I", 2**31) + b".",
        # _codecs.encode applied 34 times to its own output with the hex codec: 2**34 bytes
        "codec-doubling": _codec_bomb(34),
    }


def _codec_bomb(doublings: int) -> bytes:
    """``encode(encode(... encode("a", "latin1") ..., "hex"), "hex")``: each call doubles its input."""

    def text(value: str) -> bytes:
        return b"X" + struct.pack("<I", len(value)) + value.encode()

    head = b"\x80\x03c_codecs\nencode\nq\x00" + b"h\x00" * doublings  # the function, once per call
    first = text("a") + text("latin1") + b"\x86R" + text("hex") + b"q\x01\x86R"
    return head + first + b"h\x01\x86R" * (doublings - 1) + b"."


def _limited_run(args: list[str]) -> subprocess.CompletedProcess:
    """Run ``args`` (a Python command line) under an address-space limit, from the repository root."""

    def limit() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))

    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(args, capture_output=True, text=True, cwd=ROOT, env=env, preexec_fn=limit,
                          timeout=120, check=False)  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Attacks: code named by the pickle never runs
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["os.system", "subprocess.call"])
def test_attack_npy_is_refused_and_runs_nothing(tmp_path, name):
    marker = tmp_path / "pwned"
    path = _npy_with_payload(tmp_path / "cameras.npy", _attack_payloads(marker)[name])
    with pytest.raises(UnsafePickleError) as err:
        load_npy_dict(path)
    assert str(err.value).startswith(f"{path}: refuses to load ")
    assert not marker.exists()


def test_attack_saved_by_numpy_itself_is_refused(tmp_path):
    """The attack as ``np.save`` writes it (the documented way to make a release-style file)."""
    marker = tmp_path / "pwned"
    path = tmp_path / "poses.npy"
    np.save(path, {"betas": _RunsCommand(os.system, f"touch {marker}")})
    with pytest.raises(UnsafePickleError, match="refuses to load (posix|os|nt).system"):
        load_npy_dict(path)
    assert not marker.exists()


def test_dataset_reader_refuses_attack_cameras(tmp_path):
    from palm.data.check import check_dataset
    from palm.data.palm_dataset import PalmDataset

    root = make_dataset(tmp_path / "data")
    marker = tmp_path / "pwned"
    cams = _npy_with_payload(root / "0000" / "cameras.npy", _attack_payloads(marker)["os.system"])
    with pytest.raises(UnsafePickleError, match="refuses to load"):
        PalmDataset(root).load("0000", 0, "cam0")  # what `palm train` reads
    with pytest.raises(UnsafePickleError) as err:
        check_dataset(root)  # not collected as an ordinary "malformed" file
    assert str(cams) in str(err.value)
    assert not marker.exists()


@pytest.mark.parametrize("name", ["os.system", "subprocess.call"])
def test_palm_data_check_on_attack_cameras_exits_2_with_one_line(tmp_path, name):
    root = make_dataset(tmp_path / "data")
    marker = tmp_path / "pwned"
    cams = _npy_with_payload(root / "0000" / "cameras.npy", _attack_payloads(marker)[name])
    for extra in ([], ["--strict"], ["--json"]):
        r = _limited_run([sys.executable, "-m", "palm", "data", "check", str(root), *extra])
        assert r.returncode == 2, r.stderr
        assert r.stdout == ""
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: {cams}: "), r.stderr
        assert "Traceback" not in r.stderr
    assert not marker.exists()


def test_mano_pickle_attack_is_refused(tmp_path):
    from palm.hand.mano import read_mano_pickle

    marker = tmp_path / "pwned"
    path = tmp_path / "MANO_RIGHT.pkl"
    path.write_bytes(pickle.dumps({"v_template": _RunsCommand(os.system, f"touch {marker}")}, protocol=2))
    with pytest.raises(UnsafePickleError, match="refuses to load"):
        read_mano_pickle(path)
    assert not marker.exists()


def test_mano_sparse_matrix_indices_are_checked(tmp_path):
    """scipy's sparse kernels trust a matrix's indices: an unpickled one is rebuilt and checked."""
    import scipy.sparse

    from palm.hand.mano import read_mano_pickle

    reg = scipy.sparse.csc_matrix(np.eye(16, 778))
    data = {"J_regressor": reg, "weights": np.zeros((778, 16))}
    path = tmp_path / "MANO_RIGHT.pkl"
    path.write_bytes(pickle.dumps(data, protocol=2))
    assert abs(read_mano_pickle(path)["J_regressor"] - reg).sum() == 0  # a sound matrix reads back
    reg.indices = reg.indices.copy()
    reg.indices[3] = 10**6  # a row far outside the 16 x 778 matrix
    path.write_bytes(pickle.dumps(data, protocol=2))
    with pytest.raises(PalmError, match="'J_regressor' is a malformed sparse matrix"):
        read_mano_pickle(path)


# ---------------------------------------------------------------------------------------------
# Bombs: nothing is allocated past the bounds
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(_bomb_payloads()))
def test_expansion_bomb_is_refused_without_allocating(tmp_path, name):
    payload = _bomb_payloads()[name]
    assert len(payload) < 400  # a few hundred bytes ...
    path = _npy_with_payload(tmp_path / "cameras.npy", payload)
    code = (
        "import sys\n"
        "from palm.safepickle import UnsafePickleError, load_npy_dict\n"
        "try:\n"
        "    load_npy_dict(sys.argv[1])\n"
        "except UnsafePickleError as exc:\n"
        "    print(exc)\n"
        "    sys.exit(3)\n"
    )
    r = _limited_run([sys.executable, "-c", code, str(path)])
    assert r.returncode == 3, (r.returncode, r.stdout, r.stderr)  # ... refused, not a MemoryError
    assert r.stdout.startswith(f"{path}: refuses to load")


def test_palm_data_check_on_a_bomb_exits_2(tmp_path):
    root = make_dataset(tmp_path / "data")
    cams = _npy_with_payload(root / "0000" / "cameras.npy", _bomb_payloads()["object-array-state"])
    r = _limited_run([sys.executable, "-m", "palm", "data", "check", str(root)])
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {cams}: refuses to load"), r.stderr
    assert "bound" in lines[0]


def test_array_and_file_bounds(tmp_path):
    path = tmp_path / "big.npy"
    np.save(path, {"x": np.zeros(1000, np.float64)})
    assert load_npy_dict(path)["x"].shape == (1000,)
    with pytest.raises(UnsafePickleError, match="8000 bytes"):
        load_npy_dict(path, max_array_bytes=4000)
    with pytest.raises(UnsafePickleError, match="larger than 1000 bytes"):
        load_npy_dict(path, max_file_bytes=1000)
    # the bound holds for all arrays of a file together
    np.save(path, {"a": np.zeros(300), "b": np.zeros(300)})
    with pytest.raises(UnsafePickleError, match="bound"):
        load_npy_dict(path, max_array_bytes=4000)
    assert MAX_ARRAY_BYTES >= 64 * 2**20  # real datasets stay far below


def test_corrupt_streams_are_ordinary_errors(tmp_path):
    with pytest.raises(PalmError, match="not a readable pickle") as err:
        loads(b"\x80\x03}q\x00(X\x01\x00\x00\x00a", "x.pkl")  # truncated
    assert not isinstance(err.value, UnsafePickleError)
    path = _npy_with_payload(tmp_path / "cameras.npy", b"garbage")
    with pytest.raises(PalmError, match="not a readable pickle"):
        load_npy_dict(path)


# ---------------------------------------------------------------------------------------------
# The release format still reads
# ---------------------------------------------------------------------------------------------


def test_release_style_dict_round_trip(tmp_path):
    from palm.data.palm_dataset import read_cameras, read_poses

    rng = np.random.default_rng(0)
    cams = {f"MCU_0{i}": {"K": rng.normal(size=(3, 3)), "Rt": np.eye(4), "height": 334, "width": 512} for i in (1, 2)}
    poses = {
        "betas": rng.normal(size=(1, 10)).astype(np.float32),
        "hand_pose": rng.normal(size=(5, 45)).astype(np.float32),
        "global_orient": rng.normal(size=(5, 3)).astype(np.float32),
        "transl": rng.normal(size=(5, 3)).astype(np.float32),
    }
    extras = {
        "names": ["a", "b"],
        "nested": {"t": (1, 2.5, None, True), "big": 2**70, "z": 1 + 2j},
        "scalar": np.float32(0.5),
        "fortran": np.asfortranarray(rng.normal(size=(3, 4))),
        "objects": np.array([None, np.arange(3)], dtype=object),
        "record": np.array([(1, 2.0)], dtype=[("i", "<i4"), ("f", "<f8")]),
        "text": np.array(["ab", "c"]),
        "raw": b"\x00\x01",
    }
    np.save(tmp_path / "cameras.npy", {"cameras": cams})
    np.save(tmp_path / "poses.npy", {**poses, **extras})

    got = load_npy_dict(tmp_path / "cameras.npy")
    for cam, c in cams.items():
        for key, value in c.items():
            np.testing.assert_array_equal(got["cameras"][cam][key], value)
    assert list(read_cameras(tmp_path / "cameras.npy")) == ["MCU_01", "MCU_02"]
    got = load_npy_dict(tmp_path / "poses.npy")
    for key, value in poses.items():
        assert type(got[key]) is np.ndarray and got[key].dtype == value.dtype
        np.testing.assert_array_equal(got[key], value)
    assert read_poses(tmp_path / "poses.npy").n_frames == 5
    assert got["names"] == ["a", "b"] and got["nested"] == extras["nested"] and got["raw"] == b"\x00\x01"
    assert type(got["scalar"]) is np.float32 and got["scalar"] == 0.5
    assert type(got["fortran"]) is np.ndarray and np.array_equal(got["fortran"], extras["fortran"])
    assert got["objects"][0] is None and type(got["objects"][1]) is np.ndarray
    assert np.array_equal(got["objects"][1], np.arange(3))
    assert np.array_equal(got["record"], extras["record"]) and np.array_equal(got["text"], extras["text"])


def test_not_a_dict_is_an_error(tmp_path):
    np.save(tmp_path / "a.npy", np.arange(6))
    with pytest.raises(PalmError, match="expected a dict saved with numpy, got an array of dtype int64"):
        load_npy_dict(tmp_path / "a.npy")
    np.save(tmp_path / "b.npy", np.array([1, "x"], dtype=object))
    with pytest.raises(PalmError, match="object array of shape"):
        load_npy_dict(tmp_path / "b.npy")


def test_no_pickle_loading_left_in_the_repository():
    needle = "allow_pickle" + "=True"
    hits = [
        str(p.relative_to(ROOT))
        for top in ("palm", "app", "tests", "tools", "bench")
        for p in (ROOT / top).rglob("*.py")
        if needle in p.read_text(errors="replace")
    ]
    assert not hits, f"{needle} in {hits}"
