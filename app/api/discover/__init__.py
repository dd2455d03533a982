"""Concept discovery (JSON; long runs through the app's job runner)."""
from app.api.discover.routes import job_or_404, router
from app.api.discover.schemas import KIND, DiscoverRequest, DiscoveryResponse, JobStatus, load_set, shipped_sets
from app.api.discover.service import collect, run_discovery, start_job, status_of, with_threshold

__all__ = ["router", "job_or_404", "KIND", "DiscoverRequest", "DiscoveryResponse", "JobStatus", "load_set", "shipped_sets",
           "collect", "run_discovery", "start_job", "status_of", "with_threshold"]
