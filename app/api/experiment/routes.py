"""Steering experiment JSON routes: synchronous run, background jobs (start, poll, cancel, result), CSV export."""
from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, HTTPException
from fastapi.responses import PlainTextResponse

from app.api.deps import EngineDep, JobsDep, SettingsDep
from app.api.experiment.schemas import KIND, ExperimentJobStatus, ExperimentRequest, ExperimentResponse
from app.api.experiment.service import run_experiment, start_job, status_of, to_csv
from app.jobs import Job, JobRunner

router = APIRouter(prefix="/api/experiment", tags=["experiment"])


def job_or_404(jobs: JobRunner, job_id: str) -> Job:
    job = jobs.get(job_id)
    if job is None or job.kind != KIND:
        raise HTTPException(404, detail=f"no experiment job {job_id!r}")
    return job


def finished(jobs: JobRunner, job_id: str) -> Job:
    job = job_or_404(jobs, job_id)
    if job.state != "done":
        raise HTTPException(409, detail=f"job {job_id} is {job.state}" + (f": {job.error}" if job.error else ""))
    return job


@router.post("", response_model=ExperimentResponse, responses={404: {"description": "feature index out of range"}})
def experiment(req: ExperimentRequest, engine: EngineDep, settings: SettingsDep) -> ExperimentResponse:
    """Run the experiment synchronously (small runs and scripts; the page uses the jobs)."""
    return run_experiment(engine, settings, req)


@router.post("/jobs", response_model=ExperimentJobStatus, status_code=202,
             responses={404: {"description": "feature index out of range"}})
def create_job(req: ExperimentRequest, engine: EngineDep, settings: SettingsDep, jobs: JobsDep) -> ExperimentJobStatus:
    """Start a background experiment (or join the running one / answer from the cache)."""
    return status_of(start_job(jobs, engine, settings, req))


@router.get("/jobs/{job_id}", response_model=ExperimentJobStatus, responses={404: {"description": "unknown job"}})
def job_status(job_id: str, jobs: JobsDep) -> ExperimentJobStatus:
    """Progress in work units (prompts read, generations, generations scored), elapsed and ETA."""
    return status_of(job_or_404(jobs, job_id))


@router.post("/jobs/{job_id}/cancel", response_model=ExperimentJobStatus, responses={404: {"description": "unknown job"}})
def cancel_job(job_id: str, jobs: JobsDep) -> ExperimentJobStatus:
    """Cancel: the job stops after its current chunk."""
    job_or_404(jobs, job_id)
    return status_of(jobs.cancel(job_id))


@router.get("/jobs/{job_id}/result", response_model=ExperimentResponse,
            responses={404: {"description": "unknown job"}, 409: {"description": "job not finished"}})
def job_result(job_id: str, jobs: JobsDep) -> ExperimentResponse:
    return ExperimentResponse.model_validate(finished(jobs, job_id).result)


@router.get("/jobs/{job_id}/{what}.csv", response_class=PlainTextResponse,
            responses={404: {"description": "unknown job"}, 409: {"description": "job not finished"}})
def job_csv(job_id: str, what: Literal["table", "generations"], jobs: JobsDep) -> PlainTextResponse:
    """The table (one row per condition, intervals as _lo/_hi) or every generation, as CSV."""
    res = finished(jobs, job_id).result
    return PlainTextResponse(to_csv(res, what), media_type="text/csv",
                             headers={"Content-Disposition": f'attachment; filename="experiment-{job_id}-{what}.csv"'})
