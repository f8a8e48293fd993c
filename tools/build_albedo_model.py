"""Write a prior's albedo model (palm/albedo_model.py) from a synthetic dataset's albedo maps.

    python tools/build_albedo_model.py --data SYNTH_DIR --subjects 0000-0019 --prior PRIOR_DIR \
        [--res 128] [--components 8]

`palm train` does this itself when it exports a prior from data with albedo maps; this tool adds
the model to a prior trained before that (e.g. the shipped one). It writes
``PRIOR_DIR/albedo.safetensors`` (atomically; the prior's weights and content hash are unchanged)
and prints the explained-variance ratios as one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def subject_range(text: str) -> list[str]:
    if "-" in text:
        a, b = text.split("-")
        return [f"{i:04d}" for i in range(int(a), int(b) + 1)]
    return [s.strip() for s in text.split(",") if s.strip()]


def main() -> int:
    from palm.albedo_model import FILE, build_from_dataset, save_albedo_model
    from palm.errors import PalmError
    from palm.prior import load_prior

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="synthetic dataset (palm data synth) with <sid>/albedo_map.png")
    ap.add_argument("--subjects", required=True, help="the prior's training subjects, e.g. 0000-0019")
    ap.add_argument("--prior", required=True, help="prior folder to add albedo.safetensors to")
    ap.add_argument("--res", type=int, default=128, help="side of the model's UV maps (default 128)")
    ap.add_argument("--components", type=int, default=8, help="principal directions kept (default 8)")
    args = ap.parse_args()
    try:
        prior = load_prior(args.prior)  # a real prior folder, so nothing is written elsewhere
        model = build_from_dataset(args.data, subject_range(args.subjects), args.res, args.components,
                                   hand=prior.model.hand.name)
        if model is None:
            raise PalmError(args.data, "fewer than two of these subjects have an albedo_map.png")
        save_albedo_model(Path(prior.path) / FILE, model)
    except PalmError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"albedo_model": str(Path(prior.path) / FILE), "subjects": model.subjects,
                      "explained_variance_ratio": [round(float(r), 5) for r in model.explained_variance_ratio]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
