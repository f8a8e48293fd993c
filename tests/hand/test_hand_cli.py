"""``palm hand export`` / ``palm hand presets`` run as a user would (subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import trimesh

ROOT = Path(__file__).resolve().parents[2]
PYTHON = ROOT / ".venv" / "bin" / "python"


def palm(*args: str) -> subprocess.CompletedProcess:
    exe = str(PYTHON if PYTHON.exists() else sys.executable)
    return subprocess.run(
        [exe, "-m", "palm", *args], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )


def test_presets_lists_names():
    res = palm("hand", "presets")
    assert res.returncode == 0, res.stderr
    names = res.stdout.split()
    assert {"flat", "fist", "ok", "thumbs-up"} <= set(names) and len(names) >= 8


def test_export_fist_glb_and_left_obj(tmp_path):
    out = tmp_path / "fist.glb"
    res = palm("hand", "export", "--hand", "open", "--pose", "fist", "--out", str(out))
    assert res.returncode == 0, res.stderr
    mesh = trimesh.load(out, force="mesh", process=False)
    rig = np.load(ROOT / "assets" / "hands" / "open_hand.npz")
    assert mesh.vertices.shape == rig["v_template"].shape
    extent = mesh.vertices.max(0) - mesh.vertices.min(0)
    assert 0.05 < extent.max() < 0.2  # metres, and a fist is shorter than the flat hand
    assert mesh.vertices.min(0)[0] > rig["v_template"].min(0)[0] + 0.03

    left = tmp_path / "ok_left.obj"
    res = palm("hand", "export", "--pose", "ok", "--left", "--betas", "1.5", "-0.5", "--out", str(left))
    assert res.returncode == 0, res.stderr
    mesh = trimesh.load(left, force="mesh", process=False)
    right = tmp_path / "ok_right.ply"
    assert palm("hand", "export", "--pose", "ok", "--betas", "1.5", "-0.5", "--out", str(right)).returncode == 0
    ref = trimesh.load(right, force="mesh", process=False)
    # the left hand is the mirror image (x -> -x) of the same gesture
    assert np.allclose(mesh.vertices, ref.vertices * [-1, 1, 1], atol=1e-5)


def test_bad_pose_file_is_one_line_error(tmp_path):
    bad = tmp_path / "pose.json"
    bad.write_text(json.dumps({"pose": [[0.0, 0.0, 0.0]] * 7}))
    out = tmp_path / "x.glb"
    res = palm("hand", "export", "--pose", str(bad), "--out", str(out))
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {bad}: ") and "(7, 3)" in lines[0]
    assert "Traceback" not in res.stderr and not out.exists()


def test_bad_extension_fails_before_work(tmp_path):
    res = palm("hand", "export", "--pose", "no-such-pose", "--out", str(tmp_path / "x.stl"))
    assert res.returncode == 2
    assert res.stderr.startswith(f"error: {tmp_path / 'x.stl'}: unsupported output format")


def test_missing_mano_file(tmp_path):
    res = palm(
        "hand", "export", "--hand", "mano", "--mano", str(tmp_path / "MANO_RIGHT.pkl"), "--out", str(tmp_path / "m.ply")
    )
    assert res.returncode == 2 and "MANO_RIGHT.pkl: MANO model file not found" in res.stderr
