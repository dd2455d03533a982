"""One background job: its state, progress with ETA, cancel flag and status; `Cancelled`."""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from app.engine.cancellation import Cancelled

__all__ = ["Cancelled", "Job", "STATES"]

STATES = ("queued", "running", "done", "error", "cancelled", "interrupted")
LOST = "the replica running this job stopped responding (killed or restarted); start it again"
INTERRUPTED = ("the server running this job was stopped before it finished; start it again (the same inputs run "
               "anew here or on another replica)")
log = logging.getLogger("asn.jobs")


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
    phase: str | None = None  # what the job is doing now (a job that reports phases)
    _eta: tuple[float, float] | None = field(default=None, repr=False)  # (seconds left, when) from the job's own clock
    _cancel: threading.Event = field(default_factory=threading.Event, repr=False)

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
        if self._eta is not None:  # the job's per-phase estimate counted down; past it, unknown (None), never "0 s"
            left = self._eta[0] - (time.time() - self._eta[1])
            return left if left > 0 else None
        return self.elapsed / self.done * (self.total - self.done)

    def progress(self, done: int, total: int | None = None, eta_s: float | None = None, phase: str | None = None) -> None:
        """Units done (of total); a job that measures its phases also gives its own eta_s and the phase it is in."""
        if total is not None:
            self.total = total
        self.done = done
        if eta_s is not None:
            self._eta = (float(eta_s), time.time())
        if phase is not None:
            self.phase = phase
        if self._cancel.is_set():
            raise Cancelled(f"job {self.id} cancelled")

    @property
    def cancel_flag(self) -> threading.Event:
        """Set once the job is cancelled (for work that checks between tokens, not only at progress checkpoints)."""
        return self._cancel

    def check(self) -> None:
        if self._cancel.is_set():
            raise Cancelled(f"job {self.id} cancelled")

    def status(self) -> dict:
        return {"job_id": self.id, "kind": self.kind, "key": self.key, "state": self.state, "done": self.done,
                "total": self.total, "fraction": round(self.fraction, 4), "elapsed_s": round(self.elapsed, 2),
                "eta_s": None if self.eta_s is None else round(self.eta_s, 1), "cached": self.cached, "error": self.error,
                "phase": self.phase}
