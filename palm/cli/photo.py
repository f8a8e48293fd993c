"""``palm photo``: run the single-photo preprocessing alone and write the check images."""

from __future__ import annotations

import argparse

from palm.cli.common import common, print_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "photo",
        parents=[common()],
        help="find the hand in a photo, fit the hand model, segment it",
        description=(
            "Detect the hand and its 21 landmarks (MediaPipe models), fit pose, shape and a camera, and "
            "segment the hand (U^2-Net-p refined with the fitted silhouette). Writes DIR/overlay.png "
            "(landmarks, fitted outline, mask tint), DIR/mask.png and DIR/hand_params.json."
        ),
    )
    p.add_argument("photo", help="the photo (JPEG, PNG, ...)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--mask", metavar="M", default=None, help="your own hand mask (white = hand)")
    p.add_argument(
        "--hand-params", metavar="J", default=None, help="your own hand parameters (palm-hand-params-v1 JSON)"
    )
    side = p.add_mutually_exclusive_group()  # both at once is a usage error (exit 2)
    side.add_argument("--left", action="store_true", default=None, help="the photo shows a left hand (default: detected)")
    side.add_argument("--right", dest="left", action="store_false", help="the photo shows a right hand")
    p.add_argument("--mirrored", action="store_true", help="the photo is a mirrored selfie")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a summary")
    p.set_defaults(func=run_photo)


#: The files ``palm photo`` writes into ``--out``.
PHOTO_OUTPUTS = ("overlay.png", "mask.png", "hand_params.json")


def check_photo_out(out: str, inputs: tuple[str | None, ...]) -> None:
    """Refuse ``--out`` before any work: it must be a folder (new or existing, the three files are
    added to it) and none of the files written there may be one of the inputs.

    Raises:
        PalmError: naming ``out`` as the user wrote it.
    """
    from pathlib import Path

    from palm.errors import PalmError

    folder = Path(out)
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        kind = "a file" if folder.is_file() else "not a folder"
        raise PalmError(out, f"is {kind}; the output must be a folder, choose another path")
    written = {(folder / name).resolve() for name in PHOTO_OUTPUTS} | {folder.resolve()}
    for item in inputs:
        if item is not None and Path(item).resolve() in written:
            raise PalmError(out, f"writing here would replace the input {item}; choose another output folder")


def run_photo(args: argparse.Namespace) -> int:
    from palm.data.photo.pipeline import preprocess_photo
    from palm.io import require_file

    require_file(args.photo, "photo")
    check_photo_out(args.out, (args.photo, args.mask, args.hand_params))
    hand = None
    if args.mano:
        from palm.hand import load_hand

        hand = load_hand("mano", args.mano)
    result = preprocess_photo(
        args.photo, out_dir=args.out, mask_path=args.mask, hand_params_path=args.hand_params,
        left=args.left, hand=hand, mirrored=args.mirrored,
    )  # fmt: skip
    summary = result.summary()
    if args.json:
        print_json(summary)
        return 0
    t = summary["timings_s"]
    print(f"hand: {summary['handedness']} ({summary['n_hands']} found), "
          f"reprojection {summary['reprojection_px']} px, mask {100 * summary['mask_fraction']:.1f}% of the photo")  # fmt: skip
    if t:
        print("timings: " + ", ".join(f"{k[:-2]} {v:.2f} s" for k, v in t.items()))
    print(f"wrote {args.out}/overlay.png, mask.png, hand_params.json")
    return 0
