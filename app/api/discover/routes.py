"""Concept discovery JSON routes: synchronous run, background jobs (start, poll, cancel, result)."""
from __future__ import annotations

from fastapi import APIRouter, HTTPException

from app.api.deps import EngineDep, JobsDep, SettingsDep
from app.api.discover.schemas import KIND, DiscoverRequest, DiscoveryResponse, JobStatus, shipped_sets
from app.api.discover.service import run_discovery, start_job, status_of
from app.jobs import Job, JobRunner

router = APIRouter(prefix="/api/discover", tags=["discovery"])


def job_or_404(jobs: JobRunner, job_id: str) -> Job:
    job = jobs.get(job_id)
    if job is None or job.kind != KIND:
        raise HTTPException(404, detail=f"no discovery job {job_id!r}")
    return job


@router.get("/prompt-sets")
def prompt_sets() -> dict[str, int]:
    """The shipped prompt sets and their sizes."""
    return shipped_sets()


@router.post("", response_model=DiscoveryResponse)
def discover(req: DiscoverRequest, engine: EngineDep, settings: SettingsDep, jobs: JobsDep) -> DiscoveryResponse:
    """Run discovery synchronously (uses and fills the same cache as the jobs)."""
    return run_discovery(engine, settings, req, runner=jobs)


@router.post("/jobs", response_model=JobStatus, status_code=202)
def create_job(req: DiscoverRequest, engine: EngineDep, settings: SettingsDep, jobs: JobsDep) -> JobStatus:
    """Start a background discovery job (or join the running one / answer from the cache)."""
    return status_of(start_job(jobs, engine, settings, req))


@router.get("/jobs/{job_id}", response_model=JobStatus, responses={404: {"description": "unknown job"}})
def job_status(job_id: str, jobs: JobsDep) -> JobStatus:
    """Progress: prompts done / total, elapsed and ETA."""
    return status_of(job_or_404(jobs, job_id))


@router.post("/jobs/{job_id}/cancel", response_model=JobStatus, responses={404: {"description": "unknown job"}})
def cancel_job(job_id: str, jobs: JobsDep) -> JobStatus:
    """Cancel: the job stops after its current batch."""
    job_or_404(jobs, job_id)
    return status_of(jobs.cancel(job_id))


@router.get("/jobs/{job_id}/result", response_model=DiscoveryResponse,
            responses={404: {"description": "unknown job"}, 409: {"description": "job not finished"}})
def job_result(job_id: str, jobs: JobsDep) -> DiscoveryResponse:
    job = job_or_404(jobs, job_id)
    if job.state != "done":
        raise HTTPException(409, detail=f"job {job_id} is {job.state}" + (f": {job.error}" if job.error else ""))
    return DiscoveryResponse.model_validate(job.result)
