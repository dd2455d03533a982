"""app/jobs.py: progress and ETA, result cache by key, joining a running job, cancel (running and queued), errors."""
from __future__ import annotations

import threading
import time

import pytest

from app.jobs import JobRunner


@pytest.fixture()
def runner():
    r = JobRunner(workers=1, cache_size=2)
    yield r
    r.shutdown()


def gated(steps: int, gate: threading.Event, result="ok", seen=None, delay: float = 0.0):
    """A job that reports progress each step and waits on gate before each, so tests control its pace."""

    def fn(job):
        for i in range(steps):
            assert gate.wait(5)
            time.sleep(delay)
            job.progress(i + 1, steps)
            if seen is not None:
                seen.append(i + 1)
        return result

    return fn


def test_progress_eta_and_result(runner):
    gate = threading.Event()
    job = runner.submit("k1", gated(4, gate), kind="t", total=4)
    time.sleep(0.05)
    assert job.state == "running" and job.done == 0 and job.eta_s is None
    gate.set()
    runner.wait(job.id, 5)
    assert job.state == "done" and job.result == "ok" and job.done == 4 and job.fraction == 1.0
    s = job.status()
    assert s["state"] == "done" and s["total"] == 4 and s["cached"] is False


def test_eta_from_rate():
    from app.jobs import Job

    job = Job("x", "k", "t", total=10, state="running")
    job.started = time.time() - 4.0
    job.progress(2)
    assert job.eta_s == pytest.approx(16.0, abs=0.2)  # 2 done in 4 s -> 8 left at 2 s each


def test_cache_hit_and_lru(runner):
    calls = []

    def fn(job):
        calls.append(job.key)
        return job.key.upper()

    for k in ("a", "b"):
        runner.wait(runner.submit(k, fn).id, 5)
    again = runner.submit("a", fn)
    assert again.cached and again.state == "done" and again.result == "A" and calls == ["a", "b"]
    runner.wait(runner.submit("c", fn).id, 5)  # cache_size 2: "b" (least recently used) goes
    assert runner.cached("b") is None and runner.cached("a") == "A"
    assert not runner.submit("b", fn).cached


def test_same_key_joins_running_job(runner):
    gate = threading.Event()
    j1 = runner.submit("same", gated(2, gate))
    j2 = runner.submit("same", gated(2, gate, result="other"))
    assert j1 is j2
    gate.set()
    runner.wait(j1.id, 5)
    assert j1.result == "ok"


def test_cancel_running_stops_at_next_checkpoint(runner):
    gate, seen = threading.Event(), []
    job = runner.submit("c", gated(100, gate, seen=seen, delay=0.01), total=100)
    gate.set()
    while not seen:
        time.sleep(0.001)
    runner.cancel(job.id)
    runner.wait(job.id, 5)
    assert job.state == "cancelled" and len(seen) < 100 and job.result is None
    assert runner.cached("c") is None  # a cancelled run is not cached
    # a new submit with the same key starts afresh
    j2 = runner.submit("c", lambda j: 42)
    runner.wait(j2.id, 5)
    assert j2.id != job.id and j2.result == 42


def test_cancel_queued_never_runs(runner):
    gate, ran = threading.Event(), []
    first = runner.submit("first", gated(1, gate))
    queued = runner.submit("second", lambda j: ran.append(1))
    assert queued.state == "queued"
    runner.cancel(queued.id)
    assert queued.state == "cancelled"
    gate.set()
    runner.wait(first.id, 5)
    time.sleep(0.05)
    assert ran == [] and queued.state == "cancelled"


def test_error_is_reported_and_worker_survives(runner):
    def boom(job):
        raise ValueError("bad input")

    job = runner.submit("e", boom)
    runner.wait(job.id, 5)
    assert job.state == "error" and job.error == "ValueError: bad input"
    ok = runner.submit("e2", lambda j: 1)
    runner.wait(ok.id, 5)
    assert ok.result == 1
