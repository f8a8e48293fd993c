"""Prior training: both stages run, checkpoints carry their sidecar, resume is exact, 2 gloo ranks
equal one process, PCA of the codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


def palm(*args: str, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "palm", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=timeout, env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("data") / "synth"
    r = palm("data", "synth", "--out", str(out), "--subjects", "2", "--poses", "1", "--views", "2", "--res", "32",
             "--seed", "0", "--quiet")
    assert r.returncode == 0, r.stderr
    return out


def _train(dataset: Path, run: Path, max_steps: int, resume: bool = False):
    from palm.train.trainer import Trainer, TrainOptions

    opts = TrainOptions(data=str(dataset), out=str(run), preset="tiny", max_steps=max_steps, resume=resume,
                        pretrain_steps=2, seed=3, tensorboard=False)
    trainer = Trainer(opts)
    trainer.fit(max_steps)
    return trainer


def _params(trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


def test_both_stages_checkpoint_and_exact_resume(dataset, tmp_path):
    full = _train(dataset, tmp_path / "full", max_steps=5)
    assert full.step == 5
    ckpt = tmp_path / "full" / "checkpoints" / "step_0000005.safetensors"
    side = json.loads(ckpt.with_suffix(".json").read_text())
    assert side["step"] == 5 and side["stage"] == 1 and len(side["content_hash"]) == 16
    assert side["config"]["images_per_step"] == 2

    _train(dataset, tmp_path / "split", max_steps=3)  # 2 geometry steps + 1 image step, then stop
    resumed = _train(dataset, tmp_path / "split", max_steps=5, resume=True)
    assert resumed.step == 5
    a, b = _params(full), _params(resumed)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after resume"
    # training changed the model: geometry in stage 0, appearance in stage 1
    assert not torch.equal(a["light"], torch.zeros_like(a["light"]))


def test_two_gloo_ranks_equal_one_process(dataset, tmp_path):
    single = tmp_path / "single"
    args = ["--data", str(dataset), "--preset", "tiny", "--max-steps", "4", "--pretrain-steps", "2", "--seed", "3",
            "--no-tensorboard"]
    r = palm("train", "--out", str(single), *args)
    assert r.returncode == 0, r.stderr[-2000:]
    multi = tmp_path / "multi"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "palm",
           "train", "--out", str(multi), *args]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    from palm.train.checkpoint import load_checkpoint

    a, _, ma = load_checkpoint(single / "checkpoints" / "step_0000004.safetensors")
    b, _, mb = load_checkpoint(multi / "checkpoints" / "step_0000004.safetensors")
    assert mb["world_size"] == 2 and ma["world_size"] == 1
    for k in a:
        assert torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-6), f"{k}: max diff {(a[k] - b[k]).abs().max()}"


def test_pca_json_and_run_folder_errors(dataset, tmp_path):
    run = tmp_path / "run"
    _train(dataset, run, max_steps=3)
    r = palm("pca", str(run), "--components", "2", "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout.strip().splitlines()[-1])
    assert len(info["shape_explained_variance"]) == 2 and len(info["appearance_explained_variance"]) == 2
    assert (run / "pca.safetensors").is_file()
    # an existing run without --resume is refused; --resume without checkpoints is refused
    r = palm("train", "--data", str(dataset), "--out", str(run), "--max-steps", "1")
    assert r.returncode == 2 and r.stderr.startswith("error: ") and "--resume" in r.stderr
    r = palm("train", "--data", str(dataset), "--out", str(tmp_path / "empty"), "--resume", "--max-steps", "1")
    assert r.returncode == 2 and "nothing to resume" in r.stderr


def test_training_rays_pass_through_pixel_centres(dataset, tmp_path, monkeypatch):
    """The rays of a training image, recorded at the model, pass through pixel centres (u + 0.5, v + 0.5)
    of that image's camera: the sampler's pixels get their +0.5 once, in pixel_rays."""
    from palm.render.rays import project
    from palm.train.trainer import Trainer, TrainOptions, step_generator

    trainer = Trainer(TrainOptions(data=str(dataset), out=str(tmp_path / "run"), preset="tiny", pretrain_steps=0,
                                   tensorboard=False))
    seen = []
    real = trainer.model.render_rays

    def recording(origins, dirs, prep, light, background, options=None):
        seen.append((origins.detach(), dirs.detach()))
        return real(origins, dirs, prep, light, background, options)

    monkeypatch.setattr(trainer.model, "render_rays", recording)
    idx = trainer.items[0]
    sample, _ = trainer._sample(idx)
    weights = trainer.schedule.weights(0)
    terms = trainer.image_terms(idx, 0, weights, step_generator(0, 0, 1), step_generator(0, 0, 1), torch.ones(3))
    assert "rf" in terms and len(seen) == 1
    origins, dirs = seen[0]
    xy = project(sample.camera.to_camera(), origins + dirs) - 0.5
    assert torch.allclose(xy, xy.round(), atol=1e-3), "training rays miss the pixel centres"


@pytest.mark.gpu
def test_image_steps_on_cuda_with_geometry_training(dataset, tmp_path):
    """Both stages on a CUDA device with the SDF training in stage 1 (curvature term, CUDA generators):
    the path the CPU preset never takes (a CPU-only generator in the curvature term once broke it)."""
    from palm.train.trainer import Trainer, TrainOptions

    opts = TrainOptions(data=str(dataset), out=str(tmp_path / "run"), preset="tiny", max_steps=4,
                        pretrain_steps=2, seed=3, tensorboard=False, device="cuda",
                        overrides=("geometry_freeze_steps=0",))
    trainer = Trainer(opts)
    assert trainer.fit(4) is not None and trainer.step == 4
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


def _sdf_error(trainer) -> float:
    """Mean |SDF - distance to the rest mesh| of the first subject near its surface, in the pose code
    of its first frame (as stage 0 and the anchor condition it)."""
    from palm.train.geometry import sdf_training_points

    sid = trainer.dataset.subjects[0]
    g = torch.Generator().manual_seed(7)
    pts, gt = sdf_training_points(trainer._mesh_sdf_for(sid), 2048, 0.005, (0.18, 0.9, 0.18),
                                  torch.tensor(trainer.cfg.model.canonical.centre), g)
    pose = torch.as_tensor(trainer.dataset.poses(sid).pose[0], dtype=torch.float32)
    with torch.no_grad():
        z_s = trainer.model.codes.shape.weight[trainer.subject_index[sid]]
        sdf = trainer.model.canonical_sdf(pts, z_s, pose)[0]
    return float((sdf - gt).abs().mean())


def test_sdf_anchor_holds_the_geometry_to_the_training_hands(dataset, tmp_path):
    """With ``weights.sdf_anchor`` the image steps that train the geometry also fit stage 0's SDF
    targets: from the same stage-0 geometry, the SDF stays nearer the subjects' hands than when the
    image losses alone move it; off by default (the paper's losses)."""
    from palm.config import LossWeights
    from palm.train.trainer import Trainer, TrainOptions

    assert LossWeights().sdf_anchor == 0.0
    errors, logs, start = {}, {}, {}
    for w in (0.0, 10.0):
        opts = TrainOptions(data=str(dataset), out=str(tmp_path / f"run{w}"), preset="tiny", max_steps=50,
                            pretrain_steps=30, seed=3, tensorboard=False,
                            overrides=("geometry_freeze_steps=0", f"weights.sdf_anchor={w}", "anchor_points=1024",
                                       "lr_geometry=0.01", "pretrain_points=2048"))
        trainer = Trainer(opts)
        trainer.fit(30)  # stage 0 only
        start[w] = _sdf_error(trainer)
        for _ in range(20):
            logs[w] = trainer.image_step()
            trainer.step += 1
        errors[w] = _sdf_error(trainer)
    assert start[0.0] == start[10.0]  # same stage 0
    assert "sdf_anchor" in logs[10.0] and "sdf_anchor" not in logs[0.0]
    assert errors[10.0] < 0.8 * errors[0.0], (start, errors)


def test_resume_takes_the_learning_rates_it_is_given(dataset, tmp_path):
    """``--set lr...`` on a resumed run changes the optimiser's rates (the saved optimiser state
    used to bring back the old ones silently); ``lr_density`` sets beta's own rate."""
    from palm.train.trainer import Trainer, TrainOptions

    _train(dataset, tmp_path / "run", max_steps=3)
    opts = TrainOptions(data=str(dataset), out=str(tmp_path / "run"), preset="tiny", max_steps=4, resume=True,
                        pretrain_steps=2, seed=3, tensorboard=False, allow_changes=True,
                        overrides=("lr=0.002", "lr_density=1e-5"))
    trainer = Trainer(opts)
    assert trainer.step == 3
    rates = {g["name"]: g["base_lr"] for g in trainer.optimizer.param_groups}
    assert rates["radiance"] == 0.002 and rates["density"] == 1e-5
    assert trainer.optimizer.state  # the moments were restored
    trainer.fit(4)
    assert trainer.step == 4
