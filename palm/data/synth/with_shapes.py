"""Run a ``palm`` command with a synthetic dataset's subject shapes in the hand rig.

    python -m palm.data.synth.with_shapes train --data DIR --out RUN ... [--resume]

Synthetic subjects (generator 2.0) have proportions the rig's betas cannot express; their true
flat hands are in ``DIR/<sid>/shape.npz`` (see :mod:`palm.data.synth.shape`). ``palm train`` reads
only betas, so its stage-0 SDF targets (``hand.rest(betas)``) and its skinning
(``hand(pose, betas)``, the skinning field of ``hand.rest(betas)``) would use the rig's closest hand
instead of the rendered one. This wrapper makes ``palm.hand.load_hand("open")`` return a
:class:`~palm.data.synth.shape.ShapedHand` holding every subject of ``--data``, so the same calls
return each training subject's own hand (recognised by its registered betas) and any other betas
the rig's; it then runs the ``palm`` command line unchanged. Nothing else differs from
``palm <command> ...``: the run folder, checkpoints and ``--resume`` are the trainer's own.
"""

from __future__ import annotations

import sys


def install(data: str) -> None:
    """Make ``palm.hand.load_hand("open")`` return the rig with the subjects of ``data``."""
    import palm.hand
    from palm.data.synth.shape import ShapedHand

    plain = palm.hand.load_hand
    if getattr(plain, "_synth_shapes", None) is not None:
        plain = plain._synth_shapes  # already installed: replace, do not stack

    def load_hand(source: str = "open", path=None):
        rig = plain(source, path)
        if source != "open" or path is not None:
            return rig
        hand = ShapedHand.from_dataset(rig, data)
        print(
            f"with_shapes: the open rig carries the flat hands of {hand.n_subjects} subjects of {data}",
            file=sys.stderr,
            flush=True,
        )
        return hand

    load_hand._synth_shapes = plain  # type: ignore[attr-defined]
    palm.hand.load_hand = load_hand


def main(argv: list[str] | None = None) -> int:
    from palm.cli.main import main as palm_main

    argv = list(sys.argv[1:] if argv is None else argv)
    data = None
    for i, a in enumerate(argv):
        if a == "--data" and i + 1 < len(argv):
            data = argv[i + 1]
        elif a.startswith("--data="):
            data = a.split("=", 1)[1]
    if data is None:
        print("error: --data DIR is required (the synthetic dataset whose shapes to use)", file=sys.stderr)
        return 2
    install(data)
    return palm_main(argv)


if __name__ == "__main__":
    sys.exit(main())
