"""The store side of the job runner: job rows written and read back, heartbeats, lost replicas' jobs settled."""
from __future__ import annotations

import json
import time
from typing import Any

from app.jobs.job import LOST, Job, log


class StoreSide:
    """JobRunner's methods that share job state through the store (`self.store`, `self.replica`, `self.lease_s`)."""

    store: Any
    replica: str
    lease_s: float
    heartbeat_s: float

    def _store_call(self, fn, *args, default=None):
        """A store operation that must not break a job or a poll: logged and answered with default if it fails."""
        try:
            return fn(*args)
        except Exception as exc:  # noqa: BLE001 - the store may be briefly unreachable
            log.warning("job store: %s: %s", type(exc).__name__, exc)
            return default

    def _row(self, job: Job, result: bool = False) -> dict:
        row = {"id": job.id, "key": job.key, "kind": job.kind, "state": job.state, "done": int(job.done),
               "total": int(job.total), "created": job.created, "started": job.started, "finished": job.finished,
               "heartbeat": time.time(), "replica": self.replica, "cached": int(job.cached), "error": job.error,
               "meta": json.dumps(job.meta, default=str)}
        if result and job.state == "done":
            try:
                row["result"] = json.dumps(job.result)
            except (TypeError, ValueError):  # not JSON: other replicas see the job done without its result
                log.warning("job %s: result is not JSON; kept on this replica only", job.id)
        return row

    def _record(self, job: Job) -> None:
        if self.store is not None:
            self._store_call(self.store.job_insert, self._row(job, result=True))

    def _claim(self, job: Job) -> bool:
        return self.store.job_update(job.id, {"state": "running", "started": job.started, "heartbeat": time.time()}) \
            and not (self.store.job_get(job.id) or {}).get("cancel_requested")

    def _settle(self, job: Job) -> None:
        if self.store is not None:
            row = self._row(job, result=True)
            self._store_call(self.store.job_update, job.id, {k: v for k, v in row.items() if k not in ("id", "created")})

    def _expire(self) -> None:
        now = time.time()
        n = self.store.job_expire(now - self.lease_s, now, LOST)
        if n:
            log.warning("%d job(s) of a lost replica marked failed", n)

    def _fetch(self, job_id: str) -> dict | None:
        self._expire()
        return self.store.job_get(job_id)

    def _latest(self, key: str) -> dict | None:
        self._expire()
        return self.store.job_latest(key)

    def _from_row(self, row: dict) -> Job:
        """A read-only snapshot of a job another replica runs (or ran)."""
        job = Job(row["id"], row["key"], row["kind"], int(row["total"]), int(row["done"]), row["state"],
                  created=row["created"], started=row["started"], finished=row["finished"], error=row["error"],
                  cached=bool(row["cached"]), meta=json.loads(row["meta"] or "{}"),
                  result=None if row["result"] is None else json.loads(row["result"]))
        if row["cancel_requested"]:
            job._cancel.set()
        return job

    def _beat_loop(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            self._store_call(self.beat)

    def beat(self) -> None:
        """Write progress + heartbeat of this replica's active jobs, pick up cancel requests, settle lost jobs."""
        with self._lock:
            mine = [j for j in self._jobs.values() if j.active and not j.cached]
        now = time.time()
        for job in mine:
            self.store.job_update(job.id, {"done": int(job.done), "total": int(job.total), "heartbeat": now})
            row = self.store.job_get(job.id)
            # cancelled through another replica, or given up as lost (this replica was too slow to beat): stop it
            if row is not None and (row["cancel_requested"] or row["state"] not in ("queued", "running")):
                self.cancel(job.id)
        self._expire()
