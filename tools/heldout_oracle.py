"""Where a held-out avatar's error sits: its colour or its outline.

    python tools/heldout_oracle.py --eval EVAL_DIR --data SYNTH_DIR [--subjects 0020,0021] [--prior DIR]

``EVAL_DIR`` is the ``--out`` folder of ``palm eval synthetic`` (``avatars/<sid>/``). Each avatar is
rendered in its subject's other images as the evaluation scores it (``palm.eval.registered``, the
avatar's fitted light in the same environment, the dataset's lights in the others), once with its
own albedo and once with the subject's true albedo (``<sid>/albedo_map.png`` at the mesh's rig UVs).
Masked PSNR is given over the mask (the evaluation's figure) and over the pixels both the render and
the mask cover. Prints one JSON object: per subject and split (``seen``, ``novel_env``) the means of
``psnr``, ``psnr_covered``, ``psnr_true_albedo`` and ``psnr_true_albedo_covered``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def scores(image: np.ndarray, mask: np.ndarray, rgba: np.ndarray) -> tuple[float, float]:
    """Masked PSNR of the render ``rgba (H, W, 4)`` on white against ``image`` over the mask, and over
    the mask's pixels the render covers."""
    from palm.detail import on_white

    err = (on_white(rgba) - image) ** 2
    covered = mask & (rgba[..., 3] > 0.5)
    return (float(-10 * np.log10(max(err[mask].mean(), 1e-10))),
            float(-10 * np.log10(max(err[covered].mean(), 1e-10))))


def main() -> int:
    import torch

    from palm.albedo_model import read_albedo_map, surface_uv
    from palm.avatar import load_avatar
    from palm.data.palm_dataset import PalmDataset
    from palm.detail import render_mesh
    from palm.eval import registered, scoring_view
    from palm.hand.lbs import bone_transforms
    from palm.prior import load_prior
    from palm.render.raster import sample_texture
    from palm.train.trainer import subject_hands

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--eval", required=True, help="the --out folder of palm eval synthetic")
    ap.add_argument("--data", required=True, help="the synthetic dataset it evaluated")
    ap.add_argument("--subjects", default=None, help="comma-separated subject ids (default: every avatar)")
    ap.add_argument("--prior", default=None, help="the prior it used (default: the shipped one)")
    ap.add_argument("--res", type=int, default=256, help="scoring crop (default 256, the detail stage's)")
    args = ap.parse_args()
    prior = load_prior(args.prior)
    hand = prior.model.hand
    data_hand = subject_hands(hand, args.data)
    root = Path(args.eval) / "avatars"
    subjects = args.subjects.split(",") if args.subjects else sorted(p.name for p in root.iterdir() if p.is_dir())
    out = {}
    for sid in subjects:
        av = load_avatar(root / sid)
        mesh = av.extra["mesh"]
        with torch.no_grad():
            rest, _ = hand.rest(torch.as_tensor(np.asarray(av.betas, np.float32))[None].to(hand.v_template))
        uv = surface_uv(mesh.vertices, rest[0].cpu().numpy(), hand.faces.cpu().numpy(), hand.uv.cpu().numpy())
        true_map = torch.as_tensor(read_albedo_map(Path(args.data) / sid / "albedo_map.png"))
        true = dataclasses.replace(mesh, albedo=sample_texture(true_map, torch.as_tensor(uv)).numpy().astype(np.float32))
        ds = PalmDataset(args.data, subjects=[sid])
        items = [it for it in ds.index() if it[0] == sid]
        first = ds.load(*items[0])
        rows: dict[str, list[list[float]]] = {"seen": [], "novel_env": []}
        for it in items[1:]:
            s = ds.load(*it)
            novel = s.env_name != first.env_name
            if novel and s.env_lobes is None:
                continue  # no stored lighting to relight with (as the evaluation)
            view = scoring_view(registered(s, av, first, hand, data_hand), av.betas, args.res)
            lobes = torch.as_tensor(s.env_lobes, dtype=torch.float32) if novel else av.light
            bones = bone_transforms(hand, view.pose, view.betas, joints=mesh.joints)
            row = []
            for m in (mesh, true):
                row += scores(view.image, view.mask, render_mesh(m, bones, view.transl, view.camera, lobes))
            rows["novel_env" if novel else "seen"].append(row)
        keys = ("psnr", "psnr_covered", "psnr_true_albedo", "psnr_true_albedo_covered")
        out[sid] = {split: dict(zip(keys, np.round(np.mean(r, 0), 2).tolist(), strict=True))
                    for split, r in rows.items() if r}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
