"""Engine.session / background_session: the bounded queue answers busy; background jobs wait their turn."""
from __future__ import annotations

import threading
import time

import pytest

from app.engine.engine import EngineBusy


def test_full_queue_is_busy_for_requests_but_background_jobs_wait(tiny_engine):
    eng = tiny_engine
    saved = eng._waiting
    eng._waiting = eng.max_waiting  # as if max_waiting requests were queued
    try:
        with pytest.raises(EngineBusy):
            with eng.session():
                pass
        done = threading.Event()

        def job():
            with eng.background_session(patience_s=30):
                done.set()

        t = threading.Thread(target=job)
        t.start()
        time.sleep(0.4)
        assert not done.is_set()  # still waiting while the queue is full
    finally:
        eng._waiting = saved
    t.join(timeout=10)
    assert done.is_set() and not eng.busy


def test_background_session_gives_up_when_cancelled(tiny_engine):
    eng = tiny_engine
    saved = eng._waiting
    eng._waiting = eng.max_waiting
    cancel = threading.Event()
    cancel.set()
    try:
        with pytest.raises(EngineBusy):
            with eng.background_session(cancel=cancel):
                pass
    finally:
        eng._waiting = saved
