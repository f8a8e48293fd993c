"""Helpers shared by the ``palm`` sub-command modules.

Each command module exposes ``register(subparsers)`` and adds its parsers with
``parents=[common()]`` so that ``--debug`` and ``--device`` are accepted everywhere. Command
modules import heavy libraries (torch, ...) inside their ``run`` functions, so ``palm --help``
stays fast.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


class PalmParser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line, ``error: <flag>: <what>``, exit 2.

    Sub-parsers created from it (``add_subparsers().add_parser``) are of this class too.
    """

    def error(self, message: str) -> None:  # type: ignore[override]
        if message.startswith("argument "):
            flag, _, what = message[len("argument "):].partition(": ")
            message = f"{flag.split('/')[-1]}: {what}"
        sys.stderr.write(f"error: {message} (see '{self.prog} --help')\n")
        raise SystemExit(2)


def bounded_int(lo: int, hi: int) -> Callable[[str], int]:
    """An argparse type: an integer in ``[lo, hi]`` (written as digits, at most 12 of them)."""

    def parse(text: str) -> int:
        body = text.strip().lstrip("+-")
        if not body.isdigit() or len(body) > 12:
            raise argparse.ArgumentTypeError(f"expected an integer in [{lo}, {hi}], got '{text[:40]}'")
        value = int(text)
        if not lo <= value <= hi:
            what = f"a positive integer (at most {hi})" if lo == 1 else f"an integer in [{lo}, {hi}]"
            raise argparse.ArgumentTypeError(f"must be {what}, got {value}")
        return value

    parse.__name__ = "int"
    return parse


def bounded_float(lo: float = -math.inf, hi: float = math.inf, *, open_lo: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite float in ``[lo, hi]`` (``(lo, hi]`` with ``open_lo``)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got '{text[:40]}'") from None
        if not math.isfinite(value) or value < lo or value > hi or (open_lo and value == lo):
            span = f"{'(' if open_lo else '['}{lo:g}, {hi:g}]"
            raise argparse.ArgumentTypeError(f"must be a finite number in {span}, got {text[:40]}")
        return value

    parse.__name__ = "float"
    return parse


def check_distinct(out: str | os.PathLike, *inputs: str | os.PathLike | None) -> Path:
    """Refuse an output path that is one of the command's inputs (same file, also via links).

    Returns:
        ``out`` as a Path.
    """
    from palm.errors import PalmError

    out = Path(out)
    for item in inputs:
        if item is None:
            continue
        source = Path(item)
        same = out.resolve() == source.resolve() or (out.exists() and source.exists() and os.path.samefile(out, source))
        if same:
            raise PalmError(out, "output is also an input of this command; choose another output path")
    return out


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
    """``auto`` -> cuda when available, else cpu; an unknown or absent device is a clear error."""
    import torch

    from palm.errors import PalmError

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise PalmError("--device", f"unknown device '{name[:40]}' (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise PalmError("--device", f"'{name}' asked for, but this torch build or machine has no CUDA GPU")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise PalmError("--device", f"'{name}' asked for, but only {torch.cuda.device_count()} GPU(s) exist")
    elif device.type != "cpu":
        raise PalmError("--device", f"device type '{device.type}' is not supported (use auto, cpu, cuda or cuda:N)")
    return device


def add_detail_res(p: argparse.ArgumentParser) -> None:
    """``--detail-res PX``: the photo-detail stage's crop (0 skips the stage)."""
    p.add_argument("--detail-res", type=_detail_res, default=None, metavar="PX",
                   help="side of the photo crop the photo-detail stage fits (outline and albedo of the mesh); 0 "
                        "skips the stage (the 'paper' preset has none; 'fast': 256)")


def _detail_res(text: str) -> int:
    value = bounded_int(0, 2048)(text)
    if 0 < value < 32:
        raise argparse.ArgumentTypeError(f"expected 0 (off) or a side of 32 to 2048 pixels, got {value}")
    return value


def with_detail_res(cfg, value: int | None):
    """``cfg`` (a PersonalizeConfig) with ``--detail-res`` applied: None keeps the preset's stage,
    0 removes it, 32-2048 sets its crop (adding the stage with its defaults where the preset has none)."""
    import dataclasses

    from palm.config import DetailConfig

    if value is None:
        return cfg
    detail = None if value == 0 else dataclasses.replace(cfg.detail or DetailConfig(), res=value)
    return dataclasses.replace(cfg, detail=detail)
