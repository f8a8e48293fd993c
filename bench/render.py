"""Rendering benchmark: network evaluations/s, full PBR rays/s (cpu and paper presets), the
fraction of network evaluations that empty-space skipping keeps for a 256x256 view of the hand,
and the avatar renderer users wait for: ``avatar_512_seconds`` (``palm render --avatar DIR --pose
fist --res 512`` in-process: load prior + avatar, pose, rasterise, shade with shadows), with the
raster and neural renderers' agreement (PSNR of one against the other, same view, small image).

    python bench/render.py [--quick] [--device cpu|cuda] [--avatar DIR]

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


def avatar_figures(avatar_dir: str | None, neural_res: int) -> dict:
    """Seconds for a 512x512 raster render of an avatar, and raster-vs-neural PSNR at ``neural_res``.

    Without ``avatar_dir`` the avatar is the default prior's mean subject, baked and subdivided as
    the photo-detail stage does (palm.detail), written to a temporary avatar folder.
    """
    import tempfile

    import numpy as np

    from palm.metrics import psnr_masked
    from palm.scene import load_scene, render_scene

    tmp = None
    if avatar_dir is None:
        from palm.avatar import Avatar, save_avatar
        from palm.bake import bake_from_prior, save_baked
        from palm.detail import subdivide
        from palm.prior import load_prior
        from palm.render.environment import display_light

        prior = load_prior(None)
        z_s, z_a = prior.codes_from_coeffs()
        tmp = tempfile.TemporaryDirectory()
        avatar_dir = str(Path(tmp.name) / "avatar")
        cam = {"K": [[300.0, 0, 128], [0, 300.0, 128], [0, 0, 1]], "Rt": np.eye(4).tolist(), "height": 256, "width": 256}
        save_avatar(avatar_dir, Avatar(c := torch.zeros(0), c, z_s, z_a, display_light(None)[0], np.zeros((16, 3)),
                                       np.zeros(prior.model.hand.n_betas), np.array([0, 0, 0.5]), cam,
                                       prior.content_hash))
        save_baked(Path(avatar_dir) / "mesh.safetensors", subdivide(bake_from_prior(prior, resolution=96)))
    t0 = time.perf_counter()
    scene = load_scene(avatar=avatar_dir, pose="fist", res=512)
    raster = render_scene(scene).numpy()
    seconds = time.perf_counter() - t0
    small = [render_scene(load_scene(avatar=avatar_dir, pose="fist", res=neural_res, renderer=r)).numpy()
             for r in ("raster", "neural")]
    mask = (small[0][..., 3] > 0.5) & (small[1][..., 3] > 0.5)
    from palm.render.color import linear_to_srgb

    a, b = (linear_to_srgb(np.clip(x[..., :3], 0, 1)) for x in small)
    out = {"avatar_512_seconds": round(seconds, 2), "avatar_512_covered_px": int((raster[..., 3] > 0).sum()),
           "avatar_vertices": len(scene.mesh.vertices), "raster_vs_neural_res": neural_res,
           "raster_vs_neural_psnr": round(float(psnr_masked(a, b, mask)), 2),
           "raster_vs_neural_iou": round(float(mask.sum() / max(((small[0][..., 3] > 0.5) | (small[1][..., 3] > 0.5)).sum(), 1)), 4)}
    if tmp is not None:
        tmp.cleanup()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer points, rays and repeats (under two minutes on a CPU)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--avatar", default=None, help="avatar folder for avatar_512_seconds (default: the prior's mean subject)")
    ap.add_argument("--only-avatar", action="store_true", help="only the avatar figures")
    args = ap.parse_args()
    if args.only_avatar:
        print(json.dumps(avatar_figures(args.avatar, 32 if args.quick else 64)))
        return
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
    log("avatar: 512x512 raster render with shadows; raster vs neural ...")
    result.update(avatar_figures(args.avatar, 32 if q else 64))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
