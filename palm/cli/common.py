"""Helpers shared by the ``palm`` sub-command modules.

Each command module exposes ``register(subparsers)`` and adds its parsers with
``parents=[common()]`` so that ``--debug`` and ``--device`` are accepted everywhere. Command
modules import heavy libraries (torch, ...) inside their ``run`` functions, so ``palm --help``
stays fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def common() -> argparse.ArgumentParser:
    """Options every sub-command accepts."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    p.add_argument("--device", default="auto", help="torch device: auto (default), cpu, cuda, cuda:N")
    p.add_argument(
        "--mano",
        metavar="PATH",
        default=None,
        help="your MANO_RIGHT.pkl (default: $PALM_MANO_PATH, else the embedded open rig)",
    )
    return p


def print_json(obj: Any) -> None:
    """Print one JSON object on one line (machine-readable output of ``--json``)."""
    sys.stdout.write(json.dumps(obj, default=_jsonable) + "\n")
    sys.stdout.flush()


def _jsonable(o: Any) -> Any:
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:  # pragma: no cover
        pass
    if hasattr(o, "__fspath__"):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def resolve_device(name: str = "auto") -> Any:
    """``auto`` -> cuda when available, else cpu."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
