"""Background-job routes shared by the features that run long work on the app's job runner (poll, cancel, result)."""
from __future__ import annotations

from typing import Any, Callable, Literal, cast

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel

from app.api.deps import JobsDep
from app.engine.engine import ShuttingDown
from app.jobs import Job, JobRunner

UNKNOWN: dict[int | str, dict[str, Any]] = {404: {"description": "unknown job"}}
UNFINISHED: dict[int | str, dict[str, Any]] = {**UNKNOWN, 409: {"description": "job not finished"}}


class JobStatus(BaseModel):
    job_id: str
    kind: str
    key: str
    state: Literal["queued", "running", "done", "error", "cancelled", "interrupted"]
    done: int
    total: int
    fraction: float
    elapsed_s: float
    eta_s: float | None
    cached: bool
    error: str | None
    phase: str | None = None
    result_url: str | None = None


def status_of(job: Job, prefix: str) -> JobStatus:
    """The runner's status of a job, with the URL of its result under `prefix` once it is done."""
    s = job.status()
    s["result_url"] = f"{prefix}/jobs/{job.id}/result" if job.state == "done" else None
    return JobStatus.model_validate(s)


def job_of_kind(jobs: JobRunner, job_id: str, kind: str) -> Job:
    """The job, or 404 when there is none of this kind."""
    job = jobs.get(job_id)
    if job is None or job.kind != kind:
        raise HTTPException(404, detail=f"no {kind} job {job_id!r}")
    return job


def finished_job(jobs: JobRunner, job_id: str, kind: str) -> Job:
    """The job once done: 404 when there is none of this kind, 409 (with its state and error) before."""
    job = job_of_kind(jobs, job_id, kind)
    if job.state != "done":
        raise HTTPException(409, detail=f"job {job_id} is {job.state}" + (f": {job.error}" if job.error else ""))
    return job


def run_here(jobs: JobRunner, key: str, fn: Callable[[Job], Any], kind: str, total: int, meta: dict) -> Any:
    """A synchronous route's long work, run as a job in the request's thread (recorded in the store, cancellable,
    interrupted when the server stops): its result; 503 + Retry-After when the server stopped it (the client tries
    again elsewhere), 409 when someone cancelled it."""
    job = jobs.run_here(key, fn, kind=kind, total=total, meta=meta)
    if job.state == "interrupted":
        raise ShuttingDown()
    if job.state != "done":
        raise HTTPException(409, detail=f"{kind} job {job.id} was {job.state}")
    return job.result


def add_job_routes(router: APIRouter, kind: str, result_model: type[BaseModel], progress_doc: str, cancel_doc: str) -> None:
    """GET jobs/{job_id} (progress), POST jobs/{job_id}/cancel and GET jobs/{job_id}/result on a feature's router."""

    def job_status(job_id: str, jobs: JobsDep) -> JobStatus:
        return status_of(job_of_kind(jobs, job_id, kind), router.prefix)

    def cancel_job(job_id: str, jobs: JobsDep) -> JobStatus:
        job_of_kind(jobs, job_id, kind)
        return status_of(cast(Job, jobs.cancel(job_id)), router.prefix)  # it exists: job_of_kind found it

    def job_result(job_id: str, jobs: JobsDep) -> BaseModel:
        return result_model.model_validate(finished_job(jobs, job_id, kind).result)

    # FastAPI reads the summary's docstring when the route is added: set it first
    job_status.__doc__, cancel_job.__doc__ = progress_doc, cancel_doc
    router.get("/jobs/{job_id}", response_model=JobStatus, responses=dict(UNKNOWN))(job_status)
    router.post("/jobs/{job_id}/cancel", response_model=JobStatus, responses=dict(UNKNOWN))(cancel_job)
    router.get("/jobs/{job_id}/result", response_model=result_model, responses=dict(UNFINISHED))(job_result)
