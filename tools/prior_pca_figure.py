"""Picture of a prior's PCA spaces: the mean subject, then each chosen direction at -2 and +2 sigma.

    python tools/prior_pca_figure.py [--prior DIR] [--out docs/prior_pca.png] [--res 192]
        [--shape 1,2] [--appearance 1,2] [--pose relaxed] [--env studio]

Each subject is baked from the prior (``palm.bake.bake_from_prior``, the studio's mesh) and
rasterised as ``palm render --avatar`` does, from the same camera (framed on the mean subject),
under one preset environment. Columns: mean, then for every listed shape and appearance
component its -2 and +2 sigma subjects (sigma: the component's standard deviation over the
training subjects). Prints one JSON object with the explained-variance ratios.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    import numpy as np
    import torch

    from palm.bake import RIG_FILL, bake_from_prior, posed_avatar
    from palm.export.preview import raster_render
    from palm.hand import load_pose
    from palm.imageio import write_image
    from palm.prior import load_prior
    from palm.render.environment import load_environment
    from palm.render.views import framing_camera

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prior", default=None)
    ap.add_argument("--out", default="docs/prior_pca.png")
    ap.add_argument("--res", type=int, default=192)
    ap.add_argument("--bake-res", type=int, default=96)
    ap.add_argument("--shape", default="1,2", help="shape components to show (1-based)")
    ap.add_argument("--appearance", default="1,2", help="appearance components to show (1-based)")
    ap.add_argument("--pose", default="relaxed")
    ap.add_argument("--env", default="studio")
    args = ap.parse_args()

    prior = load_prior(args.prior)
    hand = prior.model.hand
    pose = load_pose(args.pose)
    lobes, _ = load_environment(args.env)
    spaces = {kind: prior.pca[kind] for kind in ("shape", "appearance")}

    def coeffs(kind: str, k: int | None, sigmas: float) -> torch.Tensor:
        space = spaces[kind]
        c = torch.zeros(space.n_components)
        if k is not None:
            c[k] = sigmas * float(space.explained_variance[k].clamp(min=0).sqrt())
        return c

    columns = [(None, None, 0.0)]
    for kind in ("shape", "appearance"):
        for k in [int(s) - 1 for s in getattr(args, kind).split(",") if s.strip()]:
            columns += [(kind, k, -2.0), (kind, k, 2.0)]
    camera, tiles = None, []
    for kind, k, value in columns:
        avatar = bake_from_prior(prior, coeffs("shape", k if kind == "shape" else None, value),
                                 coeffs("appearance", k if kind == "appearance" else None, value), args.bake_res,
                                 rig_fill=RIG_FILL)
        if camera is None:
            camera = framing_camera(posed_avatar(avatar, pose, hand).vertices, args.res)
        rgba = raster_render(avatar, pose, hand, camera, lobes)
        tiles.append(rgba[..., :3] * rgba[..., 3:] + (1.0 - rgba[..., 3:]) * 0.18)  # linear grey backdrop
    write_image(args.out, np.concatenate(tiles, axis=1))
    ratios = {kind: [round(float(r), 6) for r in space.explained_variance_ratio] for kind, space in spaces.items()}
    print(json.dumps({"out": args.out, "columns": [f"{kind or 'mean'} {'' if k is None else k + 1} {value:+g}".strip()
                                                    for kind, k, value in columns], "explained_variance_ratio": ratios}))


if __name__ == "__main__":
    main()
