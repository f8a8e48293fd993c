"""Output folders are never destroyed by mistake, and bad run settings are refused before any work.

``palm personalize``, ``palm train`` and ``palm eval`` share one output policy
(:func:`palm.io.check_output_dir`): ``--out`` must not be an input or lie inside or over one, must
not be a file or a link, and an existing folder must be one the command made (its marker file),
which is replaced only with ``--force`` (or continued with ``palm train --resume``).

Every refusal row asserts: exit status 2, one stderr line ``error: <the user's path>: ...``, no
traceback, nothing left behind in the case's folder and every input byte-identical.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from palm.assets import SHARED

from .conftest import make_avatar, make_checkpoint, make_dataset, run_palm

PHOTO = SHARED / "data/photos/opencv_doc/handSrc.jpg"


@dataclass
class Ctx:
    """A case's folder ``root`` and the ready-made inputs in it."""

    root: Path
    prior: Path
    prior_hash: str

    def photo(self, name: str = "hand.png") -> str:
        """A small real image file to personalise on (the refusals come before it is read)."""
        from PIL import Image

        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (48, 32), (200, 150, 120)).save(path)
        return str(path)

    def folder(self, name: str, files: dict[str, str] | None = None) -> str:
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        for rel, text in (files or {}).items():
            (path / rel).write_text(text)
        return str(path)

    def data(self, name: str = "data") -> str:
        return str(make_dataset(self.root / name))

    def run_folder(self, name: str = "run") -> str:
        """A training run made by ``palm train`` (marker file + a checkpoint)."""
        run = self.root / name
        make_checkpoint(run)
        (run / "run.json").write_text(json.dumps({"format": "palm-run-v1"}))
        return str(run)


@dataclass
class Case:
    id: str
    build: Callable[[Ctx], tuple[list[str], str]]
    """Returns ``(argv, the path the error must name)``."""
    phrase: str


def _pers(c: Ctx, out: str, *extra: str, photo: str | None = None) -> list[str]:
    return ["personalize", photo or c.photo(), "--prior", str(c.prior), "--out", out, "--quiet", *extra]


def _train(data: str, out: str, *extra: str) -> list[str]:
    return ["train", "--data", data, "--out", out, "--preset", "tiny", "--max-steps", "1", "--no-tensorboard", *extra]


def _pers_same(c: Ctx, force: bool) -> tuple[list[str], str]:
    photo = c.photo()
    return _pers(c, photo, *(["--force"] if force else []), photo=photo), photo


def _pers_over(c: Ctx, force: bool) -> tuple[list[str], str]:
    photo = c.photo("shots/hand.png")
    out = str(c.root / "shots")
    return _pers(c, out, *(["--force"] if force else []), photo=photo), out


def _pers_folder(c: Ctx, files: dict[str, str], force: bool) -> tuple[list[str], str]:
    out = c.folder("mine", files)
    return _pers(c, out, *(["--force"] if force else [])), out


def _pers_avatar(c: Ctx) -> tuple[list[str], str]:
    out = make_avatar(c.root / "avatar", c.prior_hash)
    return _pers(c, str(out)), str(out)


def _pers_file(c: Ctx, force: bool) -> tuple[list[str], str]:
    out = c.root / "notes.txt"
    out.write_text("my notes")
    return _pers(c, str(out), *(["--force"] if force else [])), str(out)


def _pers_link(c: Ctx) -> tuple[list[str], str]:
    target = make_avatar(c.root / "real_avatar", c.prior_hash)
    link = c.root / "link"
    link.symlink_to(target, target_is_directory=True)
    return _pers(c, str(link), "--force"), str(link)


def _train_run_exists(c: Ctx, force: bool) -> tuple[list[str], str]:
    out = c.folder("mine", {"thesis.tex": "\\begin{document}"})
    return _train(c.data(), out, *(["--force"] if force else [])), out


def _train_file(c: Ctx) -> tuple[list[str], str]:
    out = c.root / "run"
    out.write_text("not a folder")
    return _train(c.data(), str(out), "--force"), str(out)


def _pers_inside_photo(c: Ctx) -> tuple[list[str], str]:
    photo = c.photo()
    return _pers(c, photo + "/avatar", photo=photo), photo + "/avatar"


def _pers_is_mask(c: Ctx) -> tuple[list[str], str]:
    mask = c.photo("mask.png")
    return _pers(c, mask, "--mask", mask), mask


def _train_in_data(c: Ctx, sub: str) -> tuple[list[str], str]:
    data = c.data()
    return _train(data, data + sub), data + sub


def _train_run(c: Ctx, *extra: str, named: str | None = None) -> tuple[list[str], str]:
    run = c.run_folder()
    return _train(c.data(), run, *extra), named or run


def _eval(c: Ctx, out: str | None, *extra: str) -> tuple[list[str], str]:
    data = c.data()
    out = out or data + "/eval"
    return ["eval", "synthetic", "--data", data, "--prior", str(c.prior), "--out", out, "--json", *extra], out


def _resume(c: Ctx, *extra: str) -> tuple[list[str], str]:
    run = c.run_folder()
    return _train(c.data(), run, "--resume", *extra), run


CASES = [
    # --- palm personalize --out --------------------------------------------------------------------
    Case("personalize-out-is-the-photo", lambda c: _pers_same(c, False), "is also an input"),
    Case("personalize-out-is-the-photo-force", lambda c: _pers_same(c, True), "is also an input"),
    Case("personalize-out-inside-the-photo", _pers_inside_photo, "lies inside the input"),
    Case("personalize-out-over-the-photo", lambda c: _pers_over(c, False), "contains the input"),
    Case("personalize-out-over-the-photo-force", lambda c: _pers_over(c, True), "contains the input"),
    Case("personalize-out-inside-the-prior", lambda c: (_pers(c, str(c.prior / "avatar")), str(c.prior / "avatar")),
         "lies inside the input"),
    Case("personalize-out-is-the-mask", _pers_is_mask, "is also an input"),
    Case("personalize-out-user-folder", lambda c: _pers_folder(c, {"thesis.tex": "x", "photo.jpg": "y"}, False),
         "is not an avatar folder"),
    Case("personalize-out-user-folder-force", lambda c: _pers_folder(c, {"thesis.tex": "x"}, True),
         "is not an avatar folder"),
    Case("personalize-out-empty-folder-force", lambda c: _pers_folder(c, {}, True), "is not an avatar folder"),
    Case("personalize-out-fake-avatar-force", lambda c: _pers_folder(
        c, {"avatar.json": json.dumps({"format": "something-else"}), "keep.txt": "x"}, True), "is not an avatar folder"),
    Case("personalize-out-avatar-without-force", _pers_avatar, "pass --force"),
    Case("personalize-out-is-a-file", lambda c: _pers_file(c, False), "is a file"),
    Case("personalize-out-is-a-file-force", lambda c: _pers_file(c, True), "is a file"),
    Case("personalize-out-is-a-link", _pers_link, "symbolic link"),
    # --- palm train --out --------------------------------------------------------------------------
    Case("train-out-is-the-data", lambda c: _train_in_data(c, ""), "is also an input"),
    Case("train-out-inside-the-data", lambda c: _train_in_data(c, "/run"), "lies inside the input"),
    Case("train-out-over-the-data", lambda c: (_train(c.data("set/data"), str(c.root / "set"), "--force"),
                                               str(c.root / "set")), "contains the input"),
    Case("train-out-user-folder", lambda c: _train_run_exists(c, False), "is not a training run folder"),
    Case("train-out-user-folder-force", lambda c: _train_run_exists(c, True), "is not a training run folder"),
    Case("train-out-is-a-file", _train_file, "is a file"),
    Case("train-out-run-without-force", _train_run, "pass --resume to continue it or --force"),
    Case("train-resume-and-force", lambda c: _train_run(c, "--resume", "--force", named="--force"),
         "pass one of them"),
    # --- palm train settings -----------------------------------------------------------------------
    Case("train-set-lr-nan", lambda c: (_train(c.data(), str(c.root / "run"), "--set", "lr=nan"), "--set"),
         "expected a finite number"),
    Case("train-set-lr-NaN", lambda c: (_train(c.data(), str(c.root / "run"), "--set", "lr=NaN"), "--set"),
         "expected a finite number"),
    Case("train-set-images-abc", lambda c: (_train(c.data(), str(c.root / "run"), "--set", "images_per_step=abc"),
                                            "--set"), "expected a whole number"),
    Case("train-set-images-zero", lambda c: (_train(c.data(), str(c.root / "run"), "--set", "images_per_step=0"),
                                             "--set"), "must be at least 1"),
    Case("train-set-bad-patch", lambda c: (_train(c.data(), str(c.root / "run"), "--set", "patch_size=5"),
                                           "--set"), "patch"),
    Case("train-resume-other-seed", lambda c: _resume(c, "--seed", "1"), "--allow-changes"),
    Case("train-resume-changed-set", lambda c: _resume(c, "--set", "lpips_start_step=7"), "--allow-changes"),
    Case("train-resume-other-preset", lambda c: _resume(c, "--preset", "paper"), "--allow-changes"),
    Case("train-resume-model-change", lambda c: (_resume(c, "--allow-changes", "--set", "model.light.n_lobes=8")[0],
                                                 "--set"), "cannot change the model"),
    # --- palm eval --out ---------------------------------------------------------------------------
    Case("eval-out-user-folder-force", lambda c: _eval(c, c.folder("mine", {"results.csv": "1,2"}), "--force"),
         "is not an evaluation folder"),
    Case("eval-out-inside-the-data", lambda c: _eval(c, None), "lies inside the input"),
    # --- palm photo --out (files added to a folder) -------------------------------------------------
    Case("photo-out-is-a-file", lambda c: _photo_out_file(c), "is a file"),
    Case("photo-out-is-the-photo", lambda c: _photo_same(c), "is a file"),
    Case("photo-out-would-replace-the-mask", lambda c: _photo_over_mask(c), "would replace the input"),
    # --- single-file outputs that are folders ------------------------------------------------------
    Case("hand-export-out-is-a-folder", lambda c: _out_folder(c, "hand.obj", "hand", "export"), "is a folder"),
    Case("export-turntable-out-is-a-folder", lambda c: _out_folder(
        c, "t.mp4", "export", "turntable", "--frames", "2", "--res", "16"), "is a folder"),
    Case("export-env-out-is-a-folder", lambda c: _out_folder(c, "env.exr", "export", "env", "--env", "studio"),
         "is a folder"),
]


def _photo_same(c: Ctx) -> tuple[list[str], str]:
    photo = c.photo()
    return ["photo", photo, "--out", photo], photo


def _photo_over_mask(c: Ctx) -> tuple[list[str], str]:
    """``--out DIR`` where ``DIR/mask.png`` is the ``--mask`` the command reads."""
    mask = Path(c.photo("shots/mask.png"))
    return ["photo", c.photo(), "--mask", str(mask), "--out", str(mask.parent)], str(mask.parent)


def _out_folder(c: Ctx, name: str, *argv: str) -> tuple[list[str], str]:
    """A single-file command whose ``--out`` is an existing folder of the user's."""
    out = c.folder(name, {"keep.txt": "x"})
    return [*argv, "--out", out], out


def _photo_out_file(c: Ctx) -> tuple[list[str], str]:
    """``palm photo --out FILE``: refused before the 20 s of detection and fitting."""
    out = c.root / "notes.txt"
    out.write_text("mine")
    return ["photo", c.photo(), "--out", str(out)], str(out)


def _snapshot(root: Path) -> dict[str, str]:
    """Every path under ``root`` (links not followed) with a digest of its bytes (or its kind)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = "link:" + os.readlink(p)
            elif p.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def prior_copy(tiny_prior) -> tuple[Path, str]:
    return tiny_prior


def test_table_covers_every_rule():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)) and len(ids) >= 30


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_refused_before_any_work(case: Case, tmp_path: Path, prior_copy):
    prior = tmp_path / "prior"
    shutil.copytree(prior_copy[0], prior)
    ctx = Ctx(tmp_path / "case", prior, prior_copy[1])
    ctx.root.mkdir()
    argv, named = case.build(ctx)
    before = _snapshot(tmp_path)
    r = run_palm(*argv)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2, f"exit {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr}"
    assert "Traceback" not in r.stderr
    assert len(lines) == 1, f"expected one line on stderr, got:\n{r.stderr}"
    assert lines[0].startswith(f"error: {named}: "), f"message does not name {named}: {lines[0]}"
    assert case.phrase.lower() in lines[0].lower(), lines[0]
    after = _snapshot(tmp_path)
    assert after == before, f"files changed: {sorted(set(after.items()) ^ set(before.items()))}"


# ---------------------------------------------------------------------------------------------
# What is allowed
# ---------------------------------------------------------------------------------------------


def test_force_replaces_an_avatar_and_stale_temporaries_are_cleaned(tmp_path):
    """An avatar folder is replaced with --force; a killed run's temporaries beside it are removed."""
    from palm.avatar import load_avatar
    from palm.eval import make_tiny_prior

    prior = tmp_path / "prior"
    digest = make_tiny_prior(prior)  # with PCA spaces: the avatar stores its coefficients
    work = tmp_path / "work"
    out = make_avatar(work / "avatar", digest)
    stale = work / ".avatar.ab12cd34.tmp"
    stale.mkdir()
    (stale / "avatar.json").write_text("{")
    r = run_palm("personalize", str(PHOTO), "--prior", str(prior), "--out", str(out), "--force", "--steps", "1",
                 "--work-res", "32", "--quiet", timeout=600)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in work.iterdir()) == ["avatar"]
    report = json.loads((out / "report.json").read_text())
    assert report["steps"] == 1
    assert (out / "photo" / "mask.png").is_file() and (out / "preview.png").is_file()
    assert load_avatar(out, prior_hash=digest).shape_coeffs.numel() > 0


def test_personalize_small_work_res_reports_undefined_metrics_as_null(tmp_path, tiny_prior):
    """--work-res 32: every report metric is a number or null, and the summary line prints."""
    photo = tmp_path / "photo.jpg"
    shutil.copy(PHOTO, photo)
    digest = hashlib.sha256(photo.read_bytes()).hexdigest()
    out = tmp_path / "avatar"
    r = run_palm("personalize", str(photo), "--prior", str(tiny_prior[0]), "--out", str(out), "--steps", "2",
                 "--work-res", "32", "--quiet", timeout=600)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    assert r.stdout.strip().splitlines()[-1].startswith(f"wrote {out}: PSNR ")
    report = json.loads((out / "report.json").read_text())
    for key in ("psnr_masked", "ssim_masked", "lpips_masked", "iou", "seconds", "steps"):
        assert key in report and (report[key] is None or isinstance(report[key], (int, float))), key
    assert report["work_resolution"][0] <= 32 and report["work_resolution"][1] <= 32
    assert hashlib.sha256(photo.read_bytes()).hexdigest() == digest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["avatar", "photo.jpg"]


@pytest.mark.slow
def test_tiny_training_runs_through_lpips_steps_then_force_restarts(tmp_path):
    """The tiny preset switches LPIPS on at step 6 of stage 1 on 4-px patches; the run completes.
    The run folder is then an existing run: --force starts it over."""
    data = make_dataset(tmp_path / "data")
    run = tmp_path / "run"
    argv = ["train", "--data", str(data), "--out", str(run), "--preset", "tiny", "--max-steps", "10",
            "--pretrain-steps", "3", "--no-tensorboard"]
    r = run_palm(*argv, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    side = json.loads((run / "checkpoints" / "step_0000010.json").read_text())
    assert side["step"] == 10 and side["seed"] == 0 and side["preset"] == "tiny"
    assert json.loads((run / "run.json").read_text())["format"] == "palm-run-v1"
    (run / "checkpoints" / ".step_0000011.safetensors.ab12cd34.tmp.safetensors").write_bytes(b"\0")  # a killed write
    r = run_palm(*argv[:-5], "--max-steps", "1", "--pretrain-steps", "3", "--no-tensorboard", "--force", timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_0000001.json", "step_0000001.safetensors"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "run"]


def test_resume_with_allow_changes_takes_the_new_seed(tmp_path):
    data = make_dataset(tmp_path / "data")
    run = tmp_path / "run"
    make_checkpoint(run)  # step 3 of a cpu-preset run with seed 0 (a run from before run.json existed)
    r = run_palm("train", "--data", str(data), "--out", str(run), "--resume", "--seed", "4", "--allow-changes",
                 "--set", "model.density.beta_min=0.0005",  # beta's floor holds no weights: it may change
                 "--max-steps", "4", "--no-tensorboard", timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    side = json.loads((run / "checkpoints" / "step_0000004.json").read_text())
    assert side["seed"] == 4 and side["preset"] == "cpu"
    assert side["config"]["model"]["density"]["beta_min"] == 0.0005
    assert (run / "run.json").is_file()  # the run is marked from now on


def test_policy_function_directly(tmp_path):
    """check_output_dir's rules on their own, and the recovery of a swap killed half-way."""
    from palm.errors import PalmError
    from palm.io import check_output_dir, clean_stale_temporaries

    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"format": "palm-run-v1"}))
    kw = {"what": "a training run folder", "marker_format": "palm-run-v1"}
    with pytest.raises(PalmError, match="--force"):
        check_output_dir(run, "run.json", (), False, **kw)
    assert check_output_dir(run, "run.json", (), True, **kw) == run
    assert check_output_dir(run, "run.json", (), False, disposable=lambda d: True, **kw) == run  # nothing to lose
    assert check_output_dir(run, "run.json", (), False, resume=True, **kw) == run
    assert check_output_dir(tmp_path / "new", "run.json", (tmp_path / "data",), False, **kw) == tmp_path / "new"
    with pytest.raises(PalmError, match="contains the input"):
        check_output_dir(tmp_path, "run.json", (run / "data",), True, resume=True, **kw)

    # killed between atomic_dir's two renames: the previous folder waits inside a .old temporary
    avatar = tmp_path / "avatar"
    old = tmp_path / ".avatar.k1ll3d00.old"
    (old / "x").mkdir(parents=True)
    (old / "x" / "avatar.json").write_text("{}")
    (tmp_path / ".avatar.k1ll3d01.tmp").mkdir()
    removed = clean_stale_temporaries(avatar)
    assert len(removed) == 2 and (avatar / "avatar.json").read_text() == "{}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["avatar", "run"]


# ---------------------------------------------------------------------------------------------
# Temporaries of killed writers
# ---------------------------------------------------------------------------------------------

_KILLED_WRITER = """
import os, sys
from palm.io import atomic_write
with atomic_write(sys.argv[1]) as tmp:
    print(tmp.name, flush=True)
    os.kill(os.getpid(), 9)
"""

_HOLDING_WRITER = """
import sys, time
from palm.io import atomic_write
with atomic_write(sys.argv[1]) as tmp:
    tmp.write_bytes(b"partial")
    print(tmp.name, flush=True)
    time.sleep(600)
"""


def _writer(script: str, out: Path):
    import subprocess
    import sys

    from .conftest import ROOT

    proc = subprocess.Popen([sys.executable, "-c", script, str(out)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    name = proc.stdout.readline().strip()
    return proc, name


def test_sigkilled_turntable_temporary_is_removed_by_the_next_run(tmp_path):
    """A writer of t.mp4 killed with SIGKILL leaves its hidden temporary; the next 'palm export
    turntable' to t.mp4 removes it, and leaves alone the temporary of a writer still running."""
    out = tmp_path / "t.mp4"
    killed, stale = _writer(_KILLED_WRITER, out)
    assert killed.wait(timeout=120) == -9
    assert stale.startswith(".t.mp4.") and (tmp_path / stale).is_file() and (tmp_path / stale).stat().st_size == 0
    running, live = _writer(_HOLDING_WRITER, out)
    try:
        r = run_palm("export", "turntable", "--frames", "2", "--res", "16", "--out", str(out))
        assert r.returncode == 0, r.stderr
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live, "t.mp4"])
    finally:
        running.kill()
        running.wait()
    assert out.stat().st_size > 0


def test_stale_temporaries_are_cleaned_by_every_writer(tmp_path):
    """atomic_write / atomic_dir / check_output_path remove their output's dead temporaries, no others."""
    from palm.io import atomic_dir, atomic_write, check_output_path

    (tmp_path / ".a.json.ab12cd34.tmp.json").write_text("{")
    (tmp_path / ".b.json.ab12cd34.tmp.json").write_text("{")  # another output's: kept
    (tmp_path / ".notes.txt").write_text("mine")  # a hidden file of the user's: kept
    with atomic_write(tmp_path / "a.json") as tmp:
        tmp.write_text("{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".b.json.ab12cd34.tmp.json", ".notes.txt", "a.json"]
    (tmp_path / ".avatar.zz99yy88.tmp").mkdir()
    with atomic_dir(tmp_path / "avatar") as tmp:
        (tmp / "x").write_text("1")
    assert not (tmp_path / ".avatar.zz99yy88.tmp").exists() and (tmp_path / "avatar" / "x").is_file()
    check_output_path(tmp_path / "b.json", (".json",))
    assert sorted(p.name for p in tmp_path.iterdir()) == [".notes.txt", "a.json", "avatar"]
