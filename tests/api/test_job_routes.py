"""app/api/jobs.py: the job of a kind or 404, a finished job or 409, the status with its result URL."""
from __future__ import annotations

import threading

import pytest
from fastapi import HTTPException

from app.api.jobs import finished_job, job_of_kind, status_of
from app.jobs import JobRunner


def test_kind_state_and_result_url():
    runner = JobRunner(workers=1)
    gate = threading.Event()
    try:
        job = runner.submit("k", lambda j: gate.wait(5) and {"x": 1}, kind="discovery", total=1)
        with pytest.raises(HTTPException) as other_kind:
            job_of_kind(runner, job.id, "experiment")
        assert other_kind.value.status_code == 404 and other_kind.value.detail == f"no experiment job {job.id!r}"
        with pytest.raises(HTTPException) as unknown:
            job_of_kind(runner, "nope", "discovery")
        assert unknown.value.detail == "no discovery job 'nope'"
        with pytest.raises(HTTPException) as early:
            finished_job(runner, job.id, "discovery")
        assert early.value.status_code == 409 and early.value.detail in (f"job {job.id} is queued", f"job {job.id} is running")
        assert status_of(job, "/api/discover").result_url is None
        gate.set()
        runner.wait(job.id)
        assert finished_job(runner, job.id, "discovery").result == {"x": 1}
        s = status_of(job, "/api/discover")
        assert (s.state, s.result_url) == ("done", f"/api/discover/jobs/{job.id}/result")
    finally:
        gate.set()
        runner.shutdown()
