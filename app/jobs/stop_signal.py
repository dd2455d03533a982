"""Act on SIGTERM / SIGINT at once, before uvicorn waits out the requests in flight.

uvicorn's own handler only flags the exit; it then waits for every open request to answer and only afterwards
runs the app's lifespan exit. A long synchronous request would hold the process that long (a container stop
kills it after 10 s), so the app puts its own step in front: `on_stop_signal(callback)` runs callback (in a thread
of its own: a signal handler must not wait on a lock the interrupted main thread may hold), then the handler that
was there before (uvicorn's)."""
from __future__ import annotations

import signal
import threading
from typing import Callable

SIGNALS = (signal.SIGTERM, signal.SIGINT)


def on_stop_signal(callback: Callable[[], None]) -> Callable[[], None]:
    """Install the handlers; returns a function that puts the previous ones back. Off the main thread (a test
    client runs the lifespan in a thread of its own) signals cannot be caught: nothing is installed."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {}
    started: list[threading.Thread] = []

    def handler(sig, frame):
        if not started:  # once, however many signals arrive
            t = threading.Thread(target=callback, name="asn-stop", daemon=True)
            started.append(t)
            t.start()
        prev = previous.get(sig)
        if callable(prev):
            prev(sig, frame)
        elif prev == signal.SIG_DFL:  # nobody else listens: do what the signal would have done
            signal.signal(sig, signal.SIG_DFL)
            signal.raise_signal(sig)

    for sig in SIGNALS:
        previous[sig] = signal.signal(sig, handler)

    def restore() -> None:
        for sig, prev in previous.items():
            if signal.getsignal(sig) is handler:
                signal.signal(sig, prev if prev is not None else signal.SIG_DFL)
        for t in started:
            t.join(timeout=5)

    return restore
