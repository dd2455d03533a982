"""Steering experiment JSON routes: synchronous run, background jobs (start, poll, cancel, result), CSV export."""
from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from app.api.deps import EngineDep, JobsDep, SettingsDep
from app.api.experiment.schemas import KIND, ExperimentJobStatus, ExperimentRequest, ExperimentResponse
from app.api.experiment.service import run_experiment, start_job, status_of, to_csv
from app.api.jobs import UNFINISHED, add_job_routes, finished_job, job_of_kind
from app.jobs import Job, JobRunner

router = APIRouter(prefix="/api/experiment", tags=["experiment"])


def job_or_404(jobs: JobRunner, job_id: str) -> Job:
    return job_of_kind(jobs, job_id, KIND)


@router.post("", response_model=ExperimentResponse, responses={404: {"description": "feature index out of range"}})
def experiment(req: ExperimentRequest, engine: EngineDep, settings: SettingsDep, jobs: JobsDep) -> ExperimentResponse:
    """Run the experiment synchronously (small runs and scripts; the page uses the jobs)."""
    return run_experiment(engine, settings, req, runner=jobs)


@router.post("/jobs", response_model=ExperimentJobStatus, status_code=202,
             responses={404: {"description": "feature index out of range"}})
def create_job(req: ExperimentRequest, engine: EngineDep, settings: SettingsDep, jobs: JobsDep) -> ExperimentJobStatus:
    """Start a background experiment (or join the running one / answer from the cache)."""
    return status_of(start_job(jobs, engine, settings, req))


add_job_routes(router, KIND, ExperimentResponse,
               progress_doc="Progress in work units (prompts read, generations, generations scored), elapsed and ETA.",
               cancel_doc="Cancel: the job stops after its current chunk.")


@router.get("/jobs/{job_id}/{what}.csv", response_class=PlainTextResponse, responses=dict(UNFINISHED))
def job_csv(job_id: str, what: Literal["table", "generations"], jobs: JobsDep) -> PlainTextResponse:
    """The table (one row per condition, intervals as _lo/_hi) or every generation, as CSV."""
    res = finished_job(jobs, job_id, KIND).result
    return PlainTextResponse(to_csv(res, what), media_type="text/csv",
                             headers={"Content-Disposition": f'attachment; filename="experiment-{job_id}-{what}.csv"'})
