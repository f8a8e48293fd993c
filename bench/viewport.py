"""Viewport benchmark: frames per second of the studio's renderer and the PCA re-bake latency.

Renders the hand rig (skinned in the vertex shader) lit by a 64-lobe SG environment into an
offscreen framebuffer of a standalone (EGL) OpenGL context, reading every frame back as the studio
does. ``fps_512``/``fps_1024`` use the studio's default lighting, pre-integrated into textures
(``app/prefilter.py``); ``fps_exact_512``/``fps_exact_1024`` the exact per-pixel loop over the
lobes. ``rebake_coarse_s`` is the median latency of a PCA slider move's coarse re-bake of the prior
(``palm.rebake.PriorBaker`` at ``COARSE_RES``, caches warm, a new shape code each time), or of the
rig's rest mesh when no prior is installed (``rebake_source`` says which). Prints JSON; the last
line is one object. Not a test: it asserts nothing about time.

    python bench/viewport.py --quick
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def fps(renderer, camera, frames: int) -> float:
    renderer.render(camera)  # warm-up (shader compile, first upload)
    t0 = time.perf_counter()
    for i in range(frames):
        camera.orbit(3.0, 0.0)
        renderer.render(camera)
    return frames / (time.perf_counter() - t0)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="few frames (about 10 s on a 2-core CPU)")
    p.add_argument("--lobes", type=int, default=64)
    p.add_argument("--prior", help="prior folder for the re-bake latency (default assets/priors/default)")
    args = p.parse_args(argv)
    frames = 8 if args.quick else 60

    import torch

    from app import actions
    from app.camera import OrbitCamera
    from app.gl_renderer import AvatarRenderer, standalone_context
    from palm.hand import load_hand
    from palm.hand.lbs import bone_transforms
    from palm.render.sg import sg_init

    hand, note = load_hand("open"), ""
    avatar = actions.bake_rig(hand)
    bones = bone_transforms(hand, np.zeros((16, 3), np.float32))
    lobes = sg_init(args.lobes, generator=torch.Generator().manual_seed(0)).numpy()
    ctx = standalone_context()
    result: dict = {"gl_renderer": ctx.info["GL_RENDERER"], "gl_version": ctx.info["GL_VERSION"],
                    "n_lobes": args.lobes, "vertices": len(avatar.vertices), "faces": len(avatar.faces),
                    "frames": frames, "rig": getattr(hand, "name", "stand-in") + (f" ({note})" if note else "")}
    for size in (512, 1024):
        r = AvatarRenderer(ctx, size, size)
        r.set_avatar(avatar)
        r.set_bones(bones)
        t0 = time.perf_counter()
        r.set_environment(lobes)
        result.setdefault("preintegrate_s", round(time.perf_counter() - t0, 3))  # first: not yet cached
        cam = OrbitCamera(elevation=0.6)
        cam.frame(np.asarray(avatar.vertices))
        for label, flag in (("fps", True), ("fps_exact", False)):
            r.preintegrated = flag
            result[f"{label}_{size}"] = round(fps(r, cam, frames), 2)
        r.release()

    prior, prior_note = actions.load_prior(args.prior)
    rng = np.random.default_rng(0)
    times = []
    moves = 3 if args.quick else 8
    if prior is not None:
        t0 = time.perf_counter()
        actions.bake_prior(prior, actions.Subject(np.zeros(prior.n_shape, np.float32),
                                                  np.zeros(prior.n_appearance, np.float32)), actions.COARSE_RES)
        result["rebake_first_s"] = round(time.perf_counter() - t0, 3)  # builds the grid cache once
        for _ in range(moves):
            shape, appearance = actions.random_coefficients(prior, int(rng.integers(2**31)))
            t0 = time.perf_counter()
            baked = actions.bake_prior(prior, actions.Subject(shape, appearance), actions.COARSE_RES)
            times.append(time.perf_counter() - t0)
        result["rebake_source"] = (f"prior {prior.path} (PCA bake, grid {actions.COARSE_RES}, "
                                   f"{len(baked.vertices)} vertices)")
    else:
        for _ in range(moves):
            t0 = time.perf_counter()
            actions.bake_rig(hand, rng.standard_normal(int(getattr(hand, "n_betas", 10))).astype(np.float32))
            times.append(time.perf_counter() - t0)
        result["rebake_source"] = f"rig betas: no prior ({prior_note})"
    result["rebake_coarse_s"] = round(float(np.median(times)), 4)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
