"""``palm eval``: personalise and score avatars under the paper's protocols (spec sections 10.2, 11).

    palm eval interhand --root ROOT --prior PRIOR [--sequences A,B] [--max-images N] [--out DIR]
    palm eval synthetic --data DIR --prior PRIOR [--subjects A,B] [--max-images N] [--out DIR]

Both print the result table as Markdown (``--json``: one JSON object instead) and, with
``--out``, write ``DIR/eval.md``, ``DIR/eval.json`` and the personalised avatars
(``DIR/avatars/<name>``). DIR must be a new path, or an evaluation folder (its ``eval.json``)
with ``--force`` (:func:`palm.io.check_output_dir`).
"""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Iterator

from palm.cli.common import add_detail_res, common, with_detail_res


def _shared(p: argparse.ArgumentParser) -> None:
    p.add_argument("--prior", default=None, help="prior folder (default: the shipped assets/priors/default)")
    p.add_argument("--preset", default="fast", choices=("fast", "paper"), help="personalisation preset (default fast)")
    p.add_argument("--steps", type=int, default=None, metavar="N", help="override the preset's number of steps")
    p.add_argument("--work-res", type=int, default=None, metavar="PX",
                   help="side of the crop around the hand used for fitting and scoring, 32 to 2048 (default: the "
                        "preset's, 128 for fast, 256 for paper)")
    add_detail_res(p)
    p.add_argument("--max-images", type=int, default=None, metavar="N", help="score at most N images per group")
    p.add_argument("--out", default=None, metavar="DIR", help="write eval.md, eval.json and the avatars here (a new "
                   "path, or an earlier evaluation folder with --force)")
    p.add_argument("--force", action="store_true", help="replace --out when it is an earlier evaluation folder")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the Markdown table")
    p.add_argument("--quiet", action="store_true", help="no progress output")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate personalisation (InterHand2.6M, synthetic) with PSNR/SSIM/LPIPS",
                       description="Personalise the prior on one image per sequence/subject and score renders of "
                                   "the avatar (masked PSNR, SSIM, LPIPS; white background).")
    s = p.add_subparsers(dest="eval_command", metavar="SUBCOMMAND")

    i = s.add_parser("interhand", parents=[common()], help="the supplementary's Table 2 protocol on InterHand2.6M",
                     description="Per evaluation sequence: personalise on the first of its 20 test images, render "
                                 "and score all 20 in the fitted environment. Needs MANO (--mano) for the "
                                 "registrations' shapes.")
    i.add_argument("--root", required=True, help="InterHand2.6M folder (images/, annotations/)")
    i.add_argument("--sequences", default=None, metavar="A,B",
                   help="evaluation sequence names (default: the paper's 12)")
    _shared(i)
    i.set_defaults(func=run_eval)

    y = s.add_parser("synthetic", parents=[common()], help="held-out synthetic subjects (palm data synth)",
                     description="Per subject: personalise on its first image, score novel poses/views in the "
                                 "same light (fitted environment) and in novel environments (the dataset's lobes).")
    y.add_argument("--data", required=True, help="synthetic dataset folder (palm data synth)")
    y.add_argument("--subjects", default=None, metavar="A,B", help="subject ids (default: all)")
    _shared(y)
    y.set_defaults(func=run_eval)

    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


@contextlib.contextmanager
def mano_default(path: str | None) -> Iterator[None]:
    """Make ``path`` (``--mano``) the default MANO file (``$PALM_MANO_PATH``) inside the block.

    The InterHand2.6M reader converts MANO registrations with the mean pose of the default MANO
    file; without this, ``--mano`` would load the hand but the reader would still ask for it.
    """
    from palm.hand.mano import MANO_ENV

    if not path:
        yield
        return
    before = os.environ.get(MANO_ENV)
    os.environ[MANO_ENV] = os.fspath(path)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(MANO_ENV, None)
        else:
            os.environ[MANO_ENV] = before


def run_eval(args: argparse.Namespace) -> int:
    import dataclasses
    from pathlib import Path

    from palm.assets import DEFAULT_PRIOR
    from palm.cli.common import print_json, resolve_device
    from palm.config import PERSONALIZE_PRESETS, scaled_schedule
    from palm.errors import PalmError
    from palm.eval import EVAL_FORMAT, eval_interhand, eval_synthetic, format_markdown, table_json
    from palm.io import atomic_write, check_output_dir, clean_stale_temporaries, discard_dir, write_json
    from palm.jobs import ConsoleProgress, Log
    from palm.prior import load_prior

    if args.out is not None:
        data_in = args.root if args.eval_command == "interhand" else args.data
        clean_stale_temporaries(args.out)
        check_output_dir(args.out, "eval.json", (data_in, args.prior or DEFAULT_PRIOR), args.force,
                         what="an evaluation folder", marker_format=EVAL_FORMAT)
    if args.steps is not None and args.steps < 1:
        raise PalmError("--steps", f"must be at least 1, got {args.steps}")
    if args.max_images is not None and args.max_images < 1:
        raise PalmError("--max-images", f"must be at least 1, got {args.max_images}")
    if args.work_res is not None and not 32 <= args.work_res <= 2048:
        raise PalmError("--work-res", f"must be between 32 and 2048, got {args.work_res}")
    device = resolve_device(args.device)
    hand = None
    if args.mano:
        from palm.hand import load_hand

        hand = load_hand("mano", args.mano)
    prior = load_prior(args.prior, device=device, hand=hand)
    cfg = PERSONALIZE_PRESETS[args.preset]
    if args.steps is not None:
        cfg = scaled_schedule(cfg, args.steps)
    cfg = with_detail_res(dataclasses.replace(cfg, preview_every=0, work_res=args.work_res or cfg.work_res),
                          args.detail_res)
    bar = ConsoleProgress("personalize", quiet=args.quiet or args.json)

    def emit(event):
        if not isinstance(event, Log) or not (args.quiet or args.json):
            bar(event)

    if args.out is not None and args.force:
        discard_dir(args.out)
    common_kw = {"preset": args.preset, "max_images": args.max_images, "out_dir": args.out, "emit": emit}
    if args.eval_command == "interhand":
        seqs = [s.strip() for s in args.sequences.split(",") if s.strip()] if args.sequences else None
        with mano_default(args.mano):  # the registrations' mean pose comes from this file
            table = eval_interhand(args.root, prior, cfg, sequences=seqs, **common_kw)
    else:
        subjects = [s.strip() for s in args.subjects.split(",") if s.strip()] if args.subjects else None
        table = eval_synthetic(args.data, prior, cfg, subjects=subjects, **common_kw)
    md = format_markdown(table)
    data = table_json(table)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        with atomic_write(out / "eval.md") as tmp:
            tmp.write_text(md)
        write_json(out / "eval.json", {"format": EVAL_FORMAT, **data})
    if args.json:
        print_json(data)
    else:
        print(md, end="")
    return 0
