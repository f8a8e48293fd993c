"""``palm personalize``: one photo of a hand -> a relightable, posable avatar (spec section 9).

    palm personalize PHOTO --prior PRIOR --out AVATAR [--force] [--mask M] [--hand-params J] [--camera C]
                           [--left] [--preset paper|fast] [--steps N] [--work-res PX] [--detail-res PX]

The photo is preprocessed (:func:`palm.data.photo.pipeline.preprocess_photo`: landmarks, hand fit, mask,
or the user's mask / hand parameters / camera), then :func:`palm.train.personalize.personalize`
fits the prior's PCA codes, an SG environment and a pose correction; then (all presets but
``paper``) the photo-detail stage (:mod:`palm.detail`) refines the baked mesh's outline and albedo.
Writes the avatar folder (``avatar.safetensors``, ``avatar.json``, ``report.json``,
``mesh.safetensors``) and ``AVATAR/photo/`` (the
preprocessing's overlay, mask and hand parameters) plus ``AVATAR/preview.png`` (render beside
the photo crop), all in one atomic swap.

Output policy (:func:`palm.io.check_output_dir`, checked before any work): AVATAR must not be an
input or lie inside or over one, must not be a file, and an existing folder must be an avatar
folder (it holds ``avatar.json``), which is replaced only with ``--force``.
"""

from __future__ import annotations

import argparse

from palm.cli.common import add_detail_res, common, with_detail_res


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "personalize",
        parents=[common()],
        help="personalise the prior to a photo of a hand (writes an avatar folder)",
        description=(
            "Fit the prior's shape and appearance PCA coefficients, an SG environment and a pose correction "
            "to one photo (networks frozen). The hand, its pose, shape, camera and mask come from the photo "
            "preprocessing ('palm photo') unless given. Writes AVATAR/avatar.safetensors, avatar.json, "
            "report.json (psnr_masked, ssim_masked, lpips_masked and silhouette iou in the input view, steps, "
            "seconds, preset) and preview.png. An existing avatar folder is replaced only with --force; any other "
            "existing path is refused. 'palm render --avatar AVATAR' renders it."
        ),
    )
    p.add_argument("photo", metavar="PHOTO", help="the photo (JPEG, PNG, ...)")
    p.add_argument("--prior", default=None, help="prior folder (default: the shipped assets/priors/default)")
    p.add_argument("--out", required=True, metavar="AVATAR", help="avatar folder to write (a new path, or an "
                   "existing avatar folder with --force)")
    p.add_argument("--force", action="store_true", help="replace AVATAR when it is an existing avatar folder")
    p.add_argument("--mask", metavar="M", default=None, help="your own hand mask (white = hand)")
    p.add_argument("--hand-params", metavar="J", default=None,
                   help="your own hand parameters (palm-hand-params-v1 JSON, see 'palm photo')")
    p.add_argument("--camera", metavar="C", default=None,
                   help="camera JSON {K: 3x3, Rt: 4x4 world->camera, width, height} replacing the fitted one")
    p.add_argument("--left", action="store_true", default=None, help="the photo shows a left hand (default: detected)")
    p.add_argument("--preset", default="fast", choices=("fast", "paper"),
                   help="fast (a few CPU minutes, default) or paper (5200 steps, the published schedule)")
    p.add_argument("--steps", type=int, default=None, metavar="N", help="override the preset's number of steps")
    add_detail_res(p)
    p.add_argument("--work-res", type=int, default=None, metavar="PX",
                   help="side of the working crop around the hand, 32 to 2048 (default: the preset's, 128 for fast, "
                        "256 for paper)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_personalize)


def apply_camera(result, path):
    """Replace the fit's camera by the user's camera JSON (K rescaled to the photo's size)."""

    from palm.errors import PalmError
    from palm.io import read_json
    from palm.render.rays import Camera

    cam = Camera.from_dict(read_json(path), str(path))
    h, w = result.image.shape[:2]
    K = cam.K.double().numpy()
    if (cam.height, cam.width) != (h, w):
        if abs(cam.width / cam.height - w / h) > 0.01 * w / h:
            raise PalmError(path, f"camera is for a {cam.width}x{cam.height} image but the photo is {w}x{h}")
        K[:2] *= w / cam.width
    if result.left:  # the working frame is the mirrored photo: mirror the principal point
        K[0, 2] = w - K[0, 2]
    result.fit.K = K
    result.fit.Rt = cam.Rt.double().numpy()
    return result


def run_personalize(args: argparse.Namespace) -> int:
    import dataclasses
    from pathlib import Path

    from palm.assets import DEFAULT_PRIOR
    from palm.avatar import FORMAT as AVATAR_FORMAT
    from palm.cli.common import resolve_device
    from palm.config import PERSONALIZE_PRESETS, scaled_schedule
    from palm.data.photo.pipeline import preprocess_photo, write_outputs
    from palm.errors import PalmError
    from palm.io import check_output_dir, clean_stale_temporaries, require_file
    from palm.jobs import ConsoleProgress, Log
    from palm.prior import load_prior
    from palm.train.personalize import personalize

    out = Path(args.out)
    inputs = (args.photo, args.mask, args.hand_params, args.camera, args.prior or DEFAULT_PRIOR)
    clean_stale_temporaries(out)
    check_output_dir(out, "avatar.json", inputs, args.force, what="an avatar folder", marker_format=AVATAR_FORMAT)
    require_file(args.photo, "photo")
    if args.steps is not None and args.steps < 1:
        raise PalmError("--steps", f"must be at least 1, got {args.steps}")
    if args.work_res is not None and not 32 <= args.work_res <= 2048:
        raise PalmError("--work-res", f"must be between 32 and 2048, got {args.work_res}")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise PalmError(parent, "output folder does not exist")
    cfg = PERSONALIZE_PRESETS[args.preset]
    if args.steps is not None:
        cfg = scaled_schedule(cfg, args.steps)
    cfg = with_detail_res(dataclasses.replace(cfg, seed=args.seed, work_res=args.work_res or cfg.work_res),
                          args.detail_res)
    device = resolve_device(args.device)
    hand = None
    if args.mano:
        from palm.hand import load_hand

        hand = load_hand("mano", args.mano)
    prior = load_prior(args.prior, device=device, hand=hand)
    result = preprocess_photo(args.photo, mask_path=args.mask, hand_params_path=args.hand_params, left=args.left,
                              hand=prior.model.hand)
    if args.camera is not None:
        result = apply_camera(result, args.camera)
    if not result.mask.any():
        raise PalmError(args.mask or args.photo, "the hand mask is empty")
    bar = ConsoleProgress("personalize", quiet=args.quiet)

    def emit(event):
        if not isinstance(event, Log) or event.level == "warning":
            bar(event)

    avatar = personalize(result, prior, cfg, out, emit, None, preset=args.preset,
                         write_extra=lambda folder: write_outputs(result, folder / "photo", prior.model.hand))
    r = avatar.extra["report"]
    print(f"wrote {out}: PSNR {_metric(r.get('psnr_masked'), 2, ' dB')}, SSIM {_metric(r.get('ssim_masked'), 3)}, "
          f"LPIPS {_metric(r.get('lpips_masked'), 3)}, IoU {_metric(r.get('iou'), 3)} in the input view; "
          f"{r['steps']} steps in {r['seconds']:.0f} s")
    return 0


def _metric(value: float | None, digits: int, unit: str = "") -> str:
    """A report metric for the console: ``n/a`` where it is undefined (null in report.json)."""
    return "n/a" if value is None else f"{value:.{digits}f}{unit}"
