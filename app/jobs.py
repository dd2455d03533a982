"""A small background job runner: worker threads, progress with ETA, cancel, and a result cache by key.

Generic: a job is `fn(progress) -> result`; `progress(done, total)` records progress and raises `Cancelled`
once the job was cancelled, so long work stops at its next checkpoint. Jobs with the same key share one run:
a finished one is answered from the cache, a running one is joined.
"""
from __future__ import annotations

import collections
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

STATES = ("queued", "running", "done", "error", "cancelled")


class Cancelled(RuntimeError):
    """Raised at a job's next progress checkpoint once it was cancelled."""


@dataclass
class Job:
    id: str
    key: str
    kind: str
    total: int = 0
    done: int = 0
    state: str = "queued"
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    result: Any = None
    error: str | None = None
    cached: bool = False
    meta: dict = field(default_factory=dict)
    _cancel: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def finished_ok(self) -> bool:
        return self.state == "done"

    @property
    def active(self) -> bool:
        return self.state in ("queued", "running")

    @property
    def fraction(self) -> float:
        if self.state == "done":
            return 1.0
        return self.done / self.total if self.total else 0.0

    @property
    def elapsed(self) -> float:
        if self.started is None:
            return 0.0
        return (self.finished or time.time()) - self.started

    @property
    def eta_s(self) -> float | None:
        """Seconds left, from the rate so far (None before the first checkpoint)."""
        if self.state != "running" or not self.done or not self.total:
            return None
        return self.elapsed / self.done * (self.total - self.done)

    def progress(self, done: int, total: int | None = None) -> None:
        if total is not None:
            self.total = total
        self.done = done
        if self._cancel.is_set():
            raise Cancelled(f"job {self.id} cancelled")

    def check(self) -> None:
        if self._cancel.is_set():
            raise Cancelled(f"job {self.id} cancelled")

    def status(self) -> dict:
        return {"job_id": self.id, "kind": self.kind, "key": self.key, "state": self.state, "done": self.done,
                "total": self.total, "fraction": round(self.fraction, 4), "elapsed_s": round(self.elapsed, 2),
                "eta_s": None if self.eta_s is None else round(self.eta_s, 1), "cached": self.cached, "error": self.error}


class JobRunner:
    """Runs jobs on `workers` threads; keeps the last `cache_size` results by key and `keep` jobs by id."""

    def __init__(self, workers: int = 1, cache_size: int = 16, keep: int = 256):
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="asn-job")
        self._lock = threading.Lock()
        self._jobs: collections.OrderedDict[str, Job] = collections.OrderedDict()
        self._cache: collections.OrderedDict[str, Any] = collections.OrderedDict()
        self._by_key: dict[str, str] = {}  # key -> id of the active job
        self.cache_size, self.keep = cache_size, keep

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
        """A job for key: cached -> a finished job at once; running with the same key -> that job; else queued."""
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                job = Job(uuid.uuid4().hex[:12], key, kind, total, total, "done", result=self._cache[key], cached=True,
                          meta=meta or {})
                job.started = job.finished = time.time()
                self._remember(job)
                return job
            jid = self._by_key.get(key)
            if jid and jid in self._jobs and self._jobs[jid].active:
                return self._jobs[jid]
            job = Job(uuid.uuid4().hex[:12], key, kind, total, meta=meta or {})
            self._remember(job)
            self._by_key[key] = job.id
        self._pool.submit(self._run, job, fn)
        return job

    def _remember(self, job: Job) -> None:
        self._jobs[job.id] = job
        while len(self._jobs) > self.keep:
            old_id, old = next(iter(self._jobs.items()))
            if old.active:
                break
            self._jobs.pop(old_id)

    def _run(self, job: Job, fn: Callable[[Job], Any]) -> None:
        if job._cancel.is_set():
            job.state, job.finished = "cancelled", time.time()
            return
        job.state, job.started = "running", time.time()
        try:
            result = fn(job)
        except Cancelled:
            job.state = "cancelled"
        except Exception as exc:  # reported on the job; never kills the worker
            job.state, job.error = "error", f"{type(exc).__name__}: {exc}"
        else:
            job.result, job.state = result, "done"
            job.done = job.total or job.done
            self.put_cache(job.key, result)
        finally:
            job.finished = time.time()
            with self._lock:
                if self._by_key.get(job.key) == job.id:
                    self._by_key.pop(job.key, None)

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def cancel(self, job_id: str) -> Job | None:
        job = self.get(job_id)
        if job is not None and job.active:
            job._cancel.set()
            if job.state == "queued":
                job.state = "cancelled"
                job.finished = time.time()
        return job

    def wait(self, job_id: str, timeout: float = 60.0, poll: float = 0.02) -> Job | None:
        """Block until the job is no longer active (for tests and scripts)."""
        end = time.time() + timeout
        job = self.get(job_id)
        while job is not None and job.active and time.time() < end:
            time.sleep(poll)
        return job

    def shutdown(self) -> None:
        for job in list(self._jobs.values()):
            job._cancel.set()
        self._pool.shutdown(wait=False, cancel_futures=True)


_runner_lock = threading.Lock()


def get_runner(app) -> JobRunner:
    """The app's job runner (created on first use, kept on app.state.jobs)."""
    with _runner_lock:
        runner = getattr(app.state, "jobs", None)
        if runner is None:
            runner = JobRunner()
            app.state.jobs = runner
        return runner
