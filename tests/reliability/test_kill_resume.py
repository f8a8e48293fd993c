"""Training survives faults: SIGKILL at random moments, NaN losses.

* ``palm train`` is killed (SIGKILL) several times at random moments, often while it writes a
  checkpoint (one per step here). After every kill, each complete checkpoint (tensor file +
  sidecar) loads with its hash verified, and half-written temporary files are never taken for
  checkpoints. Resuming to the final step gives parameters bit-identical to an uninterrupted run.
* A NaN loss rolls back to the last good state with a halved learning rate; after
  ``MAX_NAN_RETRIES`` failures in a row the run stops with a :class:`PalmError`.
"""

from __future__ import annotations

import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from palm.errors import PalmError

from .conftest import ROOT, run_palm

#: The tiny preset, checkpointing every step.
TINY = ("checkpoint_every=1",)
#: Steps of the runs compared: 2 geometry pretraining steps, then image steps.
FINAL_STEP = 7
SEED = 5
_PAIR = re.compile(r"^step_\d{7}\.(safetensors|json)$")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("data") / "synth"
    r = run_palm("data", "synth", "--out", str(out), "--subjects", "2", "--poses", "1", "--views", "2", "--res", "32",
                 "--seed", "0", "--quiet")
    assert r.returncode == 0, r.stderr
    return out


def _train_argv(dataset: Path, run: Path, resume: bool) -> list[str]:
    sets = [x for s in TINY for x in ("--set", s)]
    argv = [sys.executable, "-m", "palm", "train", "--data", str(dataset), "--out", str(run), "--preset", "tiny",
            "--max-steps", str(FINAL_STEP), "--pretrain-steps", "2", "--seed", str(SEED), "--no-tensorboard", *sets]
    return argv + (["--resume"] if resume else [])


def _start(dataset: Path, run: Path, resume: bool) -> subprocess.Popen:
    return subprocess.Popen(_train_argv(dataset, run, resume), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _complete_steps(run: Path) -> list[int]:
    from palm.train.checkpoint import list_checkpoints

    return [step for step, _ in list_checkpoints(run)]


def _check_checkpoints(run: Path) -> list[int]:
    """Every complete pair loads (hash verified); other files are temporaries, never listed. Returns steps."""
    from palm.train.checkpoint import list_checkpoints, load_checkpoint

    folder = run / "checkpoints"
    if not folder.is_dir():
        return []
    listed = list_checkpoints(run)
    for step, path in listed:
        assert _PAIR.match(path.name) and path.with_suffix(".json").is_file()
        model, _, meta = load_checkpoint(path)
        assert meta["step"] == step and model, path
    for f in folder.iterdir():
        if not _PAIR.match(f.name):
            assert f.name.startswith(".step_") and ".tmp" in f.name, f"unexpected file {f.name}"
            assert all(f != p for _, p in listed)
    return [step for step, _ in listed]


def _final_params(run: Path) -> dict[str, torch.Tensor]:
    from palm.train.checkpoint import checkpoint_path, load_checkpoint

    model, _, meta = load_checkpoint(checkpoint_path(run, FINAL_STEP))
    assert meta["step"] == FINAL_STEP
    return model


def _kill_moment_within_the_run(proc: subprocess.Popen, dataset: Path, run: Path,
                                rng: random.Random) -> subprocess.Popen:
    """Wait a random moment of the first run; returns the process, still running, ready for the kill.

    The whole tiny run lasts a few seconds, less on a fast machine: when it ends before the moment
    drawn, the run is wiped and started again with the window halved, so the kill always lands.
    """
    window = 6.0
    for _ in range(6):
        time.sleep(rng.uniform(0.25, 1.0) * window)
        if proc.poll() is None:
            return proc
        _, err = proc.communicate()
        assert proc.returncode == 0, err
        shutil.rmtree(run)
        window /= 2
        proc = _start(dataset, run, resume=False)
    raise AssertionError("the tiny run always ended before the kill, even a fraction of a second in")


@pytest.mark.slow
def test_sigkill_at_random_moments_then_exact_resume(dataset, tmp_path):
    rng = random.Random(20240611)
    reference = _start(dataset, tmp_path / "reference", resume=False)  # runs meanwhile, uninterrupted

    run = tmp_path / "killed"
    kills = 0
    for attempt in range(3):
        before = _complete_steps(run)
        proc = _start(dataset, run, resume=bool(before))
        if attempt == 0:  # anywhere: start-up, stage 0, or the first checkpoints
            proc = _kill_moment_within_the_run(proc, dataset, run, rng)
        else:  # soon after a new checkpoint appears: inside the next step or the next checkpoint write
            deadline = time.monotonic() + 240
            while _complete_steps(run) == before and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(rng.uniform(0.0, 1.0))
        if proc.poll() is not None:  # finished before the kill: nothing more to interrupt
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        kills += 1
        steps = _check_checkpoints(run)
        assert all(s <= FINAL_STEP for s in steps)
        temporaries = sorted(f.name for f in (run / "checkpoints").glob(".step_*")) if steps else []
        print(f"kill {kills}: complete checkpoints {steps}, temporaries left {temporaries}")
    assert kills >= 1

    final = _start(dataset, run, resume=bool(_complete_steps(run)))
    _, err = final.communicate(timeout=600)
    assert final.returncode == 0, err
    assert _check_checkpoints(run)[-1] == FINAL_STEP
    _, err = reference.communicate(timeout=600)
    assert reference.returncode == 0, err

    a, b = _final_params(tmp_path / "reference"), _final_params(run)
    assert a.keys() == b.keys()
    changed = [k for k in a if not torch.equal(a[k], b[k])]
    assert changed == [], f"parameters differ after kill + resume: {changed}"


@pytest.mark.slow
def test_ctrl_c_leaves_a_resumable_checkpoint(dataset, tmp_path):
    run = tmp_path / "run"
    proc = _start(dataset, run, resume=False)
    deadline = time.monotonic() + 240
    while not _complete_steps(run) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == "error: interrupted"
    steps = _check_checkpoints(run)
    assert steps and steps[-1] < FINAL_STEP
    final = _start(dataset, run, resume=True)
    _, err = final.communicate(timeout=600)
    assert final.returncode == 0, err
    assert _check_checkpoints(run)[-1] == FINAL_STEP


def test_half_written_files_are_not_checkpoints(tmp_path):
    """A tensor file without sidecar and temporaries from a killed write are ignored by resume."""
    from palm.train.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint

    from .conftest import make_checkpoint

    good = make_checkpoint(tmp_path, step=4)
    folder = good.parent
    (folder / "step_0000009.safetensors").write_bytes(good.read_bytes()[:300])  # killed before its sidecar
    (folder / ".step_0000010.safetensors.abc123.tmp.safetensors").write_bytes(b"\0" * 64)
    (folder / ".step_0000010.json.abc123.tmp.json").write_text('{"step": 10')
    assert [s for s, _ in list_checkpoints(tmp_path)] == [4]
    assert latest_checkpoint(tmp_path) == good
    load_checkpoint(good)
    (folder / "step_0000009.json").write_text(good.with_suffix(".json").read_text())  # a sidecar now, still bad
    with pytest.raises(PalmError, match="not a readable checkpoint"):
        load_checkpoint(folder / "step_0000009.safetensors")


# ---------------------------------------------------------------------------------------------
# NaN losses
# ---------------------------------------------------------------------------------------------


def _trainer(dataset: Path, run: Path, emit=None):
    from palm.jobs import null_emit
    from palm.train.trainer import Trainer, TrainOptions

    opts = TrainOptions(data=str(dataset), out=str(run), preset="tiny", max_steps=4, pretrain_steps=2, seed=SEED,
                        tensorboard=False, overrides=TINY)
    return Trainer(opts, emit=emit or null_emit)


def test_nan_loss_rolls_back_lowers_the_step_size_then_fails(dataset, tmp_path, monkeypatch):
    from palm.jobs import Log
    from palm.train.trainer import MAX_NAN_RETRIES, Trainer

    logs: list[Log] = []
    trainer = _trainer(dataset, tmp_path / "run", emit=lambda e: logs.append(e) if isinstance(e, Log) else None)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    calls = []

    def diverging_step(self):
        weights = self.model.state_dict()
        calls.append((self.lr_scale, all(torch.equal(before[k], weights[k]) for k in before)))
        with torch.no_grad():  # the step wrecks the weights, as a real divergence would
            next(self.model.geometry.parameters()).fill_(math.nan)
        return {"total": math.nan}

    monkeypatch.setattr(Trainer, "pretrain_step", diverging_step)
    with pytest.raises(PalmError, match="diverged") as info:
        trainer.fit(4)
    assert str(tmp_path / "run") in str(info.value)
    assert len(calls) == MAX_NAN_RETRIES + 1
    assert [lr for lr, _ in calls] == [0.5**i for i in range(MAX_NAN_RETRIES + 1)]  # each retry halves the lr
    assert all(rolled_back for _, rolled_back in calls), "a retry started from wrecked weights"
    assert trainer.step == 0
    after = trainer.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "giving up left the wrecked weights"
    assert sum("rolled back" in e.message for e in logs) == MAX_NAN_RETRIES


def test_one_nan_loss_is_survived_with_a_smaller_step(dataset, tmp_path, monkeypatch):
    from palm.train.trainer import Trainer

    original = Trainer.pretrain_step
    failures = iter([True])

    def flaky_step(self):
        if next(failures, False):
            return {"total": math.inf}
        return original(self)

    monkeypatch.setattr(Trainer, "pretrain_step", flaky_step)
    trainer = _trainer(dataset, tmp_path / "run")
    trainer.fit(2)
    assert trainer.step == 2
    assert trainer.lr_scale == 0.5
    assert all(torch.isfinite(v).all() for v in trainer.model.state_dict().values())


def test_nan_gradient_in_an_image_step_is_rolled_back(dataset, tmp_path, monkeypatch):
    """The image stage raises FloatingPointError for a non-finite gradient; fit treats it like a NaN loss."""
    from palm.train.trainer import MAX_NAN_RETRIES, Trainer

    def bad_image_step(self):
        raise FloatingPointError("non-finite gradient")

    monkeypatch.setattr(Trainer, "image_step", bad_image_step)
    monkeypatch.setattr(Trainer, "pretrain_step", lambda self: {"total": 1.0})
    trainer = _trainer(dataset, tmp_path / "run")
    with pytest.raises(PalmError, match="non-finite gradient"):
        trainer.fit(4)
    assert trainer.step == 2  # the pretraining steps stand
    assert trainer.lr_scale == 0.5**MAX_NAN_RETRIES
    assert os.path.isdir(tmp_path / "run")
