"""``palm env``: fit HDR environment maps to spherical Gaussians, list presets, preview SG sets.

palm env fit FILE --lobes N --out OUT.json [--json] [--preview OUT.png]
palm env list [--json]
palm env preview NAME_OR_FILE --out X.png|X.exr [--height H]
"""

from __future__ import annotations

import argparse

from palm.cli.common import bounded_int, common, print_json
from palm.config import LightConfig
from palm.render.bounds import MAX_LOBES

MAX_PREVIEW_HEIGHT = 8192
"""Tallest preview (8192 x 16384 float32 RGB is 1.6 GB in memory)."""


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``env`` command group to the ``palm`` parser."""
    env = sub.add_parser(
        "env",
        help="environment maps: fit HDR/EXR to spherical Gaussians, list presets, preview",
        description="Environment light as a mixture of spherical Gaussians (SG).",
    )
    env_sub = env.add_subparsers(dest="env_command", metavar="ACTION")
    env.set_defaults(func=lambda args: _help(env))

    fit = env_sub.add_parser(
        "fit", parents=[common()], help="fit an equirect .exr/.hdr map with SG lobes and save them as JSON"
    )
    fit.add_argument("file", metavar="FILE", help="equirectangular .exr or .hdr map (+y up)")
    fit.add_argument("--lobes", type=bounded_int(1, MAX_LOBES), default=LightConfig.n_lobes, help=f"number of SG lobes (default {LightConfig.n_lobes})")
    fit.add_argument("--out", required=True, metavar="OUT.json", help="SG file to write")
    fit.add_argument("--steps", type=bounded_int(1, 100_000), default=600, help="optimiser steps (default 600)")
    fit.add_argument("--fit-height", type=bounded_int(4, 1024), default=64, help="rows of the map the fit sees (default 64)")
    fit.add_argument("--preview", metavar="OUT.png", default=None, help="also write the fitted SG set as an image")
    fit.add_argument("--json", action="store_true", help="print one JSON object with the fit report")
    fit.set_defaults(func=run_fit)

    lst = env_sub.add_parser("list", parents=[common()], help="list the shipped environment presets")
    lst.add_argument("--json", action="store_true", help="print one JSON object")
    lst.set_defaults(func=run_list)

    prev = env_sub.add_parser(
        "preview", parents=[common()], help="render a preset, SG .json or HDR map (fitted) to an equirect image"
    )
    prev.add_argument("source", metavar="NAME_OR_FILE", help="preset name, SG .json, .exr or .hdr")
    prev.add_argument(
        "--out", required=True, metavar="X.png|X.exr", help="image to write (PNG tone-mapped, EXR linear)"
    )
    prev.add_argument("--height", type=bounded_int(2, MAX_PREVIEW_HEIGHT), default=256,
                      help=f"image height, at most {MAX_PREVIEW_HEIGHT}; width = 2 x height (default 256)")
    prev.add_argument("--lobes", type=bounded_int(1, MAX_LOBES), default=LightConfig.n_lobes, help=f"lobes when fitting an HDR map (default {LightConfig.n_lobes})")
    prev.set_defaults(func=run_preview)


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def run_fit(args: argparse.Namespace) -> int:
    import sys
    import warnings
    from pathlib import Path

    from palm.cli.common import check_distinct
    from palm.imageio import write_image
    from palm.io import check_output_path
    from palm.render.environment import fit_environment
    from palm.render.sg import save_sg, sg_to_equirect

    out = check_output_path(args.out, (".json",))
    check_distinct(out, args.file)
    if args.preview:
        check_distinct(check_output_path(args.preview, (".png", ".exr")), args.file, out)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        lobes, report = fit_environment(args.file, args.lobes, steps=args.steps, fit_height=args.fit_height)
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    meta = {"source": Path(args.file).name, **report}
    save_sg(out, lobes, meta)
    if args.preview:
        write_image(args.preview, sg_to_equirect(lobes, 256))
    result = {"out": str(out), "source": str(args.file), **report}
    if args.json:
        print_json(result)
    else:
        print(
            f"{out}: {report['lobes']} lobes, radiance rel. error {report['rel_error']:.3f}, "
            f"irradiance rel. error {report['irradiance_rel_error']:.4f} ({report['seconds']:.1f} s)"
        )
    return 0


def run_list(args: argparse.Namespace) -> int:
    from palm.assets import DEFAULT_ENV, ENVMAPS
    from palm.render.environment import list_presets
    from palm.render.sg import load_sg

    rows = []
    for name in list_presets():
        lobes, meta = load_sg(ENVMAPS / f"{name}.json")
        rows.append(
            {
                "name": name,
                "lobes": int(lobes.shape[0]),
                "source": meta.get("source"),
                "irradiance_rel_error": meta.get("irradiance_rel_error"),
                "default": name == DEFAULT_ENV,
            }
        )
    if args.json:
        print_json({"presets": rows, "default": DEFAULT_ENV})
    else:
        for row in rows:
            mark = " (default)" if row["default"] else ""
            print(f"{row['name']:<12} {row['lobes']:>3} lobes  {row['source'] or ''}{mark}")
    return 0


def run_preview(args: argparse.Namespace) -> int:
    from palm.cli.common import check_distinct
    from palm.imageio import write_image
    from palm.io import check_output_path
    from palm.render.environment import load_environment
    from palm.render.sg import sg_to_equirect

    out = check_distinct(check_output_path(args.out, (".png", ".exr")), args.source)
    lobes, _ = load_environment(args.source, n_lobes=args.lobes)
    write_image(out, sg_to_equirect(lobes, args.height))
    print(out)
    return 0
