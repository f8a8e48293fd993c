"""Rendering benchmark: network evaluations/s, full PBR rays/s (cpu and paper presets), and the
fraction of network evaluations that empty-space skipping keeps for a 256x256 view of the hand.

    python bench/render.py [--quick] [--device cpu|cuda]

Prints progress to stderr and, as its last line, one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from palm import config as C
from palm.hand import load_hand, load_pose
from palm.model import Frame, PalmNet, RenderOptions
from palm.render import sampling
from palm.render.rays import pixel_rays, world_to_local
from palm.render.views import framing_radius, orbit_camera, present_upright


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) / repeats


def net_evals_per_s(cfg: C.PalmNetConfig, n_points: int, device, repeats: int) -> float:
    """Hash encoding + geometry MLP forward (no gradients) on random canonical points."""
    from palm.fields.geometry import GeometryNetwork

    net = GeometryNetwork(cfg).to(device).eval()
    c = torch.tensor(cfg.canonical.centre, device=device)
    x = c + (torch.rand(n_points, 3, device=device) - 0.5) * cfg.canonical.half_side
    cond = torch.zeros(n_points, 64, device=device)

    def run():
        with torch.no_grad():
            net(x, cond)
        if device.type == "cuda":
            torch.cuda.synchronize()

    return n_points / timed(run, repeats)


def scene(cfg: C.PalmNetConfig, hand, device, res: int):
    model = PalmNet(cfg, hand, 1).to(device).eval()
    model.set_step(None)
    pose = torch.as_tensor(present_upright(load_pose("relaxed")), device=device)
    frame = Frame(torch.zeros(32, device=device), torch.zeros(32, device=device), pose,
                  torch.zeros(hand.n_betas, device=device), torch.zeros(3, device=device))
    verts = hand(pose[None]).vertices[0]
    cam = orbit_camera(verts.mean(0), framing_radius(verts), res).to(device)
    return model, frame, cam


def rays_per_s(cfg: C.PalmNetConfig, hand, device, n_rays: int, repeats: int) -> float:
    """Full renderer (RF + Monte-Carlo PBR with secondary rays) on rays that hit the hand's box."""
    model, frame, cam = scene(cfg, hand, device, 128)
    with torch.no_grad():
        prep = model.prepare(frame)
        o, d = pixel_rays(cam)
        o_s, d_s = world_to_local((o, d), prep.w2s)
        hit = sampling.march_rays(o_s, d_s, prep.grid, n_steps=cfg.sampler.n_steps).counts > 0
        idx = hit.nonzero(as_tuple=True)[0]
        idx = idx[torch.randperm(idx.numel(), generator=torch.Generator().manual_seed(0))[:n_rays]]
        light = model.light.detach()
        bg = torch.ones(3, device=device)

        def run():
            model.render_rays(o[idx], d[idx], prep, light, bg, RenderOptions(training=False, pbr=True))
            if device.type == "cuda":
                torch.cuda.synchronize()

        return idx.numel() / timed(run, repeats)


def ess_fraction(cfg: C.PalmNetConfig, hand, device) -> dict:
    """Network evaluations with / without empty-space skipping, 256x256 view, primary marching."""
    model, frame, cam = scene(cfg, hand, device, 256)
    prep = model.prepare(frame)
    o, d = pixel_rays(cam)
    o_s, d_s = world_to_local((o, d), prep.w2s)
    extra = cfg.sampler.importance_rounds * cfg.sampler.importance_samples
    with_skip, without = sampling.count_evals(o_s, d_s, prep.grid, n_steps=cfg.sampler.n_steps, extra_per_ray=extra)
    march_with, march_without = sampling.count_evals(o_s, d_s, prep.grid, n_steps=cfg.sampler.n_steps)
    return {"with": with_skip, "without": without, "fraction": with_skip / max(without, 1),
            "fraction_marching": march_with / max(march_without, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer points, rays and repeats (under two minutes on a CPU)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    device = torch.device(args.device)
    hand = load_hand("open").to(device)
    cpu_cfg, paper_cfg = C.PRESETS["cpu"].model, C.PRESETS["paper"].model
    q = args.quick
    log("network evaluations (paper geometry network: 32-level hash grid + MLP) ...")
    evals = net_evals_per_s(paper_cfg, 16384 if q else 262144, device, 2 if q else 5)
    evals_cpu = net_evals_per_s(cpu_cfg, 16384 if q else 262144, device, 2 if q else 5)
    log("rays/s, cpu preset ...")
    rps_cpu = rays_per_s(cpu_cfg, hand, device, 32 if q else 512, 1 if q else 3)
    log("rays/s, paper preset ...")
    rps_paper = rays_per_s(paper_cfg, hand, device, 4 if q else 128, 1 if q else 2)
    log("empty-space skipping, 256x256 ...")
    ess = ess_fraction(paper_cfg, hand, device)
    result = {
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "quick": q,
        "net_evals_per_s": round(evals, 1),
        "net_evals_per_s_cpu_preset": round(evals_cpu, 1),
        "rays_per_s_cpu": round(rps_cpu, 2),
        "rays_per_s_paper": round(rps_paper, 3),
        "ess_eval_fraction": round(ess["fraction"], 4),
        "ess_eval_fraction_marching": round(ess["fraction_marching"], 4),
        "ess_evals_with_skipping": ess["with"],
        "ess_evals_without_skipping": ess["without"],
        "torch_threads": torch.get_num_threads(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
