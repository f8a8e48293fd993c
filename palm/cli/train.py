"""``palm train`` (prior training, multi-GPU through torchrun) and ``palm pca`` (code PCA spaces)."""

from __future__ import annotations

from palm.cli.common import bounded_int, common

#: Largest random seed (numpy and torch both take 32-bit seeds everywhere).
MAX_SEED = 2**32 - 1
#: Largest step count a flag accepts.
MAX_STEPS = 10**9


def register(sub) -> None:
    p = sub.add_parser(
        "train",
        parents=[common()],
        help="train the PALM-Net prior (stage 0 geometry pretraining, stage 1 image training)",
        description=(
            "Train the multi-subject prior on a PALM-layout dataset (palm data synth makes one). "
            "Checkpoints go to RUN/checkpoints/step_NNNNNNN.safetensors (+ .json sidecar); Ctrl-C stops "
            "cleanly with a checkpoint; --resume continues. At the end of the schedule the PCA spaces are "
            "fitted and RUN/prior is written (usable as --prior). RUN must be a new path, or an existing run "
            "folder (it holds run.json) with --resume (continue) or --force (start over). Multi-GPU / "
            "multi-process: torchrun --nproc_per_node N -m palm train ..."
        ),
    )
    p.add_argument("--data", required=True, help="dataset folder in the PALM layout")
    p.add_argument("--preset", default=None, choices=("cpu", "paper", "tiny"),
                   help="cpu (a 2-core machine, about 1.5 h; the default of a new run), paper (the published "
                        "configuration) or tiny (smoke runs)")
    p.add_argument("--out", required=True, help="run folder (created)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    p.add_argument("--force", action="store_true", help="replace --out when it is an existing run folder (start over)")
    p.add_argument("--allow-changes", action="store_true",
                   help="with --resume: continue with another --seed, --preset, --pretrain-steps or --set than the run's")
    p.add_argument("--max-steps", type=int, default=None,
                   help="stop after this many steps of the run (both stages counted from its start)")
    p.add_argument("--pretrain-steps", type=bounded_int(0, MAX_STEPS), default=None,
                   help="override the preset's geometry pretraining steps")
    p.add_argument("--seed", type=bounded_int(0, MAX_SEED), default=None,
                   help="random seed, 0 to 2^32-1 (default: 0, or the run's own on --resume)")
    p.add_argument("--subjects", default=None, help="comma-separated subject ids to train on (default: all)")
    p.add_argument("--views", default=None, help="comma-separated camera ids to use (default: all)")
    p.add_argument("--frames", default=None, help="comma-separated frame indices (0-based) to use (default: all)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="change a preset field, e.g. --set images_per_step=8 --set model.sampler.n_steps=96")
    p.add_argument("--no-tensorboard", action="store_true", help="do not write TensorBoard logs")
    p.set_defaults(func=run_train)

    q = sub.add_parser("pca", parents=[common()], help="PCA spaces of a run's learned shape and appearance codes")
    q.add_argument("run", help="run folder of palm train")
    q.add_argument("--components", type=int, default=5, help="principal components per space (default 5)")
    q.add_argument("--json", action="store_true", help="print one JSON object")
    q.set_defaults(func=run_pca)


def run_train(args) -> int:
    from pathlib import Path

    from palm.cli.common import resolve_device
    from palm.errors import PalmError
    from palm.io import check_output_dir
    from palm.train.checkpoint import latest_checkpoint
    from palm.train.trainer import RUN_FORMAT, RUN_MARKER, finish_distributed, init_distributed

    if args.max_steps is not None and args.max_steps < 1:
        raise PalmError("--max-steps", f"must be at least 1, got {args.max_steps}")
    if args.resume and args.force:
        raise PalmError("--force", "--resume continues the run in --out, --force replaces it: pass one of them")
    run = Path(args.out)
    check_output_dir(run, RUN_MARKER, (args.data,), args.force, what="a training run folder", marker_format=RUN_FORMAT,
                     resume=args.resume, hint="pass --resume to continue it or --force to start it over",
                     disposable=lambda folder: latest_checkpoint(folder) is None)
    device = str(resolve_device(args.device))
    init_distributed(device)  # every rank has checked --out before any rank writes
    ok = False
    try:
        code = _train(args, run, device)
        ok = True
        return code
    finally:
        finish_distributed(ok)


def _train(args, run, device: str) -> int:
    """The run itself, inside the process group (``run_train``)."""
    from palm.io import clean_stale_temporaries, discard_dir
    from palm.jobs import ConsoleProgress
    from palm.train.trainer import Trainer, TrainOptions, export_prior

    opts = TrainOptions(data=args.data, out=str(run), preset=args.preset, max_steps=args.max_steps, resume=args.resume,
                        pretrain_steps=args.pretrain_steps, seed=args.seed, device=device,
                        tensorboard=not args.no_tensorboard, overrides=tuple(args.set),
                        allow_changes=args.allow_changes,
                        subjects=_csv(args.subjects, "--subjects"), views=_csv(args.views, "--views"),
                        frames=_csv(args.frames, "--frames", int))
    bar = ConsoleProgress("train")
    trainer = Trainer(opts, emit=bar)
    if trainer.rank == 0:  # only once the inputs are valid: a bad input leaves nothing behind
        clean_stale_temporaries(run)
        if not args.resume:  # a run folder that passed the checks: replaced (--force) or never checkpointed
            discard_dir(run)
    path = trainer.fit(args.max_steps)
    if trainer.rank == 0:
        print(f"checkpoint {path}")
        if trainer.step >= trainer.total_steps:
            fit_run_pca(run)
            info = export_prior(run, run / "prior")
            print(f"prior {info['prior']} ({info['content_hash']})")
    return 0


def _csv(text, flag, kind=str):
    from palm.errors import PalmError

    if text is None:
        return None
    try:
        values = tuple(kind(v.strip()) for v in text.split(",") if v.strip())
    except ValueError:
        raise PalmError(flag, f"expected a comma-separated list, got '{text}'") from None
    if not values:
        raise PalmError(flag, "empty list")
    return values


def fit_run_pca(run, components: int = 5) -> dict:
    """Fit and save the PCA spaces of a run's latest checkpoint; returns the explained variance ratios."""
    from pathlib import Path

    from palm.errors import PalmError
    from palm.fields.latent import fit_pca, save_pca
    from palm.train.checkpoint import latest_checkpoint, load_checkpoint

    path = latest_checkpoint(run)
    if path is None:
        raise PalmError(run, "no checkpoint in this run (expected checkpoints/step_*.safetensors)")
    tensors, _, _ = load_checkpoint(path)
    spaces = {}
    for name in ("shape", "appearance"):
        codes = tensors[f"codes.{name}.weight"].float()
        k = min(components, codes.shape[0], codes.shape[1])
        if k < 1:
            raise PalmError(path, "no subject codes to decompose")
        spaces[name] = fit_pca(codes, k)
    save_pca(Path(run) / "pca.safetensors", spaces)
    return {
        "checkpoint": str(path),
        "components": {n: s.n_components for n, s in spaces.items()},
        "shape_explained_variance": spaces["shape"].explained_variance_ratio.tolist(),
        "appearance_explained_variance": spaces["appearance"].explained_variance_ratio.tolist(),
        "pca": str(Path(run) / "pca.safetensors"),
    }


def run_pca(args) -> int:
    from pathlib import Path

    from palm.cli.common import print_json
    from palm.errors import PalmError

    if args.components < 1:
        raise PalmError("--components", f"must be at least 1, got {args.components}")
    info = fit_run_pca(args.run, args.components)
    prior = Path(args.run) / "prior"
    if (prior / "prior.json").is_file():
        from palm.train.trainer import export_prior

        export_prior(args.run, prior)
    if args.json:
        print_json(info)
    else:
        for name in ("shape", "appearance"):
            ratios = ", ".join(f"{r:.3f}" for r in info[f"{name}_explained_variance"])
            print(f"{name}: {ratios}")
        print(f"wrote {info['pca']}")
    return 0
