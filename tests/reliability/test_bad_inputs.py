"""Bad inputs to real ``palm`` commands: exit 2, one line ``error: <path>: <what is wrong>``, nothing written.

Each row of :data:`CASES` builds its broken input in its own folder and names the command line,
the path the message must start with and a key phrase of the message. The commands run as
subprocesses (``python -m palm ...``), several at a time, when the module starts; each row is then
one test that checks the interface of issue 10:

* exit status 2;
* stderr is exactly one line, ``error: <path>: <what is wrong>``, with no traceback;
* the output folder of the case is still empty: no partial output and no stray temporary file.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from .conftest import make_checkpoint, make_dataset, run_palm

# ---------------------------------------------------------------------------------------------
# What a case gets to build its input
# ---------------------------------------------------------------------------------------------


@dataclass
class Ctx:
    """The folders of one case and the shared valid inputs it may copy and break.

    Attributes:
        inp: where the case writes its inputs.
        out: the case's output folder (empty; must stay empty).
        prior: a valid tiny prior (shared: copy before changing).
        prior_hash: its content hash.
        avatar: a valid avatar for ``prior`` (shared: copy before changing).
    """

    inp: Path
    out: Path
    prior: Path
    prior_hash: str
    avatar: Path

    def file(self, name: str, data: bytes | str) -> str:
        path = self.inp / name
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        return str(path)

    def copy(self, src: Path, name: str) -> Path:
        dst = self.inp / name
        shutil.copytree(src, dst)
        return dst


@dataclass(frozen=True)
class Case:
    """One bad input.

    Attributes:
        id: test id.
        build: makes the input in ``ctx.inp``; returns ``(argv after 'palm', path the message names)``.
        phrase: a key phrase of the message (case-insensitive).
    """

    id: str
    build: Callable[[Ctx], tuple[list[str], str]]
    phrase: str


# ---------------------------------------------------------------------------------------------
# Input makers
# ---------------------------------------------------------------------------------------------


def _image_bytes(fmt: str, size: int = 64, grey: bool = False) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(1)
    pixels = np.full((size, size, 3), 128, np.uint8) if grey else (rng.random((size, size, 3)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=fmt)
    return buf.getvalue()


def _exr(ctx: Ctx, name: str, pixels: np.ndarray) -> str:
    import OpenEXR

    path = ctx.inp / name
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    with OpenEXR.File(header, {"RGB": pixels.astype(np.float32)}) as exr:
        exr.write(str(path))
    return str(path)


def _pose_json(rows: int) -> str:
    return json.dumps({"format": "palm-pose-v1", "pose": [[0.0, 0.1, 0.0]] * rows})


def _edit_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


class _Evil:
    """A pickle that would run a shell command when loaded by a plain unpickler."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _photo(ctx: Ctx, name: str, data: bytes | str) -> tuple[list[str], str]:
    path = ctx.file(name, data)
    return ["photo", path, "--out", str(ctx.out / "photo")], path


def _mano(ctx: Ctx, data: bytes | str | None) -> tuple[list[str], str]:
    path = ctx.file("MANO_RIGHT.pkl", data) if data is not None else str(ctx.inp / "MANO_RIGHT.pkl")
    return ["hand", "export", "--hand", "mano", "--mano", path, "--out", str(ctx.out / "hand.obj")], path


def _pose(ctx: Ctx, name: str, data: bytes | str) -> tuple[list[str], str]:
    path = ctx.file(name, data)
    return ["hand", "export", "--pose", path, "--out", str(ctx.out / "hand.glb")], path


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def _env_fit(ctx: Ctx, path: str) -> tuple[list[str], str]:
    return ["env", "fit", path, "--lobes", "2", "--steps", "2", "--out", str(ctx.out / "env.json")], path


def _render(ctx: Ctx, *extra: str, out: str = "hand.png") -> list[str]:
    return ["render", "--prior", str(ctx.prior), "--res", "16", "--out", str(ctx.out / out), *extra]


def _broken_prior(ctx: Ctx, change: Callable[[Path], None], named: str) -> tuple[list[str], str]:
    prior = ctx.copy(ctx.prior, "prior")
    change(prior)
    argv = ["render", "--prior", str(prior), "--res", "16", "--out", str(ctx.out / "hand.png")]
    return argv, str(prior / named) if named else str(prior)


def _broken_avatar(ctx: Ctx, change: Callable[[Path], None], named: str) -> tuple[list[str], str]:
    avatar = ctx.copy(ctx.avatar, "avatar")
    change(avatar)
    return _render(ctx, "--avatar", str(avatar)), str(avatar / named) if named else str(avatar)


def _resume(ctx: Ctx, change: Callable[[Path], None], named: str) -> tuple[list[str], str]:
    run = ctx.inp / "run"
    ckpt = make_checkpoint(run)
    change(ckpt)
    data = make_dataset(ctx.inp / "data")
    argv = ["train", "--data", str(data), "--out", str(run), "--resume", "--no-tensorboard"]
    return argv, str(ckpt.with_suffix(named))


def _edit_tensors(path: Path, **changes) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(path))
    for key, change in changes.items():
        tensors[key] = change(tensors[key]).contiguous()
    save_file(tensors, str(path))


def _sg_json(lobes: list[list[float]]) -> str:
    return json.dumps({"format": "palm-sg-v1", "lobes": lobes})


def _rgbe_hdr(exponent: int) -> bytes:
    pixels = bytes([128, 128, 128, exponent]) * (4 * 8)
    return b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 4 +X 8\n" + pixels


def _preview(ctx: Ctx, source: str, out: str = "sky.png") -> tuple[list[str], str]:
    return ["env", "preview", source, "--lobes", "2", "--out", str(ctx.out / out)], source


def _truncate(path: Path, keep: int) -> None:
    path.write_bytes(path.read_bytes()[:keep])


# ---------------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------------

_PNG, _JPEG = _image_bytes("PNG"), _image_bytes("JPEG")
_NAN_POSE = '{"pose": [[NaN, 0, 0]' + ", [0, 0, 0]" * 15 + "]}"

CASES = [
    # --- photos (palm photo / palm personalize) -------------------------------------------------
    Case("photo-corrupt-bytes", lambda c: _photo(c, "hand.png", b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 2),
         "not an image"),
    Case("photo-truncated-jpeg", lambda c: _photo(c, "hand.jpg", _JPEG[: len(_JPEG) // 2]), "truncated"),
    Case("photo-truncated-png", lambda c: _photo(c, "hand.png", _PNG[: len(_PNG) // 2]), "truncated"),
    Case("photo-empty-file", lambda c: _photo(c, "hand.jpg", b""), "empty file"),
    Case("photo-text-named-jpg", lambda c: _photo(c, "hand.jpg", "these are not the pixels you are looking for\n"),
         "not an image"),
    Case("photo-tiny", lambda c: _photo(c, "hand.png", _image_bytes("PNG", size=8)), "too small"),
    Case("photo-no-hand", lambda c: _photo(c, "grey.png", _image_bytes("PNG", size=256, grey=True)), "no hand found"),
    Case("photo-missing", lambda c: (["photo", str(c.inp / "nope.jpg"), "--out", str(c.out / "photo")],
                                     str(c.inp / "nope.jpg")), "not found"),
    Case("photo-is-a-folder", lambda c: (["photo", str(c.inp), "--out", str(c.out / "photo")], str(c.inp)),
         "found a folder"),
    Case("personalize-no-hand", lambda c: (
        ["personalize", c.file("grey.png", _image_bytes("PNG", size=256, grey=True)), "--prior", str(c.prior),
         "--out", str(c.out / "avatar"), "--quiet"], str(c.inp / "grey.png")), "no hand found"),
    # --- MANO files (palm hand export --hand mano) ----------------------------------------------
    Case("mano-not-a-pickle", lambda c: _mano(c, "this is a text file, not MANO_RIGHT.pkl\n"),
         "not a mano model pickle"),
    Case("mano-wrong-dict", lambda c: _mano(c, pickle.dumps({"vertices": np.zeros((10, 3))})),
         "missing key 'v_template'"),
    Case("mano-not-a-dict", lambda c: _mano(c, pickle.dumps([1, 2, 3])), "not a dict"),
    Case("mano-missing", lambda c: _mano(c, None), "not found"),
    Case("mano-code-in-pickle", lambda c: _mano(c, pickle.dumps(_Evil(c.out / "pwned"))), "refuses to load"),
    # --- pose files (palm hand export --pose) ----------------------------------------------------
    Case("pose-wrong-shape-json", lambda c: _pose(c, "pose.json", _pose_json(17)), "has shape (17, 3)"),
    Case("pose-malformed-json", lambda c: _pose(c, "pose.json", '{"pose": [[0, 0, 0], '), "malformed json"),
    Case("pose-nan", lambda c: _pose(c, "pose.json", _NAN_POSE), "nan"),
    Case("pose-wrong-shape-npy", lambda c: _pose(c, "pose.npy", _npy_bytes(np.zeros((4, 4)))), "has shape (4, 4)"),
    Case("pose-not-numbers", lambda c: _pose(c, "pose.json", '{"pose": "fist"}'), "not an array of numbers"),
    Case("pose-no-pose-key", lambda c: _pose(c, "pose.json", '{"angles": []}'), "neither a 'pose'"),
    Case("pose-unknown-preset", lambda c: (["hand", "export", "--pose", "jazzhands", "--out", str(c.out / "h.obj")],
                                           "jazzhands"), "unknown pose preset"),
    # --- HDR / EXR maps (palm env fit) -----------------------------------------------------------
    Case("hdr-corrupt-exr", lambda c: _env_fit(c, c.file("sky.exr", b"v/1\x01" + bytes(200))), "not a readable openexr"),
    Case("hdr-truncated-radiance", lambda c: _env_fit(c, c.file(
        "sky.hdr", b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 16 +X 32\n" + bytes(40))), "truncated"),
    Case("hdr-text-named-hdr", lambda c: _env_fit(c, c.file("sky.hdr", "hello\n")), "not a radiance hdr file"),
    Case("hdr-wrong-extension", lambda c: _env_fit(c, c.file("sky.png", _PNG)), "unsupported environment map format"),
    Case("hdr-all-nan", lambda c: _env_fit(c, _exr(c, "sky.exr", np.full((16, 32, 3), np.nan))), "no light"),
    Case("hdr-all-negative", lambda c: _env_fit(c, _exr(c, "sky.exr", -np.ones((16, 32, 3)))), "no light"),
    Case("hdr-missing", lambda c: _env_fit(c, str(c.inp / "sky.exr")), "not found"),
    pytest.param(
        Case("hdr-all-nan-preview", lambda c: (
            ["env", "preview", _exr(c, "sky.exr", np.full((16, 32, 3), np.inf)), "--lobes", "2", "--out",
             str(c.out / "sky.png")], str(c.inp / "sky.exr")), "no light"),
        marks=[pytest.mark.slow],
        id="hdr-all-nan-preview",
    ),
    # --- dataset folders (palm data check / palm train --data) -----------------------------------
    Case("data-check-missing-folder", lambda c: (["data", "check", str(c.inp / "nope")], str(c.inp / "nope")),
         "folder not found"),
    Case("data-check-not-a-dataset", lambda c: (c.file("notes.txt", "hi"), (["data", "check", str(c.inp)],
                                                                            str(c.inp)))[1],
         "not a palm-layout dataset"),
    Case("data-check-a-file", lambda c: (["data", "check", c.file("data.zip", b"PK")], str(c.inp / "data.zip")),
         "not a folder"),
    Case("train-data-not-a-dataset", lambda c: (
        ["train", "--data", str(c.inp), "--out", str(c.out / "run"), "--no-tensorboard"], str(c.inp)),
         "not a palm-layout dataset"),
    # --- priors, avatars, checkpoints ------------------------------------------------------------
    Case("prior-missing-folder", lambda c: (_render(c)[:2] + [str(c.inp / "nope")] + _render(c)[3:],
                                            str(c.inp / "nope")), "prior not found"),
    Case("prior-corrupt-safetensors", lambda c: _broken_prior(
        c, lambda p: _truncate(p / "prior.safetensors", 100), "prior.safetensors"), "not a readable safetensors"),
    Case("prior-hash-mismatch", lambda c: _broken_prior(
        c, lambda p: _edit_json(p / "prior.json", content_hash="0123456789abcdef"), "prior.safetensors"),
         "content hash does not match"),
    Case("prior-wrong-format", lambda c: _broken_prior(
        c, lambda p: _edit_json(p / "prior.json", format="palm-prior-v0"), "prior.json"), "not a palm-studio prior"),
    Case("prior-other-version-config", lambda c: _broken_prior(
        c, lambda p: _edit_json(p / "prior.json", config={"no_such_field": 1}), "prior.json"),
         "config from another version"),
    Case("prior-corrupt-albedo-model", lambda c: _broken_prior(
        c, lambda p: (p / "albedo.safetensors").write_bytes(b"\xff" * 64), "albedo.safetensors"),
         "cannot read the albedo model"),
    Case("prior-no-sidecar", lambda c: _broken_prior(c, lambda p: (p / "prior.json").unlink(), "prior.json"),
         "not found"),
    Case("avatar-missing-folder", lambda c: (_render(c, "--avatar", str(c.inp / "nope")), str(c.inp / "nope")),
         "avatar folder not found"),
    Case("avatar-other-prior", lambda c: _broken_avatar(
        c, lambda a: _edit_json(a / "avatar.json", prior_hash="fedcba9876543210"), ""), "made for prior"),
    Case("avatar-corrupt-safetensors", lambda c: _broken_avatar(
        c, lambda a: (a / "avatar.safetensors").write_bytes(b"\xff" * 64), "avatar.safetensors"),
         "not a readable safetensors"),
    Case("avatar-wrong-format", lambda c: _broken_avatar(
        c, lambda a: _edit_json(a / "avatar.json", format="something-else"), "avatar.json"), "not a palm-studio avatar"),
    Case("avatar-bad-camera", lambda c: _broken_avatar(
        c, lambda a: _edit_json(a / "avatar.json", camera={"K": 3}), "avatar.json"), "camera"),
    Case("avatar-pose-wrong-shape", lambda c: _broken_avatar(
        c, lambda a: _edit_json(a / "avatar.json", pose=[[0.0, 0.0]] * 3), "avatar.json"), "pose must be 16x3"),
    Case("train-resume-nothing", lambda c: (
        ["train", "--data", str(make_dataset(c.inp / "data")), "--out", str(c.out / "run"), "--resume",
         "--no-tensorboard"], str(c.out / "run")), "nothing to resume"),
    Case("checkpoint-hash-mismatch", lambda c: _resume(
        c, lambda p: _edit_json(p.with_suffix(".json"), content_hash="0123456789abcdef"), ".safetensors"),
         "content hash does not match"),
    Case("checkpoint-corrupt", lambda c: _resume(c, lambda p: _truncate(p, 200), ".safetensors"),
         "not a readable checkpoint"),
    Case("checkpoint-other-version", lambda c: _resume(
        c, lambda p: _edit_json(p.with_suffix(".json"), config={"no_such_field": 1}), ".json"),
         "config from another version"),
    # --- outputs and numbers ---------------------------------------------------------------------
    Case("render-out-jpg", lambda c: (_render(c, out="hand.jpg"), str(c.out / "hand.jpg")),
         "unsupported output format"),
    Case("hand-export-out-stl", lambda c: (["hand", "export", "--out", str(c.out / "hand.stl")],
                                           str(c.out / "hand.stl")), "unsupported output format"),
    Case("export-mesh-out-stl", lambda c: (["export", "mesh", "--prior", str(c.prior), "--out",
                                            str(c.out / "hand.stl")], str(c.out / "hand.stl")),
         "unsupported output format"),
    Case("export-render-out-tiff", lambda c: (["export", "render", "--res", "16", "--out", str(c.out / "h.tiff")],
                                              str(c.out / "h.tiff")), "unsupported output format"),
    Case("export-turntable-out-avi", lambda c: (["export", "turntable", "--frames", "2", "--res", "16", "--out",
                                                 str(c.out / "t.avi")], str(c.out / "t.avi")),
         "unsupported output format"),
    Case("export-env-out-png", lambda c: (["export", "env", "--env", "city", "--out", str(c.out / "e.png")],
                                          str(c.out / "e.png")), "unsupported output format"),
    Case("render-out-folder-missing", lambda c: (_render(c, out="nope/hand.png"), str(c.out / "nope")),
         "output folder does not exist"),
    Case("hand-export-out-folder-missing", lambda c: (["hand", "export", "--out", str(c.out / "nope" / "h.obj")],
                                                      str(c.out / "nope")), "output folder does not exist"),
    Case("render-res-0", lambda c: (_render(c)[:3] + ["--res", "0"] + _render(c)[5:], "--res"), "must be"),
    Case("render-azimuth-inf", lambda c: (_render(c, "--cam-azimuth", "inf"), "--cam-azimuth"), "must be a finite"),
    Case("render-shape-pca-nan", lambda c: (_render(c, "--shape-pca", "nan,0"), "--shape-pca"), "finite"),
    Case("render-rf-with-raster", lambda c: (_render(c, "--image", "rf"), "--image"), "--renderer neural"),
    Case("personalize-detail-res-5", lambda c: (
        ["personalize", c.file("grey.png", _image_bytes("PNG", size=64, grey=True)), "--prior", str(c.prior),
         "--out", str(c.out / "avatar"), "--detail-res", "5"], "--detail-res"), "expected 0 (off)"),
    Case("export-render-res-0", lambda c: (["export", "render", "--res", "0", "--out", str(c.out / "h.png")],
                                           "--res"), "must be a positive integer"),
    Case("export-turntable-frames-0", lambda c: (["export", "turntable", "--frames", "0", "--out",
                                                  str(c.out / "t.gif")], "--frames"), "must be a positive integer"),
    Case("env-fit-lobes-0", lambda c: (_env_fit(c, c.file("sky.hdr", "x"))[0] + ["--lobes", "0"], "--lobes"),
         "must be a positive integer"),
    Case("data-synth-res-0", lambda c: (["data", "synth", "--out", str(c.out / "data"), "--res", "0", "--quiet"],
                                        "--res"), "must be in"),
    # --- absurd numbers in files and flags (issue 16) -------------------------------------------
    Case("env-preview-height-huge", lambda c: (["env", "preview", "studio", "--height", "100000000", "--out",
                                                str(c.out / "e.png")], "--height"), "[2, 8192]"),
    Case("env-fit-lobes-huge", lambda c: (_env_fit(c, c.file("sky.hdr", "x"))[0] + ["--lobes", "10000000"], "--lobes"),
         "at most 1024"),
    Case("env-preview-height-not-int", lambda c: (["env", "preview", "studio", "--height", "1e8", "--out",
                                                   str(c.out / "e.png")], "--height"), "expected an integer"),
    Case("sg-too-many-lobes", lambda c: _preview(c, c.file("sky.json", _sg_json([[0, 1, 0, 1, 1, 1, 1]] * 200_000))),
         "more than the limit"),
    Case("sg-amplitude-1e300", lambda c: _preview(c, c.file("sky.json", _sg_json([[0, 1, 0, 1, 1e300, 1, 1]]))),
         "amplitude beyond"),
    Case("sg-zero-light", lambda c: _preview(c, c.file("sky.json", _sg_json([[0, 1, 0, 1, 0, 0, 0]]))), "no light"),
    Case("hdr-header-huge", lambda c: _env_fit(c, c.file(
        "sky.hdr", b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 10000000 +X 10000000\n" + bytes(64))), "larger than"),
    Case("hdr-exponent-255", lambda c: _env_fit(c, c.file("sky.hdr", _rgbe_hdr(255))), "beyond the supported range"),
    Case("exr-one-huge-pixel", lambda c: _env_fit(c, _exr(c, "sky.exr", np.where(
        np.arange(16 * 32 * 3).reshape(16, 32, 3) == 7, 3e38, 1.0))), "beyond the supported range"),
    Case("exr-not-equirect", lambda c: _env_fit(c, _exr(c, "sky.exr", np.ones((1, 4000, 3)))),
         "not an equirectangular map"),
    Case("env-preview-out-is-input", lambda c: (
        ["env", "preview", _exr(c, "sky.exr", np.ones((16, 32, 3))), "--lobes", "2", "--out", str(c.inp / "sky.exr")],
        str(c.inp / "sky.exr")), "also an input"),
    Case("avatar-nan-codes", lambda c: _broken_avatar(c, lambda a: _edit_tensors(
        a / "avatar.safetensors", shape_code=lambda x: x * float("nan")), "avatar.safetensors"), "nan"),
    Case("avatar-zero-light", lambda c: _broken_avatar(c, lambda a: _edit_tensors(
        a / "avatar.safetensors", light=lambda x: x * 0), "avatar.safetensors"), "light"),
    Case("avatar-zero-rt", lambda c: _broken_avatar(c, lambda a: _edit_json(
        a / "avatar.json", camera={**json.loads((a / "avatar.json").read_text())["camera"], "Rt": [[0.0] * 4] * 4}),
        "avatar.json"), "rotation"),
    Case("avatar-k-zero", lambda c: _broken_avatar(c, lambda a: _edit_json(
        a / "avatar.json", camera={**json.loads((a / "avatar.json").read_text())["camera"], "K": [[0.0] * 3] * 3}),
        "avatar.json"), "focal"),
    Case("avatar-too-many-betas", lambda c: _broken_avatar(c, lambda a: _edit_json(
        a / "avatar.json", betas=[0.0] * 301), "avatar.json"), "betas"),
    Case("prior-n-subjects-negative", lambda c: _broken_prior(
        c, lambda p: _edit_json(p / "prior.json", n_subjects=-1), "prior.json"), "n_subjects"),
    Case("prior-n-subjects-text", lambda c: _broken_prior(
        c, lambda p: _edit_json(p / "prior.json", n_subjects="abc"), "prior.json"), "n_subjects"),
    Case("prior-n-subjects-huge", lambda c: _broken_prior(
        c, lambda p: _edit_json(p / "prior.json", n_subjects=10**9), "prior.json"), "n_subjects"),
    Case("train-max-steps-0", lambda c: (["train", "--data", str(c.inp), "--out", str(c.out / "run"),
                                          "--max-steps", "0"], "--max-steps"), "must be at least 1"),
    # --- poses and shapes beyond their bounds (issue 16: NaN vertices, SVD failures) -------------
    Case("pose-1e20", lambda c: _pose(c, "pose.json", _pose_values(1e20)), "beyond the limit of 1000"),
    Case("pose-inf-npy", lambda c: _pose(c, "pose.npy", _npy_bytes(np.full((16, 3), np.inf))), "nan or infinite"),
    Case("pose-global-orient-1e20", lambda c: _pose(c, "pose.json", json.dumps(
        {"hand_pose": [0.0] * 45, "global_orient": [1e20, 0, 0]})), "beyond the limit"),
    Case("pose-400-digit-integer", lambda c: _pose(c, "pose.json", '{"pose": [' + "9" * 400 + ", 0" * 47 + "]}"),
         "not an array of numbers"),
    Case("pose-nested-100000-deep", lambda c: _pose(c, "pose.json", "[" * 100_000 + "]" * 100_000),
         "nested too deeply"),
    Case("export-mesh-pose-1e20", lambda c: (
        ["export", "mesh", "--prior", str(c.prior), "--res", "8", "--pose", c.file("pose.json", _pose_values(1e20)),
         "--out", str(c.out / "hand.obj")], str(c.inp / "pose.json")), "beyond the limit"),
    Case("export-render-pose-1e20", lambda c: (
        ["export", "render", "--res", "16", "--pose", c.file("pose.json", _pose_values(1e20)),
         "--out", str(c.out / "hand.png")], str(c.inp / "pose.json")), "beyond the limit"),
    Case("hand-export-betas-nan", lambda c: (_hand(c, "--betas", "nan"), "--betas"), "nan or infinite"),
    Case("hand-export-betas-inf", lambda c: (_hand(c, "--betas", "0", "inf"), "--betas"), "nan or infinite"),
    Case("hand-export-betas-1e30", lambda c: (_hand(c, "--betas", "1e30"), "--betas"), "beyond the limit of 100"),
    Case("hand-export-too-many-betas", lambda c: (_hand(c, "--betas", *["0"] * 11), "--betas"), "the hand model has 10"),
    # --- flags that may not go together or overflow ---------------------------------------------
    Case("photo-left-and-right", lambda c: (
        ["photo", c.file("hand.png", _PNG), "--left", "--right", "--out", str(c.out / "photo")], "--right"),
         "not allowed with argument --left"),
    Case("train-seed-huge", lambda c: (["train", "--data", str(c.inp), "--out", str(c.out / "run"),
                                        "--seed", "9" * 30], "--seed"), "expected an integer"),
    Case("train-seed-negative", lambda c: (["train", "--data", str(c.inp), "--out", str(c.out / "run"),
                                            "--seed", "-1"], "--seed"), "must be an integer in [0,"),
    Case("data-synth-seed-huge", lambda c: (["data", "synth", "--out", str(c.out / "data"), "--seed", "9" * 30],
                                            "--seed"), "expected an integer"),
    # --- 'palm train' runs 'palm data check --strict' before stage 0 ------------------------------
    Case("train-data-empty-image", lambda c: _train_on(c, lambda d: _image_of(d).write_bytes(b""),
                                                       lambda d: str(_image_of(d))), "empty file"),
    Case("train-data-image-wrong-size", lambda c: _train_on(c, lambda d: _image_of(d).write_bytes(
        _image_bytes("PNG", size=16)), lambda d: str(_image_of(d))), "but camera cam0 says 32x32"),
    Case("train-data-unknown-convention", lambda c: _train_on(c, lambda d: (d / "meta.json").write_text(
        json.dumps({"hand_pose_convention": "sideways"})), lambda d: str(d / "meta.json")),
         "unknown hand_pose_convention"),
    Case("train-data-evil-pickle", lambda c: _train_on(c, lambda d: (d / "0000" / "cameras.npy").write_bytes(
        _evil_npy(c.out / "pwned")), lambda d: str(d / "0000" / "cameras.npy")), "refuses to load"),
]


def _pose_values(value: float) -> str:
    return json.dumps({"format": "palm-pose-v1", "pose": [[value, 0.0, 0.0]] + [[0.0, 0.0, 0.0]] * 15})


def _evil_npy(marker: Path) -> bytes:
    """A ``.npy`` of a 0-d object array (what np.save writes for a dict) whose pickle runs a command."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "|O", "fortran_order": False, "shape": ()})
    return buf.getvalue() + pickle.dumps({"cameras": _Evil(marker)}, protocol=3)


def _hand(ctx: Ctx, *extra: str) -> list[str]:
    return ["hand", "export", *extra, "--out", str(ctx.out / "hand.obj")]


def _image_of(data: Path) -> Path:
    from palm.data.palm_dataset import frame_name

    return data / "0000" / "images" / "cam0" / f"{frame_name(0)}.png"


def _train_on(ctx: Ctx, breaks: Callable[[Path], None], named: Callable[[Path], str]) -> tuple[list[str], str]:
    """``palm train`` on a valid dataset that ``breaks`` spoils; the error must name ``named(data)``."""
    data = make_dataset(ctx.inp / "data")
    breaks(data)
    argv = ["train", "--data", str(data), "--out", str(ctx.out / "run"), "--preset", "tiny", "--max-steps", "1",
            "--no-tensorboard"]
    return argv, named(data)


#: Cases that repeat a boundary the others already cover; they run with the ``slow`` marker
#: (every case is a ``palm`` process, about 1.2 s of CPU each, mostly importing torch).
EXTRA = frozenset({
    "avatar-corrupt-safetensors",
    "avatar-pose-wrong-shape",
    "avatar-wrong-format",
    "checkpoint-corrupt",
    "checkpoint-other-version",
    "data-check-a-file",
    "data-synth-res-0",
    "env-fit-lobes-0",
    "export-env-out-png",
    "export-render-out-tiff",
    "export-render-res-0",
    "export-turntable-frames-0",
    "export-turntable-out-avi",
    "hand-export-out-folder-missing",
    "hdr-all-negative",
    "hdr-missing",
    "mano-not-a-dict",
    "personalize-no-hand",
    "photo-is-a-folder",
    "pose-no-pose-key",
    "pose-not-numbers",
    "pose-unknown-preset",
    "prior-no-sidecar",
    "prior-other-version-config",
    "train-max-steps-0",
    "env-preview-height-not-int",
    "sg-zero-light",
    "avatar-k-zero",
    "prior-n-subjects-text",
    "prior-n-subjects-huge",
})
CASES = [pytest.param(c, marks=pytest.mark.slow, id=c.id) if isinstance(c, Case) and c.id in EXTRA else c
         for c in CASES]


def _case_of(param) -> Case:
    return param.values[0] if hasattr(param, "values") else param


# ---------------------------------------------------------------------------------------------
# Running the commands (all selected cases at once, a few in parallel)
# ---------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    case: Case
    ctx: Ctx
    named: str
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture(scope="module")
def outcomes(request, tmp_path_factory, tiny_prior, tiny_avatar) -> dict[str, Outcome]:
    selected = {item.callspec.params["case"].id for item in request.session.items
                if getattr(item, "callspec", None) and isinstance(item.callspec.params.get("case"), Case)}
    cases = [_case_of(p) for p in CASES if _case_of(p).id in selected]

    def run(case: Case) -> Outcome:
        base = tmp_path_factory.mktemp(case.id)
        ctx = Ctx(inp=base / "in", out=base / "out", prior=tiny_prior[0], prior_hash=tiny_prior[1],
                  avatar=tiny_avatar)
        ctx.inp.mkdir()
        ctx.out.mkdir()
        argv, named = case.build(ctx)
        r = run_palm(*argv)
        return Outcome(case, ctx, named, r.returncode, r.stdout, r.stderr)

    with ThreadPoolExecutor(max_workers=3) as pool:
        return {o.case.id: o for o in pool.map(run, cases)}


def test_table_is_big_enough():
    assert len(CASES) >= 30
    ids = [_case_of(p).id for p in CASES]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input_gives_one_clear_error_line(case: Case, outcomes: dict[str, Outcome]):
    o = outcomes[case.id]
    lines = o.stderr.strip().splitlines()
    assert o.returncode == 2, f"exit {o.returncode}\nstdout: {o.stdout}\nstderr: {o.stderr}"
    assert "Traceback" not in o.stderr
    assert len(lines) == 1, f"expected one line on stderr, got:\n{o.stderr}"
    line = lines[0]
    assert line.startswith(f"error: {o.named}: "), f"message does not name {o.named}: {line}"
    assert case.phrase.lower() in line[len(f"error: {o.named}: "):].lower(), line
    leftovers = sorted(p.name for p in o.ctx.out.iterdir())
    assert leftovers == [], f"output folder not empty after the error: {leftovers}"


# ---------------------------------------------------------------------------------------------
# Behaviour around the table
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("err", [28, 30, 21, 20, 17], ids=["ENOSPC", "EROFS", "EISDIR", "ENOTDIR", "EEXIST"])
def test_os_errors_name_the_users_path_not_a_temporary(tmp_path, monkeypatch, capsys, err):
    """A write that fails in the middle (disk full, read-only mount, ...) is one line naming the output."""
    import palm.io
    from palm.cli.main import main

    def failing_replace(src, dst):
        raise OSError(err, os.strerror(err), str(src))

    monkeypatch.setattr(palm.io.os, "replace", failing_replace)
    out = tmp_path / "sky.png"
    rc = main(["env", "preview", "studio", "--height", "8", "--out", str(out)])
    err_text = capsys.readouterr().err
    assert rc == 2
    assert err_text.strip().splitlines() == [f"error: {out}: {os.strerror(err).lower()}"]
    assert list(tmp_path.iterdir()) == []


def test_memory_errors_are_one_line(tmp_path, monkeypatch, capsys):
    import palm.render.sg
    from palm.cli.main import main

    def no_memory(*args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")

    monkeypatch.setattr(palm.render.sg, "sg_to_equirect", no_memory)
    out = tmp_path / "sky.png"
    rc = main(["env", "preview", "studio", "--height", "8", "--out", str(out)])
    lines = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith(f"error: {out}: out of memory")


def test_debug_shows_the_traceback(tmp_path):
    pose = tmp_path / "pose.json"
    pose.write_text(_NAN_POSE)
    r = run_palm("hand", "export", "--pose", str(pose), "--out", str(tmp_path / "hand.obj"), "--debug")
    assert r.returncode == 2
    assert "Traceback (most recent call last)" in r.stderr
    assert "PalmError" in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith(f"error: {pose}: pose contains NaN")
    assert not (tmp_path / "hand.obj").exists()


def test_data_check_lists_missing_frames_but_is_not_an_error(tmp_path):
    """A dataset with a missing file is reported (exit 1, the list on stdout); a complete one exits 0."""
    from palm.data.palm_dataset import frame_name

    data = make_dataset(tmp_path / "data", frames=2)
    ok = run_palm("data", "check", str(data), "--json")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["missing"] == []

    gone = data / "0000" / "images" / "cam0" / f"{frame_name(1)}.png"
    gone.unlink()
    r = run_palm("data", "check", str(data), "--json")
    assert r.returncode == 0, r.stderr  # the check ran: the report lists what is missing
    assert "error:" not in r.stderr
    assert run_palm("data", "check", str(data), "--json", "--strict").returncode == 1
    report = json.loads(r.stdout)
    assert report["missing"] == [f"0000/images/cam0/{frame_name(1)}.png"]
    assert report["images"] == 1


def test_hdr_with_some_bad_pixels_is_clamped_with_a_warning(tmp_path):
    """NaN/Inf pixels become 0 and negative ones 0, with a one-line warning; the fit still succeeds."""
    ctx = Ctx(inp=tmp_path, out=tmp_path, prior=tmp_path, prior_hash="", avatar=tmp_path)
    pixels = np.ones((16, 32, 3))
    pixels[0, 0] = np.nan
    pixels[1, 1] = np.inf
    pixels[2, 2] = -5.0
    path = _exr(ctx, "sky.exr", pixels)
    r = run_palm("env", "fit", path, "--lobes", "2", "--steps", "2", "--out", str(tmp_path / "sky.json"))
    assert r.returncode == 0, r.stderr
    warnings = [line for line in r.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1 and "2 pixel(s) with NaN/Inf replaced by 0" in warnings[0]
    lobes = json.loads((tmp_path / "sky.json").read_text())["lobes"]
    assert len(lobes) == 2 and np.isfinite(np.asarray(lobes)).all()



def test_eval_interhand_uses_the_mano_flag(tmp_path, monkeypatch, capsys):
    """'eval interhand --mano X' converts the registrations with X (it used to ask for --mano)."""
    import palm.eval
    import palm.hand
    import palm.prior
    from palm.cli.main import main
    from palm.errors import PalmError
    from palm.hand.mano import MANO_ENV, find_mano

    monkeypatch.delenv(MANO_ENV, raising=False)
    mano = tmp_path / "MANO_RIGHT.pkl"
    mano.write_bytes(b"not read: load_hand is replaced")
    (tmp_path / "ih").mkdir()

    def fake_eval(root, prior, cfg, **kw):  # where the reader asks for the MANO file
        raise PalmError(root, f"would read {find_mano()}")

    monkeypatch.setattr(palm.hand, "load_hand", lambda kind, path=None: object())
    monkeypatch.setattr(palm.prior, "load_prior", lambda *a, **k: object())
    monkeypatch.setattr(palm.eval, "eval_interhand", fake_eval)
    rc = main(["eval", "interhand", "--root", str(tmp_path / "ih"), "--mano", str(mano), "--device", "cpu"])
    assert rc == 2
    assert capsys.readouterr().err.strip() == f"error: {tmp_path / 'ih'}: would read {mano}"
    assert MANO_ENV not in os.environ  # the flag does not leak out of the command


def test_an_infinite_image_size_is_refused_with_the_file_named(tmp_path):
    """``int(inf)`` raises OverflowError, not ValueError: both camera readers must still name the file."""
    from palm.data.palm_dataset import read_cameras
    from palm.errors import PalmError
    from palm.render.rays import Camera

    cams = tmp_path / "cameras.npy"
    np.save(cams, {"cameras": {"MCU_01": {"K": np.eye(3), "Rt": np.eye(4), "height": np.float32(np.inf), "width": 8}}})
    with pytest.raises(PalmError, match="cameras.npy"):
        read_cameras(cams)
    with pytest.raises(PalmError, match="avatar.json"):
        Camera.from_dict({"K": np.eye(3).tolist(), "Rt": np.eye(4).tolist(), "height": float("inf"), "width": 8},
                         "avatar.json")
