"""Viewport benchmark: frames per second of the studio's renderer and the PCA re-bake latency.

Renders the hand rig (skinned in the vertex shader) lit by a 64-lobe SG environment into an
offscreen framebuffer of a standalone (EGL) OpenGL context, reading every frame back as the studio
does. ``fps_512``/``fps_1024`` use the studio's default lighting, pre-integrated into textures
(``app/prefilter.py``); ``fps_exact_512``/``fps_exact_1024`` the exact per-pixel loop over the
lobes. ``rebake_coarse_s`` is the median latency of a PCA slider move's coarse re-bake of the prior
(``palm.rebake.PriorBaker`` at ``COARSE_RES``, caches warm, a new shape code each time), or of the
rig's rest mesh when no prior is installed (``rebake_source`` says which).

The studio itself (``app.studio.Studio`` at 1280x800, under a private Xvfb when there is no
display; ``--no-studio`` skips it): ``idle_frame_ms`` is the median cost of one GUI frame when
nothing changed (the 3D viewport is not redrawn), ``input_latency_ms`` the median time from a real
key event (``F``, "frame the hand", sent through the X server with XTEST while the pointer is over
the viewport) to the end of the frame that shows its result, with the studio idle;
``viewport_redraws_idle`` counts 3D redraws during the idle frames (0 expected). Prints JSON; the
last line is one object. Not a test: it asserts nothing about time.

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


def studio_figures(prior: str | None, idle_frames: int, presses: int) -> dict:
    """Idle frame cost and input latency of the real studio (see the module docstring)."""
    import os

    from app import tags
    from app.studio import TITLE, Studio
    from app.xvfb import ensure_display

    xvfb = ensure_display(1600, 1000)
    studio = None
    inp = None
    try:
        studio = Studio(size=(1280, 800), prior=prior, dnd=False)
        t0 = time.perf_counter()
        settled = studio.wait_idle(600)
        out: dict = {"studio_settle_s": round(time.perf_counter() - t0, 2), "studio_settled": settled,
                     "studio_viewport": "x".join(map(str, studio.vp_size))}
        studio.step_frames(5)
        renders = studio.renderer.renders
        costs = []
        for _ in range(idle_frames):
            t = time.perf_counter()
            studio.frame()
            costs.append(time.perf_counter() - t)
        out["idle_frame_ms"] = round(1000 * float(np.median(costs)), 2)
        out["viewport_redraws_idle"] = studio.renderer.renders - renders
        try:
            from app.xinput import XInput

            inp = XInput(TITLE, os.getpid())
            (x0, y0), (w, h) = studio.dpg.get_item_state(tags.VIEWPORT_IMAGE)["rect_min"], studio.vp_size
            inp.move(x0 + w // 2, y0 + h // 2)
            studio.step_frames(3)
            out["input_source"] = "XTEST key F over the viewport"
        except Exception as exc:  # noqa: BLE001 - no XTEST: the same intent through the callback queue
            inp = None
            out["input_source"] = f"frame_hand() called directly ({type(exc).__name__})"
        lat = []
        for _ in range(presses):
            studio.step_frames(3)
            t = time.perf_counter()
            if inp is not None:
                inp.key("f", hold_s=0.0)
            else:
                studio.frame_hand()
            for _ in range(30):
                if studio.frame():
                    break
            lat.append(time.perf_counter() - t)
        out["input_latency_ms"] = round(1000 * float(np.median(lat)), 2)
        out["render_ms"] = round(studio.controller.state.render_ms, 2)
        return out
    finally:
        if inp is not None:
            inp.close()
        if studio is not None:
            studio.close()
        if xvfb is not None:
            xvfb.stop()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="few frames (about 10 s on a 2-core CPU)")
    p.add_argument("--lobes", type=int, default=64)
    p.add_argument("--prior", help="prior folder for the re-bake latency (default assets/priors/default)")
    p.add_argument("--no-studio", action="store_true", help="skip the studio's idle-frame and input-latency figures")
    p.add_argument("--studio-only", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.studio_only:  # a process of its own: the studio's GLX context and the EGL one do not mix
        print(json.dumps(studio_figures(args.prior, 30 if args.quick else 60, 9 if args.quick else 15)))
        return 0
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
    ctx.release()
    if not args.no_studio:
        import subprocess

        cmd = [sys.executable, __file__, "--studio-only", *(["--quick"] if args.quick else []),
               *(["--prior", args.prior] if args.prior else [])]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=1200)
        try:
            result.update(json.loads(proc.stdout.strip().splitlines()[-1]))
        except (ValueError, IndexError):
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            result.update(idle_frame_ms=None, input_latency_ms=None, studio_error=f"rc {proc.returncode}: {tail[0]}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
