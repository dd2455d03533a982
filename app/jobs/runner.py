"""The job runner: worker threads, jobs shared by key, a result cache, state shared through the store."""
from __future__ import annotations

import collections
import json
import os
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from app.engine.engine import ShuttingDown
from app.jobs.job import INTERRUPTED, Cancelled, Job
from app.jobs.shared import StoreSide


class JobRunner(StoreSide):
    """Runs jobs on `workers` threads; keeps the last `cache_size` results by key and `keep` jobs by id.

    store: share job state with other replicas through the store's jobs table (see the module docstring).
    """

    def __init__(self, workers: int = 1, cache_size: int = 16, keep: int = 256, store=None, replica: str | None = None,
                 heartbeat_s: float = 2.0, lease_s: float = 15.0):
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="asn-job")
        self._lock = threading.Lock()
        self._jobs: collections.OrderedDict[str, Job] = collections.OrderedDict()
        self._cache: collections.OrderedDict[str, Any] = collections.OrderedDict()
        self._by_key: dict[str, str] = {}  # key -> id of the active job
        self.cache_size, self.keep = cache_size, keep
        self.store = store
        self.replica = replica or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.heartbeat_s, self.lease_s = heartbeat_s, lease_s
        self._stop = threading.Event()
        self._draining = threading.Event()  # interrupt(): no new jobs; a cancelled job is "interrupted"
        self._beater = None
        if store is not None:
            self._beater = threading.Thread(target=self._beat_loop, name="asn-job-heartbeat", daemon=True)
            self._beater.start()

    def cached(self, key: str) -> Any:
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        return None

    def put_cache(self, key: str, value: Any) -> None:
        with self._lock:
            self._cache[key] = value
            self._cache.move_to_end(key)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)

    def submit(self, key: str, fn: Callable[[Job], Any], kind: str = "job", total: int = 0, meta: dict | None = None) -> Job:
        """A job for key: cached -> a finished job at once; running with the same key -> that job; else queued.
        ShuttingDown (503) once the server stops."""
        if self._draining.is_set():
            raise ShuttingDown()
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                job = self._cached_job(key, kind, total, self._cache[key], meta)
                self._remember(job)
                return job
            jid = self._by_key.get(key)
            if jid and jid in self._jobs and self._jobs[jid].active:
                return self._jobs[jid]
        if self.store is not None:  # the same key running on another replica, or finished on any
            row = self._store_call(self._latest, key)
            if row is not None and row["state"] in ("queued", "running"):
                return self._from_row(row)
            if row is not None and row["state"] == "done" and row["result"] is not None:
                job = self._cached_job(key, kind, total, json.loads(row["result"]), meta)
                with self._lock:
                    self._remember(job)
                return job
        with self._lock:
            jid = self._by_key.get(key)  # another thread may have started it meanwhile
            if jid and jid in self._jobs and self._jobs[jid].active:
                return self._jobs[jid]
            job = Job(uuid.uuid4().hex[:12], key, kind, total, meta=meta or {})
            self._remember(job)
            self._by_key[key] = job.id
        self._record(job)
        self._pool.submit(self._run, job, fn)
        return job

    def _cached_job(self, key: str, kind: str, total: int, result: Any, meta: dict | None) -> Job:
        job = Job(uuid.uuid4().hex[:12], key, kind, total, total, "done", result=result, cached=True, meta=meta or {})
        job.started = job.finished = time.time()
        self._record(job)
        return job

    def _remember(self, job: Job) -> None:
        self._jobs[job.id] = job
        while len(self._jobs) > self.keep:
            old_id, old = next(iter(self._jobs.items()))
            if old.active:
                break
            self._jobs.pop(old_id)

    def run_here(self, key: str, fn: Callable[[Job], Any], kind: str = "job", total: int = 0,
                 meta: dict | None = None) -> Job:
        """Run fn(job) in the calling thread as a job: a synchronous route's long work, recorded like a background
        job (polled, cancelled, shared by key) and interrupted when the server stops. Returns the job once it is no
        longer running (done, cancelled or interrupted); fn's other exceptions propagate to the caller."""
        if self._draining.is_set():
            raise ShuttingDown()
        job = Job(uuid.uuid4().hex[:12], key, kind, total, meta=meta or {})
        with self._lock:
            self._remember(job)
            jid = self._by_key.get(key)
            if not (jid and jid in self._jobs and self._jobs[jid].active):
                self._by_key[key] = job.id  # a background submit of the same inputs joins this run
        self._record(job)
        self._execute(job, fn, reraise=True)
        return job

    def _run(self, job: Job, fn: Callable[[Job], Any]) -> None:
        self._execute(job, fn, reraise=False)

    def _stopped(self, job: Job) -> None:
        """State of a job stopped before its end: interrupted when the server stops, else cancelled."""
        if self._draining.is_set():
            job.state, job.error = "interrupted", INTERRUPTED
        else:
            job.state = "cancelled"

    def _execute(self, job: Job, fn: Callable[[Job], Any], reraise: bool) -> None:
        if job._cancel.is_set():
            self._stopped(job)
            job.finished = time.time()
            self._settle(job)
            return
        job.state, job.started = "running", time.time()
        if self.store is not None and not self._store_call(self._claim, job, default=True):
            # cancelled (or given up, or interrupted by a stop that came between "running" and the claim) in the store
            # while queued: never run
            self._stopped(job)
            job.finished = time.time()
            with self._lock:
                if self._by_key.get(job.key) == job.id:
                    self._by_key.pop(job.key, None)
            return
        try:
            result = fn(job)
        except Cancelled:
            self._stopped(job)
        except ShuttingDown:  # the engine stopped under the job (SIGTERM)
            job.state, job.error = "interrupted", INTERRUPTED
            if reraise:
                raise
        except Exception as exc:  # reported on the job; never kills the worker
            job.state, job.error = "error", f"{type(exc).__name__}: {exc}"
            if reraise:
                raise
        else:
            job.result, job.state = result, "done"
            job.done = job.total or job.done
            self.put_cache(job.key, result)
        finally:
            job.finished = time.time()
            self._settle(job)
            with self._lock:
                if self._by_key.get(job.key) == job.id:
                    self._by_key.pop(job.key, None)

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is not None or self.store is None:
            return job
        row = self._store_call(self._fetch, job_id)
        return None if row is None else self._from_row(row)

    def cancel(self, job_id: str) -> Job | None:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            if self.store is not None:  # another replica's job: flag it; that replica stops it at its next beat
                self._store_call(lambda: self.store.job_request_cancel(job_id, time.time()))
                return self.get(job_id)
            return None
        if job.active:
            job._cancel.set()
            if job.state == "queued":
                job.state = "cancelled"
                job.finished = time.time()
                self._settle(job)
        return job

    def wait(self, job_id: str, timeout: float = 60.0, poll: float = 0.02) -> Job | None:
        """Block until the job is no longer active (for tests and scripts)."""
        end = time.time() + timeout
        job = self.get(job_id)
        while job is not None and job.active and time.time() < end:
            time.sleep(poll)
            if job.id not in self._jobs:  # another replica's job: a snapshot, read it again
                job = self.get(job_id)
        return job

    def interrupt(self) -> None:
        """The server stops: take no new jobs, cancel every active one and record it as interrupted at once (a
        running one stops at its next checkpoint and is settled as interrupted again then). Returns at once."""
        self._draining.set()
        with self._lock:
            active = [j for j in self._jobs.values() if j.active and not j.cached]
        now = time.time()
        for job in active:
            job._cancel.set()
            if job.state == "queued":
                job.state, job.error, job.finished = "interrupted", INTERRUPTED, now
                self._settle(job)
            elif self.store is not None:  # in the store now, in case the process ends before the checkpoint
                self._store_call(self.store.job_update, job.id, {"state": "interrupted", "finished": now,
                                                                 "error": INTERRUPTED, "heartbeat": now,
                                                                 "done": int(job.done), "total": int(job.total)})

    def shutdown(self, wait: bool = False, grace_s: float = 0.0) -> None:
        """Stop: interrupt every job (see interrupt); wait=True returns once the workers have stopped, grace_s waits
        at most that long for running jobs to reach their checkpoint (so they are settled before the store closes)."""
        self.interrupt()
        end = time.time() + grace_s
        while time.time() < end and any(j.active for j in list(self._jobs.values())):
            time.sleep(0.02)
        self._stop.set()
        if self._beater is not None and self._beater is not threading.current_thread():
            self._beater.join(timeout=10)  # before the store closes under it
        self._pool.shutdown(wait=wait, cancel_futures=True)


_runner_lock = threading.Lock()


def runner_for(settings=None, store=None) -> JobRunner:
    """The JobRunner an app uses: job state in its store (shared by replicas), timings from settings."""
    return JobRunner(store=store, heartbeat_s=getattr(settings, "job_heartbeat_s", 2.0),
                     lease_s=getattr(settings, "job_lease_s", 15.0))


def get_runner(app) -> JobRunner:
    """The app's job runner (created on first use, kept on app.state.jobs)."""
    with _runner_lock:
        runner = getattr(app.state, "jobs", None)
        if runner is None:
            runner = runner_for(getattr(app.state, "settings", None), getattr(app.state, "store", None))
            app.state.jobs = runner
        return runner
