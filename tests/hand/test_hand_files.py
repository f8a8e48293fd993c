"""Model and pose files: presets, accepted formats, and clear errors for malformed files."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from palm.errors import PalmError
from palm.hand import POSE_PRESETS, load_hand, load_pose

from .conftest import random_mano_arrays, write_pickle


def test_presets_exist_and_load():
    required = {"flat", "relaxed", "fist", "pinch", "point", "thumbs-up", "spread", "ok"}
    assert required <= set(POSE_PRESETS) and len(POSE_PRESETS) >= 8
    poses = {name: load_pose(name) for name in POSE_PRESETS}
    for name, pose in poses.items():
        assert pose.shape == (16, 3) and np.isfinite(pose).all(), name
    assert np.all(poses["flat"] == 0)
    assert len({p.tobytes() for p in poses.values()}) == len(poses)  # all different


def test_pose_file_formats(tmp_path):
    rng = np.random.default_rng(0)
    pose = rng.normal(size=(16, 3))
    (tmp_path / "a.json").write_text(json.dumps({"format": "palm-pose-v1", "pose": pose.tolist()}))
    (tmp_path / "b.json").write_text(json.dumps({"pose": pose.ravel().tolist()}))
    (tmp_path / "c.json").write_text(
        json.dumps({"hand_pose": pose[1:].ravel().tolist(), "global_orient": pose[0].tolist()})
    )
    np.save(tmp_path / "d.npy", pose)
    for name in "abc":
        assert np.allclose(load_pose(tmp_path / f"{name}.json"), pose)
    assert np.allclose(load_pose(tmp_path / "d.npy"), pose)
    np.save(tmp_path / "e.npy", pose[1:].ravel())  # 45 values: hand pose, zero global orientation
    e = load_pose(tmp_path / "e.npy")
    assert np.all(e[0] == 0) and np.allclose(e[1:], pose[1:])


def test_bad_pose_files(tmp_path):
    (tmp_path / "short.json").write_text(json.dumps({"pose": [[0, 0, 0]] * 15 + [[0, 0]]}))
    np.save(tmp_path / "bad.npy", np.zeros((4, 4)))
    (tmp_path / "text.json").write_text("not json {")
    with pytest.raises(PalmError, match=r"short\.json.*shape"):
        load_pose(tmp_path / "short.json")
    with pytest.raises(PalmError, match=r"bad\.npy: pose has shape \(4, 4\)"):
        load_pose(tmp_path / "bad.npy")
    with pytest.raises(PalmError, match=r"text\.json: malformed JSON"):
        load_pose(tmp_path / "text.json")
    with pytest.raises(PalmError, match="unknown pose preset"):
        load_pose("no-such-preset")
    with pytest.raises(PalmError, match="missing.json: pose file not found"):
        load_pose(tmp_path / "missing.json")


@pytest.mark.parametrize("key", ["J_regressor", "weights", "v_template", "kintree_table", "f", "shapedirs"])
def test_mano_file_missing_key(tmp_path, key):
    data = random_mano_arrays()
    del data[key]
    path = tmp_path / "MANO_RIGHT.pkl"
    write_pickle(path, data)
    with pytest.raises(PalmError) as err:
        load_hand("mano", path)
    assert str(path) in str(err.value) and f"missing key '{key}'" in str(err.value)


def test_mano_file_wrong_shape(tmp_path):
    data = random_mano_arrays()
    data["weights"] = data["weights"][:, :15]
    path = tmp_path / "MANO_RIGHT.pkl"
    write_pickle(path, data)
    with pytest.raises(PalmError) as err:
        load_hand("mano", path)
    msg = str(err.value)
    assert str(path) in msg and "weights" in msg


def test_mano_file_not_a_pickle(tmp_path, monkeypatch):
    path = tmp_path / "MANO_RIGHT.pkl"
    path.write_text("this is not a pickle\n")
    with pytest.raises(PalmError, match=r"MANO_RIGHT\.pkl: not a MANO model pickle"):
        load_hand("mano", path)
    with pytest.raises(PalmError, match="MANO model file not found"):
        load_hand("mano", tmp_path / "nothing.pkl")
    # the environment variable is the fallback path
    monkeypatch.setenv("PALM_MANO_PATH", str(tmp_path / "env.pkl"))
    with pytest.raises(PalmError, match=r"env\.pkl: MANO model file not found"):
        load_hand("mano")
    monkeypatch.delenv("PALM_MANO_PATH")
    with pytest.raises(PalmError, match="PALM_MANO_PATH"):
        load_hand("mano")


def test_mano_pickle_cannot_run_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "MANO_RIGHT.pkl"
    path.write_bytes(pickle.dumps({"v_template": Evil()}))
    with pytest.raises(PalmError, match="refuses to load builtins.print"):
        load_hand("mano", path)


def test_chumpy_arrays_are_read_without_chumpy(tmp_path, mano_file):
    # MANO's own file stores some arrays as chumpy objects: emulate one with a class whose pickle
    # names the chumpy module
    import sys
    import types

    mod = types.ModuleType("chumpy.ch")

    class Ch:
        def __init__(self, x):
            self.x = x

    Ch.__module__, Ch.__qualname__ = "chumpy.ch", "Ch"
    mod.Ch = Ch
    sys.modules["chumpy"] = types.ModuleType("chumpy")
    sys.modules["chumpy.ch"] = mod
    try:
        data = random_mano_arrays()
        data["shapedirs"] = Ch(data["shapedirs"])
        path = tmp_path / "MANO_RIGHT.pkl"
        write_pickle(path, data)
    finally:
        del sys.modules["chumpy"], sys.modules["chumpy.ch"]
    hand = load_hand("mano", path)
    ref = load_hand("mano", mano_file)
    assert np.allclose(hand.shapedirs.numpy(), ref.shapedirs.numpy())


def test_open_rig_file_errors(tmp_path):
    from palm.assets import HANDS

    arrays = dict(np.load(HANDS / "open_hand.npz"))
    del arrays["J_regressor"]
    path = tmp_path / "rig.npz"
    np.savez(path, **arrays)
    with pytest.raises(PalmError, match=r"rig\.npz: not a MANO-format hand model: missing key 'J_regressor'"):
        load_hand("open", path)
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(PalmError, match=r"junk\.npz"):
        load_hand("open", tmp_path / "junk.npz")
    with pytest.raises(PalmError, match="unknown hand source"):
        load_hand("smpl")


def test_pose_and_betas_bounds(tmp_path):
    """Poses beyond MAX_POSE_RADIANS or non-finite, and betas beyond MAX_BETA, are refused naming the source."""

    import numpy as np
    import pytest

    from palm.errors import PalmError
    from palm.hand.poses import MAX_BETA, MAX_POSE_RADIANS, check_betas, load_pose, pose_from_json

    ok = np.full((16, 3), MAX_POSE_RADIANS)
    assert pose_from_json(ok.tolist(), "p").shape == (16, 3)  # the bound itself is accepted
    with pytest.raises(PalmError, match=r"^p: pose has a value of 1e\+20 rad, beyond the limit of 1000"):
        pose_from_json((ok * 1e17).tolist(), "p")
    with pytest.raises(PalmError, match="'global_orient' contains NaN"):
        pose_from_json({"hand_pose": [0.0] * 45, "global_orient": [float("nan"), 0, 0]}, "p")
    big = tmp_path / "big.json"
    big.write_text('{"pose": [' + "9" * 400 + ", 0" * 47 + "]}")
    with pytest.raises(PalmError, match="not an array of numbers"):
        load_pose(big)
    assert check_betas([MAX_BETA, -1.0], "--betas").tolist() == [MAX_BETA, -1.0]
    for bad, what in (([float("inf")], "NaN or infinite"), ([1e30], "beyond the limit of 100"),
                      ([0.0] * 11, "the hand model has 10"), (["x"], "list of numbers")):
        with pytest.raises(PalmError, match=what):
            check_betas(bad, "--betas", 10)
