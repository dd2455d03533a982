"""Streaming runs in progress, kept on app.state.streams (created in the lifespan; not module globals)."""
from __future__ import annotations

import threading
from collections import OrderedDict

RECENT = 64


class Streams:
    """Streaming runs in progress (run_id -> cancel event) and the most recent finished ones."""

    def __init__(self, keep: int = RECENT) -> None:
        self._lock = threading.Lock()
        self._active: dict[str, threading.Event] = {}
        self._recent: OrderedDict[str, tuple[str, int]] = OrderedDict()
        self._keep = keep

    def begin(self, run_id: str) -> threading.Event:
        cancel = threading.Event()
        with self._lock:
            self._active[run_id] = cancel
        return cancel

    def end(self, run_id: str, reason: str | None = None, n_tokens: int = 0) -> None:
        with self._lock:
            self._active.pop(run_id, None)
            if reason is not None:
                self._recent[run_id] = (reason, n_tokens)
                while len(self._recent) > self._keep:
                    self._recent.popitem(last=False)

    def cancel(self, run_id: str) -> bool:
        """Stop a run before its next token; False when no such run is in progress."""
        with self._lock:
            ev = self._active.get(run_id)
        if ev is not None:
            ev.set()
        return ev is not None

    def active(self, run_id: str) -> bool:
        with self._lock:
            return run_id in self._active

    def finished(self, run_id: str) -> tuple[str, int] | None:
        """(finish_reason, tokens) of a recent finished run."""
        with self._lock:
            return self._recent.get(run_id)

    def cancel_all(self) -> None:
        with self._lock:
            events = list(self._active.values())
        for ev in events:
            ev.set()
