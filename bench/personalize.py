"""Personalisation benchmark: seconds per step and PSNR reached for the ``fast`` and ``paper`` presets.

    python bench/personalize.py [--quick] [--prior PRIOR] [--photo PHOTO] [--device cpu|cuda]

The photo (default: ``../shared/data/photos/opencv_doc/handSrc.jpg``) is preprocessed once, then
personalised with each preset. PSNR is the report's ``psnr_masked``: the final render in the input
view (white background, hand mask): for ``fast`` the raster render of the mesh refined by the
photo-detail stage (its crop, ``detail_fast`` has its timings), for ``paper`` the neural PBR render
(working crop). ``seconds_fast`` is the whole ``fast`` personalisation (the issue's 3-minute figure). ``psnr_init`` is the same score before any
step (the prior's mean subject under the initial grey environment).

Without ``--prior`` the shipped default prior is used; when it is missing, a randomly initialised
prior with the CPU preset's model (not trained: timings are meaningful, PSNR is not) is made in a
temporary folder, and ``"prior"`` in the JSON says so.

``--quick`` runs the ``fast`` preset with its schedule scaled to ``--fast-steps`` (default 6, so
that both its radiance-field and PBR phases are timed) and the ``paper`` preset for
``--paper-steps`` (default 1) step of its real schedule, and skips ``psnr_init``; the full mode
runs ``fast`` completely and ``paper`` for ``--paper-steps`` (default 50). Wall-clock numbers
depend on the machine's load (reported in ``device``); ``cpu_seconds_per_step`` is the process's
CPU time. The estimated times of
the complete schedules are ``seconds_per_step * steps``. Prints progress to stderr and, as its last
line, one JSON object.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from palm.config import PERSONALIZE_PRESETS, PRESETS, scaled_schedule
from palm.jobs import Progress

DEFAULT_PHOTO = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "photos" / "opencv_doc" / "handSrc.jpg"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def load_or_make_prior(path: str | None, device, tmp: str):
    from palm.assets import DEFAULT_PRIOR
    from palm.prior import load_prior

    if path is not None:
        return load_prior(path, device=device), str(path)
    if (DEFAULT_PRIOR / "prior.json").is_file():
        return load_prior(DEFAULT_PRIOR, device=device), "default"
    from palm.fields.latent import fit_pca
    from palm.hand import load_hand
    from palm.model import PalmNet
    from palm.prior import save_prior

    log("no default prior: using a random prior with the cpu preset's model (timings only)")
    torch.manual_seed(0)
    model = PalmNet(PRESETS["cpu"].model, load_hand("open"), n_subjects=8)
    with torch.no_grad():
        model.codes.shape.weight.normal_(0, 0.3)
        model.codes.appearance.weight.normal_(0, 0.3)
    k = model.cfg.latent.n_pca
    model.pca = {"shape": fit_pca(model.codes.shape.weight, k), "appearance": fit_pca(model.codes.appearance.weight, k)}
    save_prior(Path(tmp) / "prior", model)
    return load_prior(Path(tmp) / "prior", device=device), "random (cpu preset model, untrained)"


def run(photo, prior, cfg, preset: str, work_res: int) -> dict:
    """Personalise and time it: wall and CPU seconds per step (setup and final render excluded)."""
    from palm.train.personalize import personalize

    marks = []

    def emit(event):
        if isinstance(event, Progress) and not event.message.startswith("detail"):
            marks.append((time.perf_counter(), time.process_time()))
            if event.step == 1 or event.step % 5 == 0 or event.step == event.total:
                log(f"  {preset} step {event.step}/{event.total} total={event.losses.get('total', float('nan')):.4f}")

    avatar = personalize(photo, prior, cfg, None, emit, None, preset=preset, work_res=work_res)
    report = avatar.extra["report"]
    out = {"steps": cfg.max_steps, "psnr": report.get("psnr_masked"), "ssim": report.get("ssim_masked"),
           "lpips": report.get("lpips_masked"), "iou": report.get("iou"), "seconds": report["seconds"],
           "detail": report.get("detail")}
    if len(marks) >= 2:  # steps 2..N: the first step carries one-off imports and caches
        n = len(marks) - 1
        out["seconds_per_step"] = (marks[-1][0] - marks[0][0]) / n
        out["cpu_seconds_per_step"] = (marks[-1][1] - marks[0][1]) / n
    else:
        out["seconds_per_step"] = report["seconds_per_step"]
    return out


def _round(x, digits: int = 3):
    return None if x is None else round(x, digits)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="scaled-down fast run and 1 paper step (a few minutes)")
    ap.add_argument("--prior", default=None, help="prior folder (default: shipped default, else a random one)")
    ap.add_argument("--photo", default=str(DEFAULT_PHOTO), help="hand photo")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--fast-steps", type=int, default=None, help="fast-preset steps (quick: 6; full: the preset's)")
    ap.add_argument("--paper-steps", type=int, default=None, help="paper-preset steps to run (quick: 1; full: 50)")
    ap.add_argument("--fast-set", action="append", default=[], metavar="KEY=VALUE",
                    help="change a field of the fast preset, e.g. --fast-set images_per_step=1 --fast-set weights.lap=0")
    ap.add_argument("--work-res", type=int, default=None,
                    help="working crop side in pixels (default 128; quick: 80, for cheaper final renders)")
    args = ap.parse_args()

    from palm.data.photo.pipeline import preprocess_photo

    device = torch.device(args.device)
    args.work_res = args.work_res or (80 if args.quick else 128)
    fast_cfg = PERSONALIZE_PRESETS["fast"]
    if args.fast_set:
        from palm.config import apply_overrides

        fast_cfg = apply_overrides(fast_cfg, args.fast_set, "--fast-set")
    paper_cfg = PERSONALIZE_PRESETS["paper"]
    fast_steps = args.fast_steps or (6 if args.quick else fast_cfg.max_steps)
    paper_steps = args.paper_steps or (1 if args.quick else 50)
    with tempfile.TemporaryDirectory() as tmp:
        prior, prior_name = load_or_make_prior(args.prior, device, tmp)
        t0 = time.perf_counter()
        photo = preprocess_photo(args.photo, hand=prior.model.hand)
        t_pre = time.perf_counter() - t0
        log(f"preprocessing {t_pre:.1f} s; mask {100 * photo.mask_fraction:.1f}% of the photo")

        init = {"psnr": None}
        if not args.quick:
            log("initial score (0 steps)")
            init = run(photo, prior, dataclasses.replace(fast_cfg, max_steps=0, preview_every=0, detail=None), "init",
                       args.work_res)
        log(f"fast preset: {fast_steps} of {fast_cfg.max_steps} steps")
        fcfg = fast_cfg if fast_steps == fast_cfg.max_steps else scaled_schedule(fast_cfg, fast_steps)
        fast = run(photo, prior, dataclasses.replace(fcfg, preview_every=0), "fast", args.work_res)
        log(f"paper preset: {paper_steps} of {paper_cfg.max_steps} steps (its own schedule)")
        paper = run(photo, prior, dataclasses.replace(paper_cfg, max_steps=paper_steps, preview_every=0), "paper",
                    args.work_res)

    result = {
        "device": str(device) if device.type != "cpu" else f"cpu ({os.cpu_count()} cores, load {os.getloadavg()[0]:.1f})",
        "prior": prior_name,
        "quick": bool(args.quick),
        "fast_overrides": args.fast_set,
        "work_res": args.work_res,
        "preprocess_seconds": round(t_pre, 2),
        "psnr_init": init["psnr"],
        "seconds_per_step_fast": round(fast["seconds_per_step"], 3),
        "cpu_seconds_per_step_fast": _round(fast.get("cpu_seconds_per_step")),
        "fast_steps_run": fast_steps,
        "fast_steps_full": fast_cfg.max_steps,
        "psnr_fast": fast["psnr"],
        "ssim_fast": fast["ssim"],
        "lpips_fast": fast["lpips"],
        "seconds_fast": fast["seconds"],
        "iou_fast": fast["iou"],
        "detail_fast": fast["detail"],
        "est_seconds_fast_full": round(fast["seconds_per_step"] * fast_cfg.max_steps, 1),
        "seconds_per_step_paper": round(paper["seconds_per_step"], 3),
        "cpu_seconds_per_step_paper": _round(paper.get("cpu_seconds_per_step")),
        "paper_steps_run": paper_steps,
        "paper_steps_full": paper_cfg.max_steps,
        "psnr_paper_steps": paper["psnr"],
        "est_seconds_paper_full": round(paper["seconds_per_step"] * paper_cfg.max_steps, 1),
        "note": "paper steps before pbr_start_step are radiance-field only; PBR steps cost more",
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
