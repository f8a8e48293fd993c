"""``palm data``: make a synthetic dataset, validate a PALM-layout folder.

    palm data synth --out DIR --subjects N --poses P --views V --res R [--seed S]
    palm data check DIR [--json] [--strict]

``check`` prints a summary (``--json``: one JSON object with ``subjects``, ``frames``, ``views``,
``images``, ``missing``, ``errors``) and exits 0 once the check has run (the report says what is
missing). ``--strict`` also decodes every per-view file and compares its size with its camera's
(:func:`palm.data.check.check_dataset` with ``decode=True``, the check the trainer runs before
stage 0) and exits 1 when files are missing or malformed. It exits 2 (``error: ...``) when the
folder is not a dataset at all, or when a ``cameras.npy`` / ``poses.npy`` is a pickle the loader
refuses (code to run, a size bomb: :mod:`palm.safepickle`).
"""

from __future__ import annotations

import argparse

from palm.cli.common import bounded_int, common, print_json


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "data",
        help="synthetic datasets and dataset checks",
        description="Make a synthetic PALM-layout dataset or validate a dataset folder.",
    )
    sub = p.add_subparsers(dest="data_command", metavar="SUBCOMMAND")

    s = sub.add_parser(
        "synth",
        parents=[common()],
        help="render a synthetic multi-subject dataset (PALM layout)",
        description="Render subjects (shape, skin albedo, roughness), poses, 7-camera rig "
        "views and environment lighting into a PALM-layout folder.",
    )
    s.add_argument("--out", required=True, metavar="DIR", help="output dataset folder (replaced atomically)")
    s.add_argument("--subjects", type=int, default=20, metavar="N", help="number of subjects (default 20)")
    s.add_argument("--poses", type=int, default=3, metavar="P", help="frames (poses) per subject (default 3)")
    s.add_argument("--views", type=int, default=7, metavar="V", help="cameras per subject, 1..7 (default 7)")
    s.add_argument("--res", type=int, default=128, metavar="R", help="image side in pixels (default 128)")
    s.add_argument("--seed", type=bounded_int(0, 2**32 - 1), default=0, metavar="S",
                   help="random seed, 0 to 2^32-1 (default 0)")
    s.add_argument(
        "--envs",
        default=None,
        metavar="A,B,..",
        help="environment presets or SG/HDR files to draw from (default: all presets)",
    )
    s.add_argument(
        "--supersample",
        type=int,
        default=2,
        metavar="K",
        help="RGB anti-aliasing: shade K x K samples per pixel (default 2)",
    )
    s.add_argument("--json", action="store_true", help="print a JSON summary")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=run_synth)

    c = sub.add_parser(
        "check",
        parents=[common()],
        help="validate a PALM-layout dataset folder",
        description="List subjects, frames, views, images and missing files of a dataset.",
    )
    c.add_argument("dir", metavar="DIR", help="dataset folder")
    c.add_argument("--json", action="store_true", help="print one JSON object")
    c.add_argument(
        "--strict",
        action="store_true",
        help="decode every image and check its size against its camera; exit with status 1 when files are "
        "missing or malformed",
    )
    c.set_defaults(func=run_check)

    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def run_synth(args: argparse.Namespace) -> int:
    from palm.cli.common import resolve_device
    from palm.data.synth.config import SynthConfig
    from palm.data.synth.generate import generate
    from palm.errors import PalmError
    from palm.jobs import ConsoleProgress

    for name, value, low, high in (
        ("--subjects", args.subjects, 1, 10000),
        ("--poses", args.poses, 1, 100000),
        ("--views", args.views, 1, 7),
        ("--res", args.res, 16, 4096),
        ("--supersample", args.supersample, 1, 4),
    ):
        if not low <= value <= high:
            raise PalmError(name, f"must be in {low}..{high}, got {value}")
    envs = tuple(e.strip() for e in args.envs.split(",") if e.strip()) if args.envs else None
    cfg = SynthConfig(
        n_subjects=args.subjects,
        n_poses=args.poses,
        n_views=args.views,
        resolution=args.res,
        seed=args.seed,
        envs=envs,
        supersample=args.supersample,
        hand=args.mano or "open",
    )
    progress = ConsoleProgress("synth", quiet=args.quiet or args.json)
    summary = generate(args.out, cfg, emit=progress, device=resolve_device(args.device))
    if args.json:
        print_json(summary)
    else:
        print(
            f"wrote {summary['images']} images of {summary['subjects']} subjects to {summary['root']} "
            f"in {summary['seconds']:.1f} s"
        )
    return 0


def run_check(args: argparse.Namespace) -> int:
    from palm.data.check import check_dataset

    report = check_dataset(args.dir, decode=args.strict)
    ok = not report["missing"] and not report["errors"]
    if args.json:
        print_json(report)
    else:
        print(
            f"{report['root']}: {report['subjects']} subjects, {report['frames']} frames, "
            f"{report['views']} views, {report['images']} images"
        )
        print(f"modalities: {', '.join(report['modalities'])}")
        if report["missing"]:
            print(f"missing {len(report['missing'])} file(s):")
            for m in report["missing"][:50]:
                print(f"  {m}")
            if len(report["missing"]) > 50:
                print(f"  ... and {len(report['missing']) - 50} more")
        for e in report["errors"]:
            print(f"malformed: {e}")
        if args.strict:
            print(f"decoded {report['decoded']} file(s)")
        print("complete" if ok else "incomplete")
    return 1 if (args.strict and not ok) else 0
