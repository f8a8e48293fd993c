"""Background jobs for the studio: one worker thread per job, events back to the frame loop.

A job is a plain engine function ``fn(emit, cancel, *args)`` (see :mod:`palm.jobs`). The runner
gives it an ``emit`` that routes small events (progress, logs) into a ``queue.Queue`` drained by
the frame loop every frame, and heavy payloads (previews, snapshots) into latest-only slots, so a
slow UI drops stale images instead of piling them up. Cancel is a ``threading.Event`` checked by
the job at step boundaries; pause blocks the job inside ``emit`` (between steps) until resumed.
An exception becomes a :class:`Failed` event carrying the traceback; the app stays usable.
No Dear PyGui here: only the frame loop touches the GUI.
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from palm.errors import JobCancelled, PalmError
from palm.jobs import Log, Preview, Progress, Snapshot


@dataclass(frozen=True)
class Started:
    job_id: int
    name: str


@dataclass(frozen=True)
class Finished:
    job_id: int
    name: str
    result: Any = None


@dataclass(frozen=True)
class Failed:
    job_id: int
    name: str
    message: str
    traceback: str = ""


@dataclass(frozen=True)
class Cancelled:
    job_id: int
    name: str


@dataclass(frozen=True)
class JobMessage:
    """A small event from job ``job_id`` (a :mod:`palm.jobs` Progress or Log)."""

    job_id: int
    name: str
    event: Any


class LatestSlot:
    """Holds only the newest value put into it; ``take()`` empties it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._value: Any = None
        self._full = False

    def put(self, value: Any) -> None:
        with self._lock:
            self._value, self._full = value, True

    def take(self) -> tuple[bool, Any]:
        with self._lock:
            full, value = self._full, self._value
            self._value, self._full = None, False
            return full, value


#: Progress updates kept to measure a job's step time (the ETA follows the recent pace).
ETA_WINDOW = 12


@dataclass
class JobHandle:
    """Book-keeping for one job (read on the main thread)."""

    job_id: int
    name: str
    kind: str
    thread: threading.Thread
    cancel: threading.Event = field(default_factory=threading.Event)
    resume: threading.Event = field(default_factory=threading.Event)
    started_at: float = field(default_factory=time.monotonic)
    progress: Progress | None = None
    done: bool = False
    marks: list = field(default_factory=list)
    """``(monotonic time, step)`` of the latest progress updates whose step moved (ETA_WINDOW kept)."""

    @property
    def paused(self) -> bool:
        return not self.resume.is_set()

    def record(self, progress: Progress) -> None:
        """A progress update arrived (main thread): remember when its step was reached."""
        if self.progress is None or progress.total != self.progress.total or progress.step < self.progress.step:
            self.marks = []  # a new stage: its steps are timed afresh
        if not self.marks or progress.step != self.marks[-1][1]:
            self.marks.append((time.monotonic(), progress.step))
            del self.marks[:-ETA_WINDOW]
        self.progress = progress

    @property
    def indeterminate(self) -> bool:
        """True while the job works without a measurable fraction: no progress yet, or its steps
        are all done and it goes on (baking, writing: see :meth:`stage`)."""
        p = self.progress
        return p is None or p.total <= 0 or p.step >= p.total

    def fraction(self) -> float:
        """Done fraction in [0, 1); never 1 while the job runs (the stage says what goes on)."""
        p = self.progress
        if p is None or p.total <= 0:
            return 0.0
        f = min(max(p.step / p.total, 0.0), 1.0)
        return f if self.done else min(f, 0.99)

    def stage(self) -> str:
        """What the job is doing now, e.g. ``"fitting 120/400"`` or ``"writing"`` (from its messages)."""
        p = self.progress
        if p is None:
            return "starting"
        msg = p.message or self.name
        if p.total > 0 and p.step < p.total:
            return f"{msg} {p.step}/{p.total}"
        return msg

    def step_time_s(self) -> float | None:
        """Seconds per step measured over the recent updates (the first step, a warm-up, excluded)."""
        marks = self.marks[1:] if len(self.marks) > 2 else self.marks
        if len(marks) < 2 or marks[-1][1] <= marks[0][1]:
            return None
        return (marks[-1][0] - marks[0][0]) / (marks[-1][1] - marks[0][1])

    def eta_s(self) -> float | None:
        """Seconds left: the remaining steps at the measured pace, plus the time since the last step
        is discounted; the job's own estimate until two steps were timed; None when unknown."""
        p = self.progress
        if p is None or p.total <= 0 or p.step >= p.total:
            return None
        per_step = self.step_time_s()
        if per_step is None:
            return p.eta_s
        since = max(time.monotonic() - self.marks[-1][0], 0.0)
        return max(per_step * (p.total - p.step) - since, 0.0)


class JobRunner:
    """Starts jobs on worker threads and hands their events to the frame loop."""

    def __init__(self) -> None:
        self.events: queue.Queue = queue.Queue()
        self.previews: dict[str, LatestSlot] = {}
        self.snapshots: dict[str, LatestSlot] = {}
        self.jobs: dict[int, JobHandle] = {}
        self._ids = itertools.count(1)

    def start(self, name: str, fn: Callable[..., Any], *args: Any, kind: str | None = None, **kwargs: Any) -> int:
        """Run ``fn(emit, cancel, *args, **kwargs)`` on a new thread; return the job id.

        ``kind`` groups jobs that replace each other (a new bake cancels the running bake);
        it defaults to ``name``.
        """
        kind = kind or name
        for job in self.active():
            if job.kind == kind:
                job.cancel.set()
                job.resume.set()
        job_id = next(self._ids)
        self.previews.setdefault(kind, LatestSlot())
        self.snapshots.setdefault(kind, LatestSlot())
        handle = JobHandle(job_id, name, kind, thread=None)  # type: ignore[arg-type]
        handle.resume.set()
        handle.thread = threading.Thread(
            target=self._run, args=(handle, fn, args, kwargs), name=f"job-{job_id}-{name}", daemon=True
        )
        self.jobs[job_id] = handle
        self.events.put(Started(job_id, name))
        handle.thread.start()
        return job_id

    def _emit_for(self, handle: JobHandle) -> Callable[[Any], None]:
        def emit(event: Any) -> None:
            # pause: block here (between steps) until resumed or cancelled
            while not handle.resume.wait(0.05):
                if handle.cancel.is_set():
                    break
            if isinstance(event, Preview):
                self.previews[handle.kind].put(event)
            elif isinstance(event, Snapshot):
                self.snapshots[handle.kind].put(event)
            else:
                self.events.put(JobMessage(handle.job_id, handle.name, event))

        return emit

    def _run(self, handle: JobHandle, fn: Callable[..., Any], args: tuple, kwargs: dict) -> None:
        try:
            result = fn(self._emit_for(handle), handle.cancel, *args, **kwargs)
        except JobCancelled:
            self.events.put(Cancelled(handle.job_id, handle.name))
        except PalmError as exc:
            self.events.put(Failed(handle.job_id, handle.name, f"error: {exc}", traceback.format_exc()))
        except BaseException as exc:  # noqa: BLE001 - every failure must reach the log panel
            self.events.put(Failed(handle.job_id, handle.name, f"{type(exc).__name__}: {exc}", traceback.format_exc()))
        else:
            if handle.cancel.is_set():
                self.events.put(Cancelled(handle.job_id, handle.name))
            else:
                self.events.put(Finished(handle.job_id, handle.name, result))

    def drain(self, limit: int = 1000) -> list[Any]:
        """Return queued events (oldest first) and update job book-keeping. Main thread."""
        out = []
        for _ in range(limit):
            try:
                ev = self.events.get_nowait()
            except queue.Empty:
                break
            if isinstance(ev, JobMessage) and isinstance(ev.event, Progress) and ev.job_id in self.jobs:
                self.jobs[ev.job_id].record(ev.event)
            if isinstance(ev, (Finished, Failed, Cancelled)) and ev.job_id in self.jobs:
                self.jobs[ev.job_id].done = True
            out.append(ev)
        return out

    def active(self) -> list[JobHandle]:
        return [j for j in self.jobs.values() if not j.done and j.thread is not None and j.thread.is_alive()]

    def cancel(self, job_id: int | None = None) -> None:
        """Cancel one job, or every running job when ``job_id`` is None."""
        for job in self.active():
            if job_id is None or job.job_id == job_id:
                job.cancel.set()
                job.resume.set()

    def pause(self, job_id: int) -> None:
        if job_id in self.jobs:
            self.jobs[job_id].resume.clear()

    def resume(self, job_id: int) -> None:
        if job_id in self.jobs:
            self.jobs[job_id].resume.set()

    def shutdown(self, timeout_s: float = 5.0) -> bool:
        """Cancel everything and join the threads; True when all ended in time."""
        self.cancel()
        deadline = time.monotonic() + timeout_s
        for job in list(self.jobs.values()):
            if job.thread is not None:
                job.thread.join(max(deadline - time.monotonic(), 0.0))
        return not any(j.thread is not None and j.thread.is_alive() for j in self.jobs.values())


def log_text(event: Any) -> str | None:
    """One log line for an event, or None for events that are not logged."""
    if isinstance(event, Started):
        return f"[job {event.job_id}] {event.name}: started"
    if isinstance(event, Finished):
        return f"[job {event.job_id}] {event.name}: finished"
    if isinstance(event, Cancelled):
        return f"[job {event.job_id}] {event.name}: cancelled"
    if isinstance(event, Failed):
        return f"[job {event.job_id}] {event.name}: FAILED {event.message}\n{event.traceback}"
    if isinstance(event, JobMessage) and isinstance(event.event, Log):
        return f"[job {event.job_id}] {event.event.message}"
    return None
