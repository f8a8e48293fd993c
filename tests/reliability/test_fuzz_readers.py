"""Fuzzing the readers of user files: whatever the bytes, the only exception is :class:`PalmError`.

Readers covered: images (``read_image``), poses (``load_pose``), avatars (``load_avatar``) and
datasets (``PalmDataset`` and ``check_dataset``). Inputs are random bytes, mutated valid files and
structurally plausible but wrong contents (random JSON values, arrays of random shapes and types).
The pickled dataset files (pickles by design of the PALM release) are read through
:mod:`palm.safepickle`, so their pickle streams are mutated too, not only their ``.npy`` headers.
"""

from __future__ import annotations

import io
import json
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from palm.errors import PalmError
from palm.safepickle import load_npy_dict

from .conftest import make_avatar, make_dataset

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                         HealthCheck.too_slow])


def only_palm_error(fn, *args):
    """Call ``fn``; a :class:`PalmError` is fine, any other exception fails the test (re-raised)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return fn(*args)
        except PalmError as exc:
            assert str(exc), "a PalmError without a message"
            return None


@pytest.fixture(scope="module")
def work() -> Path:
    with tempfile.TemporaryDirectory(prefix="palm-fuzz-") as d:
        yield Path(d)


# ---------------------------------------------------------------------------------------------
# Strategies
# ---------------------------------------------------------------------------------------------

json_leaves = st.one_of(st.none(), st.booleans(), st.integers(-(10**6), 10**6), st.floats(allow_nan=True),
                        st.text(max_size=8))
json_values = st.recursive(json_leaves, lambda kids: st.one_of(
    st.lists(kids, max_size=17), st.dictionaries(st.text(max_size=6), kids, max_size=4)), max_leaves=60)


def numeric_arrays(max_dims: int = 3, max_side: int = 17):
    dtype = st.sampled_from([np.float32, np.float64, np.int64, np.bool_, np.complex64, np.uint8])
    shape = hnp.array_shapes(min_dims=0, max_dims=max_dims, min_side=0, max_side=max_side)
    return dtype.flatmap(lambda dt: hnp.arrays(dt, shape))


def byte_mutations(data: bytes, head: int | None = None):
    """Random byte flips (in the first ``head`` bytes when given) and an optional truncation."""
    limit = len(data) if head is None else min(head, len(data))
    flips = st.lists(st.tuples(st.integers(0, limit - 1), st.integers(0, 255)), max_size=12)
    cut = st.one_of(st.none(), st.integers(0, len(data)))

    def apply(args):
        changes, keep = args
        buf = bytearray(data)
        for pos, value in changes:
            buf[pos] = value
        return bytes(buf if keep is None else buf[:keep])

    return st.tuples(flips, cut).map(apply)


def _image(fmt: str, size: int = 48) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray((rng.random((size, size, 3)) * 255).astype(np.uint8)).save(buf, format=fmt)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------------


@FUZZ
@given(data=st.binary(max_size=4096), ext=st.sampled_from([".png", ".jpg", ".tif", ".webp", ".bmp"]))
def test_image_reader_on_random_bytes(work, data, ext):
    from palm.imageio import read_image

    path = work / f"photo{ext}"
    path.write_bytes(data)
    image = only_palm_error(read_image, path)
    if image is not None:
        assert image.ndim == 3 and image.shape[2] == 3 and np.isfinite(image).all()


@FUZZ
@given(data=st.one_of(byte_mutations(_image("PNG")), byte_mutations(_image("JPEG"))))
def test_image_reader_on_mutated_png_and_jpeg(work, data):
    from palm.imageio import read_image

    path = work / "photo.img"
    path.write_bytes(data)
    image = only_palm_error(read_image, path)
    if image is not None:
        assert image.dtype == np.float32 and image.ndim == 3 and image.shape[2] == 3
        assert np.isfinite(image).all() and image.min() >= 0.0 and image.max() <= 1.0


# ---------------------------------------------------------------------------------------------
# Poses
# ---------------------------------------------------------------------------------------------


def _checked_pose(path: Path) -> None:
    from palm.hand import load_pose

    pose = only_palm_error(load_pose, path)
    if pose is not None:
        assert pose.shape == (16, 3) and np.isfinite(pose).all()


@FUZZ
@given(text=st.one_of(st.text(max_size=300), json_values.map(json.dumps)))
def test_pose_reader_on_random_json_text(work, text):
    path = work / "pose.json"
    path.write_text(text)
    _checked_pose(path)


@FUZZ
@given(value=json_values, key=st.sampled_from(["pose", "hand_pose"]),
       shape=st.sampled_from([(16, 3), (48,), (45,), (15, 3)]))
def test_pose_reader_on_pose_dicts_with_random_values(work, value, key, shape):
    data = {"pose": np.zeros(shape).tolist()} if key == "pose" else {"hand_pose": np.zeros(45).tolist()}
    data[key] = value
    path = work / "pose.json"
    path.write_text(json.dumps(data))
    _checked_pose(path)


@pytest.mark.parametrize("value", ["", {}, [[1, 2], [3]]], ids=["empty-string", "dict", "ragged"])
def test_pose_reader_on_non_numeric_global_orient(work, value):
    path = work / "pose.json"
    path.write_text(json.dumps({"hand_pose": np.zeros(45).tolist(), "global_orient": value}))
    _checked_pose(path)


@FUZZ
@given(array=numeric_arrays(), as_json=st.booleans())
def test_pose_reader_on_random_arrays(work, array, as_json):
    if as_json:
        path = work / "pose.json"
        values = array.tolist() if array.dtype.kind != "c" else array.real.tolist()
        path.write_text(json.dumps(values))
    else:
        path = work / "pose.npy"
        np.save(path, array)
    _checked_pose(path)


@FUZZ
@given(data=st.binary(min_size=0, max_size=600))
def test_pose_reader_on_random_npy_bytes(work, data):
    path = work / "pose.npy"
    path.write_bytes(data)
    _checked_pose(path)


def test_pose_reader_on_empty_npy(work):
    path = work / "pose.npy"
    path.write_bytes(b"")
    _checked_pose(path)


# ---------------------------------------------------------------------------------------------
# Avatars
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def valid_avatar(work) -> Path:
    return make_avatar(work / "valid_avatar", "0123456789abcdef")


def _fresh_avatar(work: Path, valid: Path) -> Path:
    folder = work / "avatar"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(valid, folder)
    return folder


def _checked_avatar(folder: Path) -> None:
    from palm.avatar import load_avatar

    avatar = only_palm_error(load_avatar, folder)
    if avatar is not None:
        assert avatar.pose.shape == (16, 3)
        avatar.camera_obj()  # a loaded avatar's camera is usable


@FUZZ
@given(key=st.sampled_from(["format", "prior_hash", "pose", "betas", "transl", "camera", "left", "photo"]),
       value=json_values, drop=st.booleans())
def test_avatar_reader_on_mutated_avatar_json(work, valid_avatar, key, value, drop):
    folder = _fresh_avatar(work, valid_avatar)
    meta = json.loads((folder / "avatar.json").read_text())
    if drop:
        meta.pop(key)
    else:
        meta[key] = value
    (folder / "avatar.json").write_text(json.dumps(meta))
    _checked_avatar(folder)


@FUZZ
@given(camera_key=st.sampled_from(["K", "Rt", "height", "width"]), value=json_values)
def test_avatar_reader_on_mutated_camera(work, valid_avatar, camera_key, value):
    folder = _fresh_avatar(work, valid_avatar)
    meta = json.loads((folder / "avatar.json").read_text())
    meta["camera"][camera_key] = value
    (folder / "avatar.json").write_text(json.dumps(meta))
    _checked_avatar(folder)


@FUZZ
@given(data=st.data())
def test_avatar_reader_on_random_or_mutated_safetensors(work, valid_avatar, data):
    folder = _fresh_avatar(work, valid_avatar)
    weights = folder / "avatar.safetensors"
    original = weights.read_bytes()
    content = data.draw(st.one_of(st.binary(max_size=1024), byte_mutations(original)))
    weights.write_bytes(content)
    _checked_avatar(folder)


@FUZZ
@given(text=st.one_of(st.text(max_size=200), st.binary(max_size=200).map(lambda b: b.decode("latin1"))))
def test_avatar_reader_on_random_json_text(work, valid_avatar, text):
    folder = _fresh_avatar(work, valid_avatar)
    (folder / "avatar.json").write_bytes(text.encode("utf-8", "surrogateescape"))
    _checked_avatar(folder)


# ---------------------------------------------------------------------------------------------
# Datasets
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def valid_dataset(work) -> Path:
    return make_dataset(work / "valid_dataset")


def _fresh_dataset(work: Path, valid: Path) -> Path:
    folder = work / "dataset"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(valid, folder)
    return folder


def _checked_dataset(root: Path) -> None:
    from palm.data.check import check_dataset
    from palm.data.palm_dataset import PalmDataset

    report = only_palm_error(check_dataset, root)
    if report is not None:
        assert isinstance(report["missing"], list) and isinstance(report["errors"], list)
    ds = only_palm_error(PalmDataset, root)
    if ds is None:
        return
    n = only_palm_error(len, ds)
    for i in range(n or 0):
        sample = only_palm_error(ds.__getitem__, i)
        if sample is not None:
            assert sample.image.shape[:2] == (sample.camera.height, sample.camera.width)
            assert sample.hand.pose.shape == (16, 3)


camera_values = st.one_of(json_values, numeric_arrays(max_dims=2, max_side=5))


@FUZZ
@given(key=st.sampled_from(["K", "Rt", "height", "width"]), value=camera_values, drop=st.booleans())
def test_dataset_reader_on_mutated_cameras(work, valid_dataset, key, value, drop):
    root = _fresh_dataset(work, valid_dataset)
    path = root / "0000" / "cameras.npy"
    data = load_npy_dict(path)
    cam = data["cameras"]["cam0"]
    if drop:
        cam.pop(key)
    else:
        cam[key] = value
    np.save(path, data)
    _checked_dataset(root)


@FUZZ
@given(key=st.sampled_from(["betas", "hand_pose", "global_orient", "transl"]),
       value=st.one_of(json_values, numeric_arrays(max_dims=3, max_side=50)), drop=st.booleans())
def test_dataset_reader_on_mutated_poses(work, valid_dataset, key, value, drop):
    root = _fresh_dataset(work, valid_dataset)
    path = root / "0000" / "poses.npy"
    data = load_npy_dict(path)
    if drop:
        data.pop(key)
    else:
        data[key] = value
    np.save(path, data)
    _checked_dataset(root)


@pytest.mark.parametrize("betas", [None, 0.5, np.float32(1)], ids=["none", "float", "numpy-scalar"])
def test_dataset_reader_on_scalar_betas(work, valid_dataset, betas):
    root = _fresh_dataset(work, valid_dataset)
    path = root / "0000" / "poses.npy"
    data = load_npy_dict(path)
    data["betas"] = betas
    np.save(path, data)
    _checked_dataset(root)


@FUZZ
@given(which=st.sampled_from(["cameras.npy", "poses.npy"]), data=st.data())
def test_dataset_reader_on_damaged_npy_files(work, valid_dataset, which, data):
    root = _fresh_dataset(work, valid_dataset)
    path = root / "0000" / which
    original = path.read_bytes()
    content = data.draw(st.one_of(
        byte_mutations(original, head=128),  # the .npy header
        st.integers(0, len(original)).map(lambda n: original[:n]),  # a half-downloaded file
        st.sampled_from([b"", b"not numpy", json.dumps({"cameras": {}}).encode()]),
        st.just(None),  # the value is not a dict
    ))
    if content is None:
        np.save(path, np.arange(6).reshape(2, 3))
    else:
        path.write_bytes(content)
    _checked_dataset(root)


@FUZZ
@given(which=st.sampled_from(["cameras.npy", "poses.npy"]), data=st.data())
def test_dataset_reader_on_mutated_pickle_streams(work, valid_dataset, which, data):
    """Flips anywhere in the pickled payload: palm.safepickle turns every outcome into a PalmError."""
    root = _fresh_dataset(work, valid_dataset)
    path = root / "0000" / which
    original = path.read_bytes()
    path.write_bytes(data.draw(byte_mutations(original)))
    _checked_dataset(root)
