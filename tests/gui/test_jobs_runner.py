"""JobRunner: queue and latest-only slot semantics, cancel, pause, failures (no GUI)."""

from __future__ import annotations

import threading
import time

import pytest

from app.jobs import Cancelled, Failed, Finished, JobMessage, JobRunner, LatestSlot, Started
from palm.jobs import Log, Preview, Progress, Snapshot, check_cancel


def wait_done(runner: JobRunner, job_id: int, timeout: float = 5.0) -> list:
    events, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        events += runner.drain()
        if runner.jobs[job_id].done:
            return events
        time.sleep(0.01)
    raise AssertionError("job did not finish")


def test_latest_slot_keeps_only_the_newest():
    slot = LatestSlot()
    assert slot.take() == (False, None)
    slot.put(1)
    slot.put(2)
    assert slot.take() == (True, 2) and slot.take() == (False, None)


def test_events_in_order_and_payloads_in_slots():
    runner = JobRunner()

    def job(emit, cancel):
        for i in range(3):
            emit(Progress(i + 1, 3, losses={"rgb": 1.0 / (i + 1)}))
            emit(Preview(i, f"image {i}"))
            emit(Snapshot(i, {"i": i}))
        emit(Log("hello"))
        return 42

    jid = runner.start("demo", job)
    events = wait_done(runner, jid)
    kinds = [type(e).__name__ for e in events]
    assert kinds[0] == "Started" and kinds[-1] == "Finished" and events[-1].result == 42
    steps = [e.event.step for e in events if isinstance(e, JobMessage) and isinstance(e.event, Progress)]
    assert steps == [1, 2, 3]
    assert runner.previews["demo"].take()[1].image == "image 2"
    assert runner.snapshots["demo"].take()[1].data == {"i": 2}
    assert runner.jobs[jid].fraction() == 1.0


def test_cancel_and_failure_become_events():
    runner = JobRunner()
    started = threading.Event()

    def slow(emit, cancel):
        started.set()
        while True:
            check_cancel(cancel)
            time.sleep(0.005)

    def broken(emit, cancel):
        raise ValueError("boom")

    a = runner.start("slow", slow)
    started.wait(2)
    runner.cancel(a)
    assert any(isinstance(e, Cancelled) for e in wait_done(runner, a))
    b = runner.start("broken", broken)
    failed = [e for e in wait_done(runner, b) if isinstance(e, Failed)]
    assert failed and "ValueError: boom" in failed[0].message and "Traceback" in failed[0].traceback
    assert runner.shutdown(2.0)


def test_same_kind_replaces_the_running_job_and_pause_blocks_in_emit():
    runner = JobRunner()
    steps = []

    def counter(emit, cancel):
        for i in range(10000):
            check_cancel(cancel)
            steps.append(i)
            emit(Progress(i, 10000))
            time.sleep(0.002)

    first = runner.start("bake", counter)
    time.sleep(0.05)
    second = runner.start("bake", counter)
    assert any(isinstance(e, Cancelled) for e in wait_done(runner, first))
    runner.pause(second)
    time.sleep(0.05)
    n = len(steps)
    time.sleep(0.1)
    assert len(steps) <= n + 1
    runner.resume(second)
    time.sleep(0.1)
    assert len(steps) > n + 2
    runner.cancel()
    wait_done(runner, second)
    assert not runner.active()
    assert isinstance(Started(1, "x"), Started) and isinstance(Finished(1, "x"), Finished)


def test_eta_follows_measured_step_times_and_the_bar_never_parks_full():
    from app.jobs import JobHandle

    h = JobHandle(1, "personalize", "personalize", thread=None)  # type: ignore[arg-type]
    assert h.indeterminate and h.stage() == "starting"
    t0 = time.monotonic()
    for step in range(6):
        h.record(Progress(step, 10, "fitting", eta_s=999.0))
        h.marks[-1] = (t0 - 0.5 * (5 - step), step)  # 0.5 s a step, the last one now
    assert h.step_time_s() == pytest.approx(0.5)
    assert h.eta_s() is not None and h.eta_s() <= 0.5 * 5 + 1e-6  # measured, not the job's 999 s
    assert h.stage() == "fitting 5/10" and not h.indeterminate
    h.record(Progress(10, 10, "writing the avatar"))
    assert h.indeterminate and h.fraction() < 1.0 and h.stage() == "writing the avatar" and h.eta_s() is None
    h.done = True
    assert h.fraction() == 1.0
