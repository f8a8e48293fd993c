"""Training benchmark: steps/s and rays/s of prior training (image stage) for the cpu and paper
presets, and peak memory.

    python bench/train.py [--quick] [--device cpu|cuda] [--data DIR]

Without --data a small synthetic set is generated in a temporary folder. The paper preset renders
128 images x 1027 rays per step; on a CPU the quick mode measures it with 1 image per step and
reports its rays/s (the per-ray cost does not depend on the batch). Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def measure(data: str, preset: str, steps: int, device: str, overrides: tuple[str, ...]) -> dict:
    from palm.train.trainer import Trainer, TrainOptions

    with tempfile.TemporaryDirectory() as run:
        opts = TrainOptions(data=data, out=run, preset=preset, pretrain_steps=0, device=device, tensorboard=False,
                            overrides=overrides + ("importance_start_step=0", "pbr_start_step=0",
                                                   "checkpoint_every=100000"))
        trainer = Trainer(opts)
        trainer.fit(1)  # warm-up (first-call costs, caches)
        cfg = trainer.cfg
        rays = cfg.images_per_step * (cfg.pixels_per_image + cfg.patch_size**2)
        t0 = time.perf_counter()
        trainer.fit(1 + steps)
        dt = (time.perf_counter() - t0) / steps
    return {"steps_per_s": 1.0 / dt, "rays_per_s": rays / dt, "rays_per_step": rays,
            "images_per_step": cfg.images_per_step}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a few steps (under two minutes on a CPU)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--data", default=None, help="PALM-layout dataset (default: a generated synthetic set)")
    args = ap.parse_args()
    tmp = None
    data = args.data
    if data is None:
        tmp = tempfile.TemporaryDirectory()
        data = str(Path(tmp.name) / "synth")
        log("generating a small synthetic set ...")
        subprocess.run([sys.executable, "-m", "palm", "data", "synth", "--out", data, "--subjects", "2", "--poses", "1",
                        "--views", "2", "--res", "64", "--quiet"], check=True, cwd=ROOT)
    cuda = args.device.startswith("cuda")
    steps = 2 if args.quick else 10
    log("cpu preset ...")
    cpu = measure(data, "cpu", steps, args.device, ())
    log("paper preset ...")
    paper_over = ("images_per_step=1",) if (args.quick or not cuda) else ()
    paper = measure(data, "paper", 1 if args.quick else 3, args.device, paper_over)
    peak = (torch.cuda.max_memory_allocated() / 2**20 if cuda
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    result = {
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "quick": args.quick,
        "steps_per_s_cpu_preset": round(cpu["steps_per_s"], 4),
        "rays_per_s": round(cpu["rays_per_s"], 1),
        "rays_per_step_cpu_preset": cpu["rays_per_step"],
        "steps_per_s_paper_preset": round(paper["steps_per_s"], 5),
        "rays_per_s_paper_preset": round(paper["rays_per_s"], 2),
        "images_per_step_paper_measured": paper["images_per_step"],
        "peak_mem_mb": round(peak, 1),
        "torch_threads": torch.get_num_threads(),
    }
    if tmp is not None:
        tmp.cleanup()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
