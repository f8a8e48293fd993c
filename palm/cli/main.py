"""The ``palm`` command: train, personalise, render, export, evaluate, data and hand tools.

Each sub-command lives in its own module of this package (``palm/cli/<command>.py``), which
exposes ``register(subparsers)`` and imports heavy libraries inside its ``run_*`` function so that
``palm --help`` stays fast. Errors about inputs are :class:`palm.errors.PalmError` and print as one
line ``error: <path>: <what is wrong>`` with exit status 2 (``--debug`` shows the traceback).
"""

from __future__ import annotations

import argparse
import sys
import traceback
import warnings

from palm import __version__
from palm.cli import data, doctor, env, eval, export, hand, personalize, photo, render, train
from palm.errors import PalmError

#: Command modules, in the order ``palm --help`` lists them.
COMMAND_MODULES = (doctor, hand, render, env, data, photo, train, personalize, export, eval)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="palm",
        description="PALM-Net hand avatars: train the prior, personalise from a photo, render, export, evaluate.",
        epilog="Run 'palm COMMAND --help' for a command's options. The GUI is 'palm-studio'.",
    )
    parser.add_argument("--version", action="version", version=f"palm-studio {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.register(sub)
    return parser


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"warning: {message}\n"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    if not debug:
        warnings.formatwarning = _one_line_warning
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        rc = args.func(args)
        return 0 if rc is None else int(rc)
    except PalmError as exc:
        if debug:
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError) as exc:
        if debug:
            traceback.print_exc()
        print(f"error: {exc.filename}: {exc.strerror.lower() if exc.strerror else exc}", file=sys.stderr)
        return 2


def entry() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    entry()
