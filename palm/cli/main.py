"""The ``palm`` command: train, personalise, render, export, evaluate, data and hand tools.

Each sub-command lives in its own module of this package (``palm/cli/<command>.py``), which
exposes ``register(subparsers)`` and imports heavy libraries inside its ``run_*`` function so that
``palm --help`` stays fast. Errors about inputs are :class:`palm.errors.PalmError` and print as one
line ``error: <path>: <what is wrong>`` with exit status 2 (``--debug`` shows the traceback).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import traceback
import warnings
from pathlib import Path

from palm import __version__
from palm.cli import data, doctor, env, eval, export, hand, personalize, photo, render, train
from palm.cli.common import PalmParser
from palm.errors import PalmError

#: Command modules, in the order ``palm --help`` lists them.
COMMAND_MODULES = (doctor, hand, render, env, data, photo, train, personalize, export, eval)


def build_parser() -> argparse.ArgumentParser:
    parser = PalmParser(
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
    except OSError as exc:  # disk full, read-only mount, a file where a folder is expected, ...
        if debug:
            traceback.print_exc()
        what = (exc.strerror or str(exc) or type(exc).__name__).lower()
        print(f"error: {_user_path(exc.filename, args)}: {what}", file=sys.stderr)
        return 2
    except MemoryError:
        if debug:
            traceback.print_exc()
        print(f"error: {_user_path(None, args)}: out of memory (try a smaller size or resolution)", file=sys.stderr)
        return 2
    except RuntimeError as exc:  # torch reports failed allocations as RuntimeError subclasses
        text = str(exc)
        if "out of memory" not in text.lower() and "can't allocate memory" not in text.lower():
            raise
        if debug:
            traceback.print_exc()
        print(f"error: {_user_path(None, args)}: out of memory (try a smaller size or resolution)", file=sys.stderr)
        return 2


#: A temporary of :func:`palm.io.atomic_write` / :func:`palm.io.atomic_dir`: ``.NAME.XXXXXXXX.tmp[.ext]``.
_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.[A-Za-z0-9_]{8}\.(tmp|old)(\.[A-Za-z0-9]+)?$")


def _user_path(filename: object, args: argparse.Namespace) -> str:
    """The path to name in an error: the user's path, never one of our temporaries."""
    if filename:
        path = Path(os.fsdecode(filename))  # type: ignore[arg-type]
        for part in (path, *path.parents):
            match = _TEMPORARY.match(part.name)
            if match:
                return str(part.with_name(match["name"]))
        return str(path)
    for key in ("out", "output"):
        if getattr(args, key, None):
            return str(getattr(args, key))
    return f"palm {args.command}"


def entry() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    entry()
