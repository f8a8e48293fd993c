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
    p.add_argument("--left", action="store_true", default=None, help="the photo shows a left hand (default: detected)")
    p.add_argument("--right", dest="left", action="store_false", help="the photo shows a right hand")
    p.add_argument("--mirrored", action="store_true", help="the photo is a mirrored selfie")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a summary")
    p.set_defaults(func=run_photo)


def run_photo(args: argparse.Namespace) -> int:
    from palm.data.photo.pipeline import preprocess_photo
    from palm.io import require_file

    require_file(args.photo, "photo")
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
