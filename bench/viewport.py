"""Viewport benchmark: frames per second of the studio's renderer and the PCA re-bake latency.

Renders the hand rig (skinned in the vertex shader) lit by a 64-lobe SG environment per pixel into
an offscreen framebuffer of a standalone (EGL) OpenGL context, reading every frame back as the
studio does. Prints JSON; the last line is one object with ``fps_512``, ``fps_1024``,
``rebake_coarse_s`` and ``gl_renderer``. Not a test: it asserts nothing about time.

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
    args = p.parse_args(argv)
    frames = 8 if args.quick else 60

    import torch

    from app import actions
    from app.camera import OrbitCamera
    from app.gl_renderer import AvatarRenderer, standalone_context
    from palm.render.sg import sg_init

    hand, note = actions.load_rig("open")
    avatar = actions.bake_rig(hand)
    bones = actions.bone_transforms(hand, np.zeros((16, 3), np.float32))
    lobes = sg_init(args.lobes, generator=torch.Generator().manual_seed(0)).numpy()
    ctx = standalone_context()
    result: dict = {"gl_renderer": ctx.info["GL_RENDERER"], "gl_version": ctx.info["GL_VERSION"],
                    "n_lobes": args.lobes, "vertices": len(avatar.vertices), "faces": len(avatar.faces),
                    "frames": frames, "rig": getattr(hand, "name", "stand-in") + (f" ({note})" if note else "")}
    for size in (512, 1024):
        r = AvatarRenderer(ctx, size, size)
        r.set_avatar(avatar)
        r.set_bones(bones)
        r.set_environment(lobes)
        cam = OrbitCamera(elevation=0.6)
        cam.frame(np.asarray(avatar.vertices))
        result[f"fps_{size}"] = round(fps(r, cam, frames), 2)
        r.release()

    prior, prior_note = actions.load_prior()
    rng = np.random.default_rng(0)
    times = []
    for _ in range(2 if args.quick else 5):
        t0 = time.perf_counter()
        if prior is not None:
            actions.bake_prior(prior, actions.random_coefficients(prior.shape_std, rng),
                               actions.random_coefficients(prior.appearance_std, rng), 32)
        else:
            from palm.bake import bake_from_hand

            bake_from_hand(hand, rng.standard_normal(int(getattr(hand, "n_betas", 10))).astype(np.float32))
        times.append(time.perf_counter() - t0)
    result["rebake_coarse_s"] = round(float(np.median(times)), 4)
    result["rebake_source"] = "prior (32^3 grid)" if prior is not None else f"rig betas ({prior_note})"
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
