"""app/jobs.py: progress and ETA, result cache by key, joining a running job, cancel (running and queued), errors."""
from __future__ import annotations

import contextlib
import threading
import time

import pytest

from app.jobs import JobRunner
from tests.conftest import until


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
    until(lambda: job.state == "running")  # the worker thread picks it up when the (loaded) machine lets it
    assert job.done == 0 and job.eta_s is None
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


# --- job state in the store: two runners on one store stand for two replicas ------------------------------

@contextlib.contextmanager
def two_replicas(store_url, lease_s: float):
    from app.store import open_store

    stores = [open_store(store_url), open_store(store_url)]
    a = JobRunner(store=stores[0], replica="A", heartbeat_s=0.05, lease_s=lease_s)
    b = JobRunner(store=stores[1], replica="B", heartbeat_s=0.05, lease_s=lease_s)
    try:
        yield a, b
    finally:
        for r in (a, b):
            r.shutdown()
        for s in stores:
            s.close()


@pytest.fixture()
def replicas(store_url):
    # a lease far above the heartbeat: on a loaded machine (make test, -n 2) a 1 s lease let B declare a healthy
    # A lost between two of its beats
    with two_replicas(store_url, lease_s=10.0) as pair:
        yield pair


@pytest.fixture()
def short_lease_replicas(store_url):
    with two_replicas(store_url, lease_s=1.0) as pair:
        yield pair




def test_a_job_started_on_one_replica_is_polled_and_read_on_another(replicas):
    a, b = replicas
    gate, step = threading.Event(), threading.Event()

    def fn(job):
        job.progress(0, 4)
        for i in range(4):
            assert gate.wait(5)
            job.progress(i + 1, 4)
            if i == 1:
                step.set()
                gate.clear()
        return {"rows": [1.5, 2.5], "name": "é"}

    job = a.submit("k", fn, kind="discovery", total=4, meta={"inputs": {"x": 1}})
    seen = b.get(job.id)
    assert seen is not None and seen.id == job.id and seen.kind == "discovery" and seen.active
    assert seen.meta == {"inputs": {"x": 1}} and seen.total == 4
    gate.set()
    assert step.wait(5)  # A is at 2 of 4, waiting
    polled = until(lambda: (j := b.get(job.id)).done == 2 and j)  # progress arrives with A's next heartbeat
    assert polled.state == "running" and polled.fraction == 0.5 and polled.status()["job_id"] == job.id
    gate.set()
    a.wait(job.id, 5)
    done = until(lambda: (j := b.get(job.id)).state == "done" and j)
    assert done.result == {"rows": [1.5, 2.5], "name": "é"} and done.done == 4 and not done.active
    # the same key on B: answered from the store, not run again
    again = b.submit("k", lambda j: pytest.fail("must not run again"), kind="discovery", total=4)
    assert again.cached and again.state == "done" and again.result == done.result
    assert a.get(again.id).result == done.result  # and that cached answer is readable on A too


def test_the_same_key_on_another_replica_joins_the_running_job(replicas):
    a, b = replicas
    gate = threading.Event()
    job = a.submit("same", gated(2, gate))
    until(lambda: b.get(job.id).state == "running")
    joined = b.submit("same", lambda j: pytest.fail("must not start a second run"))
    assert joined.id == job.id
    gate.set()
    assert until(lambda: (j := b.get(job.id)).state == "done" and j).result == "ok"


def test_cancel_through_another_replica(replicas):
    a, b = replicas
    gate, seen = threading.Event(), []
    job = a.submit("c", gated(1000, gate, seen=seen, delay=0.005), total=1000)
    gate.set()
    until(lambda: seen)
    b.cancel(job.id)
    a.wait(job.id, 10)
    assert job.state == "cancelled" and len(seen) < 1000
    assert until(lambda: b.get(job.id).state == "cancelled")
    # a queued job cancelled through B never runs on A
    gate2, ran = threading.Event(), []
    first = a.submit("first", gated(1, gate2))
    queued = a.submit("second", lambda j: ran.append(1))
    assert b.get(queued.id).state == "queued"
    assert b.cancel(queued.id).state == "cancelled"
    gate2.set()
    a.wait(first.id, 5)
    until(lambda: queued.state == "cancelled")
    time.sleep(0.1)
    assert ran == [] and b.get(queued.id).state == "cancelled"


def test_a_lost_replica_leaves_its_job_failed_not_running(short_lease_replicas):
    a, b = short_lease_replicas
    gate = threading.Event()
    job = a.submit("lost", gated(1, gate))
    until(lambda: b.get(job.id).state == "running")
    a._stop.set()  # A's heartbeat stops, as if the process was killed (its worker thread still waits on the gate)
    t0 = time.time()
    settled = until(lambda: (j := b.get(job.id)).state != "running" and j, timeout=10)
    assert settled.state == "error" and "stopped responding" in settled.error
    assert time.time() - t0 < 5  # lease 1 s
    gate.set()
    a.wait(job.id, 5)
    assert b.get(job.id).state == "error"  # a late finish does not resurrect it
    # the key is free again: a new submit on B starts a fresh run
    fresh = b.submit("lost", lambda j: "again")
    b.wait(fresh.id, 5)
    assert fresh.id != job.id and fresh.result == "again"


def test_unknown_job_id_on_a_store_backed_runner(replicas):
    a, _ = replicas
    assert a.get("nope") is None and a.cancel("nope") is None


def test_interrupt_stops_taking_jobs_and_records_them_interrupted(tmp_path):
    """The server stops (issue 30, item 3): running and queued jobs end as interrupted in the store, a synchronous
    run_here job too, and no new job is taken (ShuttingDown -> 503)."""
    from app.engine.engine import ShuttingDown
    from app.jobs import INTERRUPTED
    from app.store import open_store

    store = open_store(f"sqlite:///{tmp_path}/jobs.db")
    r = JobRunner(workers=1, store=store)
    gate, here_gate = threading.Event(), threading.Event()
    running = r.submit("a", gated(10, gate), kind="t", total=10)
    queued = r.submit("b", gated(10, gate), kind="t", total=10)
    out = {}
    inline = threading.Thread(target=lambda: out.setdefault("job", r.run_here("c", gated(10, here_gate), kind="s", total=10)))
    inline.start()
    until(lambda: running.state == "running" and "c" in {j.key for j in r._jobs.values() if j.state == "running"})
    r.interrupt()
    for job_id in (running.id, queued.id):
        assert store.job_get(job_id)["state"] == "interrupted"  # recorded at once, before the checkpoint
    with pytest.raises(ShuttingDown):
        r.submit("d", gated(1, gate))
    with pytest.raises(ShuttingDown):
        r.run_here("e", gated(1, gate))
    gate.set()
    here_gate.set()
    inline.join(10)
    until(lambda: not running.active)
    assert running.state == queued.state == out["job"].state == "interrupted"
    for job in (running, queued, out["job"]):
        row = store.job_get(job.id)
        assert row["state"] == "interrupted" and row["error"] == INTERRUPTED
    assert store.job_latest("a") is None  # the same inputs submitted again start afresh
    r.shutdown()
    store.close()


def test_a_stop_between_running_and_the_claim_leaves_the_job_interrupted(tmp_path):
    """The race behind a flaky run: interrupt() lands after a job turned "running" and before its store claim; the
    claim then fails on the interrupted row, and the job must read interrupted, not cancelled."""
    from app.jobs import INTERRUPTED
    from app.store import open_store

    store = open_store(f"sqlite:///{tmp_path}/jobs.db")
    r = JobRunner(workers=1, store=store)
    claim = r._claim

    def claim_after_a_stop(job):
        r.interrupt()
        return claim(job)

    r._claim = claim_after_a_stop
    job = r.run_here("a", gated(3, threading.Event()), kind="t", total=3)
    assert job.state == "interrupted" and job.error == INTERRUPTED
    assert store.job_get(job.id)["state"] == "interrupted"
    r.shutdown()
    store.close()


def test_work_that_sees_the_cancel_flag_first_reads_cancelled(runner):
    """Engine work checks the job's cancel flag itself (between chunks, between tokens) and may see it before the
    next progress call: its Cancelled (app.engine.cancellation) ends the job cancelled, not as an error."""
    from app.engine.cancellation import Cancelled

    started, gate = threading.Event(), threading.Event()

    def work(job):
        started.set()
        assert gate.wait(5)
        if job.cancel_flag.is_set():  # what run_experiment's own check does
            raise Cancelled("cancelled")
        return "finished"

    job = runner.submit("own-check", work)
    assert started.wait(5)
    runner.cancel(job.id)
    gate.set()
    runner.wait(job.id, 5)
    assert job.state == "cancelled" and job.error is None and job.result is None
