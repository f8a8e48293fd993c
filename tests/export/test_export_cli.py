"""``palm export``: output validation before any work, and each sub-command end to end."""

from __future__ import annotations

import json

import imageio.v3 as iio
import numpy as np
import pytest
import trimesh

from palm.cli import export as export_cli
from palm.cli.main import main


@pytest.fixture
def toy_rig(monkeypatch, toy_hand, tmp_path):
    """Run the commands on the toy hand (the CLI's only dependency on the rig is ``_load_hand``),
    with no default prior installed, so that the toy rig's own mesh is what gets exported."""
    import palm.assets

    monkeypatch.setattr(palm.assets, "DEFAULT_PRIOR", tmp_path / "no_default_prior")
    calls = []

    def load(args):
        calls.append(args.hand)
        return toy_hand

    monkeypatch.setattr(export_cli, "_load_hand", load)
    return calls


def _error_lines(capsys):
    err = capsys.readouterr().err
    return [line for line in err.splitlines() if line.strip()]


@pytest.mark.parametrize(
    "argv",
    [
        ["export", "mesh", "--out", "{d}/hand.fbx"],
        ["export", "render", "--res", "64", "--out", "{d}/hand.jpg"],
        ["export", "turntable", "--frames", "3", "--out", "{d}/turn.avi"],
        ["export", "env", "--out", "{d}/env.hdr"],
    ],
)
def test_bad_extension_exits_2_with_one_error_line_and_writes_nothing(tmp_path, capsys, toy_rig, argv):
    rc = main([a.format(d=tmp_path) for a in argv])
    lines = _error_lines(capsys)
    assert rc == 2
    assert len(lines) == 1 and lines[0].startswith("error: ") and "unsupported output format" in lines[0]
    assert list(tmp_path.iterdir()) == []
    assert toy_rig == []  # failed before loading anything


def test_missing_output_folder_exits_2(tmp_path, capsys, toy_rig):
    rc = main(["export", "mesh", "--out", str(tmp_path / "nope" / "hand.glb")])
    lines = _error_lines(capsys)
    assert rc == 2 and len(lines) == 1 and "output folder does not exist" in lines[0]
    assert toy_rig == []


def test_neural_renderer_needs_a_prior(tmp_path, capsys, toy_rig):
    missing = tmp_path / "no_prior"
    rc = main(["export", "render", "--res", "32", "--renderer", "neural", "--prior", str(missing),
               "--out", str(tmp_path / "a.png")])
    lines = _error_lines(capsys)
    assert rc == 2 and len(lines) == 1 and lines[0] == f"error: {missing}: prior not found"
    assert list(tmp_path.iterdir()) == []


def test_missing_avatar_folder_is_named(tmp_path, capsys, toy_rig):
    rc = main(["export", "mesh", "--avatar", str(tmp_path / "missing"), "--out", str(tmp_path / "a.glb")])
    lines = _error_lines(capsys)
    assert rc == 2 and len(lines) == 1 and "missing: avatar folder not found" in lines[0]


@pytest.mark.parametrize("ext", ["glb", "obj", "ply"])
def test_export_mesh_writes_a_mesh_trimesh_opens(tmp_path, capsys, toy_rig, toy_avatar, ext):
    out = tmp_path / f"hand.{ext}"
    assert main(["export", "mesh", "--texture-res", "64", "--out", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    mesh = trimesh.load(out, process=False, force="mesh")
    assert len(mesh.faces) == len(toy_avatar.faces)
    assert toy_rig == [None]


def test_export_render_png_and_exr(tmp_path, toy_rig):
    assert main(["export", "render", "--res", "40", "--out", str(tmp_path / "a.png")]) == 0
    png = iio.imread(tmp_path / "a.png")
    assert png.shape == (40, 40, 4) and (png[..., 3] == 255).any() and (png[..., 3] == 0).any()
    assert main(["export", "render", "--res", "40", "--out", str(tmp_path / "a.exr")]) == 0
    from palm.imageio import read_exr

    exr = read_exr(tmp_path / "a.exr")
    assert exr.shape == (40, 40, 4)
    np.testing.assert_array_equal(exr[..., 3] > 0, png[..., 3] > 0)


def test_export_turntable_gif(tmp_path, toy_rig):
    out = tmp_path / "turn.gif"
    assert main(["export", "turntable", "--frames", "4", "--res", "32", "--out", str(out)]) == 0
    assert iio.imread(out, index=None).shape[0] == 4


def test_export_env_json_and_exr(tmp_path):
    assert main(["export", "env", "--out", str(tmp_path / "env.json"), "--height", "16"]) == 0
    lobes = np.array(json.loads((tmp_path / "env.json").read_text())["lobes"])
    assert lobes.ndim == 2 and lobes.shape[1] == 7
    assert (
        main(
            ["export", "env", "--env", str(tmp_path / "env.json"), "--out", str(tmp_path / "env.exr"), "--height", "16"]
        )
        == 0
    )
    from palm.imageio import read_exr

    assert read_exr(tmp_path / "env.exr").shape == (16, 32, 3)
