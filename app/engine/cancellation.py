"""`Cancelled`: what long engine work raises when its cancel flag is set (a job reports it as cancelled, not as an
error, whichever checkpoint sees the flag first: the job's progress call or the work's own check)."""
from __future__ import annotations


class Cancelled(RuntimeError):
    """Raised at the next checkpoint of work whose cancel flag was set."""
