"""Quality of a trained prior on its own training subjects: held-out views and held-out poses.

    python tools/eval_prior_holdout.py --prior assets/priors/default --data SYNTH_DIR \
        --subjects 0000-0019 --holdout-view MCU_07 --holdout-frame 2 [--per-split 10] [--res 96]

Each training subject is rendered with its own learned codes, the frame's registered pose and
the lighting the frame was rendered with, in (a) a camera the prior never saw and (b) a pose it
never saw; masked PSNR and SSIM (white background, hand mask; palm.metrics) are averaged per
split. Prints a Markdown table and, as the last line, one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch


def subject_range(text: str) -> list[str]:
    if "-" in text:
        a, b = text.split("-")
        return [f"{i:04d}" for i in range(int(a), int(b) + 1)]
    return [s.strip() for s in text.split(",")]


def main() -> None:
    from palm.avatar import Avatar
    from palm.data.palm_dataset import PalmDataset
    from palm.eval import mean_scores, score_sample
    from palm.prior import load_prior

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prior", default=None)
    ap.add_argument("--data", required=True)
    ap.add_argument("--subjects", required=True, help="training subjects, e.g. 0000-0019")
    ap.add_argument("--holdout-view", default="MCU_07")
    ap.add_argument("--holdout-frame", type=int, default=2)
    ap.add_argument("--train-frames", default="0,1")
    ap.add_argument("--per-split", type=int, default=10, help="images per split")
    ap.add_argument("--res", type=int, default=96, help="scoring crop side")
    args = ap.parse_args()

    from palm.hand import load_hand
    from palm.train.trainer import subject_hands

    # the rig as the trainer had it: subjects with a shape.npz are posed with their own flat hands
    prior = load_prior(args.prior, hand=subject_hands(load_hand("open"), args.data))
    subjects = subject_range(args.subjects)
    ds = PalmDataset(args.data, subjects=subjects)
    train_frames = [int(f) for f in args.train_frames.split(",")]
    splits = {
        "held-out view": [(s, train_frames[i % len(train_frames)], args.holdout_view) for i, s in enumerate(subjects)],
        "held-out pose": [(s, args.holdout_frame, "MCU_0%d" % (1 + i % 6)) for i, s in enumerate(subjects)],
    }
    rows, t0 = {}, time.time()
    for name, items in splits.items():
        scores = []
        for sid, frame, view in items[: args.per_split]:
            sample = ds.load(sid, frame, view)
            k = ds.subjects.index(sid)
            codes = prior.model.codes
            av = Avatar(
                shape_coeffs=torch.zeros(5), appearance_coeffs=torch.zeros(5),
                shape_code=codes.shape.weight[k].detach(), appearance_code=codes.appearance.weight[k].detach(),
                light=torch.as_tensor(sample.env_lobes, dtype=torch.float32), pose=sample.hand.pose,
                betas=sample.hand.betas[: prior.model.hand.n_betas], transl=sample.hand.transl,
                camera=sample.camera.to_dict(), prior_hash=prior.content_hash,
            )
            s = score_sample(prior, av, sample, light=sample.env_lobes, work_res=args.res, lpips=False)
            print(f"{name}: {sid} frame {frame} {view}: PSNR {s['psnr_masked']:.2f} SSIM {s['ssim_masked']:.3f}",
                  file=sys.stderr, flush=True)
            scores.append(s)
        rows[name] = {**mean_scores(scores), "images": len(scores)}
    print("| split | images | masked PSNR (dB) | masked SSIM |\n|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['images']} | {r['psnr_masked']:.2f} | {r['ssim_masked']:.3f} |")
    print(json.dumps({"prior": str(prior.path), "content_hash": prior.content_hash, "splits": rows,
                      "seconds": round(time.time() - t0, 1), "res": args.res}))


if __name__ == "__main__":
    main()
