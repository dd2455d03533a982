"""A small background job runner: worker threads, progress with ETA, cancel, and a result cache by key.

Generic: a job is `fn(progress) -> result`; `progress(done, total)` records progress and raises `Cancelled`
once the job was cancelled, so long work stops at its next checkpoint. Jobs with the same key share one run:
a finished one is answered from the cache, a running one is joined.

With a `store` (app/store/: the `jobs` table beside the explorations), job state lives in the store too, so
several replicas share it: a job started on one can be polled, cancelled and read on another (`get` and `cancel`
fall back to the store for jobs another replica runs; `submit` joins a same-key job running elsewhere or answers
a finished one from the store). The replica running a job writes its progress and a heartbeat every
`heartbeat_s` and picks up cancel requests then; an active job whose heartbeat is older than `lease_s` (its
replica was killed or hung) is settled as `error` by whichever replica looks next, never left "running".
When the server stops (SIGTERM, the app's lifespan ends), `interrupt` stops taking jobs, cancels the running ones
and records them as `interrupted`: the same inputs submitted again (here after a restart, or on another replica)
start a fresh run. A synchronous route's long work runs as a job too (`run_here`, in the request's thread).
Results must be JSON (they are stored as JSON). In-process caches (`cached`/`put_cache` of intermediate values)
stay per replica.
"""
from __future__ import annotations

from app.jobs.job import INTERRUPTED, LOST, STATES, Cancelled, Job
from app.jobs.runner import JobRunner, get_runner, runner_for

__all__ = ["INTERRUPTED", "LOST", "STATES", "Cancelled", "Job", "JobRunner", "get_runner", "runner_for"]
