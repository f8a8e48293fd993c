"""The foundation: CLI error contract, atomic writes, config round trip, layering."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from palm import config as C
from palm.errors import PalmError
from palm.io import atomic_write, read_json, write_json

ROOT = Path(__file__).resolve().parent.parent


def test_atomic_write_leaves_old_file_on_error(tmp_path):
    target = tmp_path / "a.json"
    write_json(target, {"v": 1})
    with pytest.raises(RuntimeError), atomic_write(target) as tmp:
        tmp.write_text('{"v": 2')
        raise RuntimeError("killed mid-write")
    assert json.loads(target.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_read_json_names_file_and_problem(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    with pytest.raises(PalmError) as err:
        read_json(bad)
    assert str(bad) in str(err.value) and "malformed JSON" in str(err.value)
    with pytest.raises(PalmError, match="file not found"):
        read_json(tmp_path / "missing.json")


@pytest.mark.parametrize("name", sorted(C.PRESETS))
def test_config_round_trip(name):
    cfg = C.PRESETS[name]
    again = C.from_dict(C.TrainConfig, json.loads(json.dumps(C.to_dict(cfg))))
    assert again == cfg


def test_paper_defaults_match_spec():
    cfg = C.PRESETS["paper"]
    assert cfg.model.hash_geometry.out_dim == 67
    assert cfg.max_steps == 24000 and cfg.pbr_start_step == 12001 and cfg.geometry_freeze_steps == 6001
    assert abs(cfg.model.canonical.half_side - 0.13806) < 1e-5
    assert C.PERSONALIZE_PRESETS["paper"].max_steps == 5200


def test_engine_never_imports_gui():
    forbidden = {"app", "dearpygui", "Xlib"}  # moderngl/EGL is allowed for palm.render rasterisation
    for path in (ROOT / "palm").rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for n in names:
                assert n.split(".")[0] not in forbidden, f"{path} imports {n}"


def test_cli_help_and_unknown_command():
    out = subprocess.run([sys.executable, "-m", "palm", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "palm-studio" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "palm", "no-such-command"], capture_output=True, text=True)
    assert bad.returncode == 2
