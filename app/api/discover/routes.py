"""Concept discovery JSON routes: synchronous run, background jobs (start, poll, cancel, result)."""
from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import EngineDep, JobsDep, SettingsDep
from app.api.discover.schemas import KIND, DiscoverRequest, DiscoveryResponse, JobStatus, shipped_sets
from app.api.discover.service import run_as_job_here, start_job, status_of
from app.api.jobs import add_job_routes, job_of_kind
from app.jobs import Job, JobRunner

router = APIRouter(prefix="/api/discover", tags=["discovery"])


def job_or_404(jobs: JobRunner, job_id: str) -> Job:
    return job_of_kind(jobs, job_id, KIND)


@router.get("/prompt-sets")
def prompt_sets() -> dict[str, int]:
    """The shipped prompt sets and their sizes."""
    return shipped_sets()


@router.post("", response_model=DiscoveryResponse)
def discover(req: DiscoverRequest, engine: EngineDep, settings: SettingsDep, jobs: JobsDep) -> DiscoveryResponse:
    """Run discovery synchronously (uses and fills the same cache as the jobs)."""
    return run_as_job_here(engine, settings, req, jobs)


@router.post("/jobs", response_model=JobStatus, status_code=202)
def create_job(req: DiscoverRequest, engine: EngineDep, settings: SettingsDep, jobs: JobsDep) -> JobStatus:
    """Start a background discovery job (or join the running one / answer from the cache)."""
    return status_of(start_job(jobs, engine, settings, req))


add_job_routes(router, KIND, DiscoveryResponse, progress_doc="Progress: prompts done / total, elapsed and ETA.",
               cancel_doc="Cancel: the job stops after its current batch.")
