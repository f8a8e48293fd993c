"""Engine side of background work: events, cancellation and progress, with no threads or queues.

A long computation (training, personalisation, a neural render, a bake) is a plain function that
takes an ``emit`` callback and a ``cancel`` token. It calls ``emit(event)`` between steps and
checks ``cancel.is_set()`` at step boundaries. The studio passes an ``emit`` that enqueues to its
frame loop; the CLI passes :class:`ConsoleProgress`, which draws a progress bar.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from palm.errors import JobCancelled


@dataclass(frozen=True)
class Progress:
    """``step`` of ``total`` done; ``losses`` are the latest scalar values."""

    step: int
    total: int
    message: str = ""
    losses: dict[str, float] = field(default_factory=dict)
    eta_s: float | None = None


@dataclass(frozen=True)
class Preview:
    """A preview image (H, W, 3|4) float32 in [0, 1], sRGB."""

    step: int
    image: Any


@dataclass(frozen=True)
class Snapshot:
    """Immutable CPU copies of the state a viewer needs (codes, light, pose correction...)."""

    step: int
    data: dict[str, Any]


@dataclass(frozen=True)
class Log:
    message: str
    level: str = "info"


JobEvent = Progress | Preview | Snapshot | Log
Emit = Callable[[JobEvent], None]


class CancelToken(Protocol):
    def is_set(self) -> bool: ...


def null_emit(event: JobEvent) -> None:
    """An ``emit`` that drops every event."""


NEVER = threading.Event()
"""A cancel token that is never set."""


def check_cancel(cancel: CancelToken | None) -> None:
    """Raise :class:`JobCancelled` when ``cancel`` is set."""
    if cancel is not None and cancel.is_set():
        raise JobCancelled()


class ETA:
    """Estimate the time left from the average step time since construction."""

    def __init__(self, total: int, start_step: int = 0):
        self.total, self.start_step, self.t0 = total, start_step, time.monotonic()

    def __call__(self, step: int) -> float | None:
        done = step - self.start_step
        if done <= 0:
            return None
        return (time.monotonic() - self.t0) / done * max(self.total - step, 0)


class ConsoleProgress:
    """An ``emit`` for terminals: a one-line progress bar with losses and ETA on stderr."""

    def __init__(self, label: str = "", stream=None, width: int = 28, quiet: bool = False):
        self.label, self.stream, self.width, self.quiet = label, stream or sys.stderr, width, quiet
        self._last = 0.0

    def __call__(self, event: JobEvent) -> None:
        if self.quiet:
            return
        if isinstance(event, Log):
            self.stream.write(f"\n{event.message}\n" if event.level != "debug" else "")
        elif isinstance(event, Progress):
            now = time.monotonic()
            if now - self._last < 0.2 and event.step < event.total:
                return
            self._last = now
            frac = event.step / max(event.total, 1)
            bar = "#" * int(frac * self.width)
            losses = " ".join(f"{k}={v:.4g}" for k, v in list(event.losses.items())[:4])
            eta = f" eta {_fmt_time(event.eta_s)}" if event.eta_s is not None else ""
            msg = f" {event.message}" if event.message else ""
            self.stream.write(
                f"\r{self.label} [{bar:<{self.width}}] {event.step}/{event.total}{eta} {losses}{msg}\x1b[K"
            )
            if event.step >= event.total:
                self.stream.write("\n")
            self.stream.flush()

    def close(self) -> None:
        if not self.quiet:
            self.stream.write("\n")
            self.stream.flush()


def _fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"
