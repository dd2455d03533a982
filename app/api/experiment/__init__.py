"""The steering experiment (JSON; long runs through the app's job runner)."""
from app.api.experiment.routes import job_or_404, router
from app.api.experiment.schemas import KIND, ExperimentJobStatus, ExperimentRequest, ExperimentResponse
from app.api.experiment.service import config_of, run_experiment, start_job, status_of, to_csv

__all__ = ["router", "job_or_404", "KIND", "ExperimentJobStatus", "ExperimentRequest", "ExperimentResponse", "config_of",
           "run_experiment", "start_job", "status_of", "to_csv"]
