"""Page routes shared by the features that run as background jobs: start from the form, poll, cancel (htmx)."""
from __future__ import annotations

from typing import Callable

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse

from app.api.deps import EngineDep, JobsDep, SettingsDep
from app.api.errors import errors_of
from app.jobs import Job, JobRunner
from app.web.codecs import Address, Codec
from app.web.forms import FormError
from app.web.templating import render_fragment


class JobPages:
    """A job feature's fragments: the result (`fragments/<name>.html`) once done, else the progress bar."""

    def __init__(self, kind: str, result_template: str, progress_template: str):
        self.kind, self.result_template, self.progress_template = kind, result_template, progress_template

    def fragment(self, request: Request, job: Job, push: Address | None = None) -> HTMLResponse:
        """The result fragment once the job is done, else its progress bar."""
        if job.state == "done":
            ctx = {"inputs": job.meta["inputs"], "result": job.result, "kind": self.kind, "job_id": job.id}
            return render_fragment(request, self.result_template, ctx, push)
        return render_fragment(request, self.progress_template, {"job": job, "status": job.status()}, push)

    def errors(self, request: Request, errors: list[str], status: int) -> HTMLResponse:
        """The error lines in the progress fragment, with this HTTP status."""
        return render_fragment(request, self.progress_template, {"errors": errors, "status": status})


def add_job_page_routes(router: APIRouter, prefix: str, pages: JobPages, codec: Codec,
                        start_job: Callable[..., Job], job_or_404: Callable[[JobRunner, str], Job]) -> None:
    """POST <prefix>/run, GET <prefix>/jobs/{job_id}/progress and POST <prefix>/jobs/{job_id}/cancel (the view's
    codec reads the form and writes the pushed address)."""

    async def run(request: Request, engine: EngineDep, settings: SettingsDep, jobs: JobsDep):
        """The form posts here: starts (or joins / reuses) the job; answers the progress bar or the result."""
        form = await request.form()
        try:
            req = codec.read(form)
            job = start_job(jobs, engine, settings, req)
        except FormError as exc:
            return pages.errors(request, exc.errors, 422)
        except HTTPException as exc:
            return pages.errors(request, errors_of(exc), exc.status_code)
        return pages.fragment(request, job, push=codec.address(req.model_dump()))

    def progress(request: Request, job_id: str, jobs: JobsDep):
        """Polled by htmx every second while the job runs; swaps itself for the result when done."""
        return pages.fragment(request, job_or_404(jobs, job_id))

    def cancel(request: Request, job_id: str, jobs: JobsDep):
        job = job_or_404(jobs, job_id)
        jobs.cancel(job_id)
        return pages.fragment(request, job)

    name = prefix.strip("/")
    router.post(f"{prefix}/run", response_class=HTMLResponse, name=f"{name}_run")(run)
    router.get(f"{prefix}/jobs/{{job_id}}/progress", response_class=HTMLResponse, name=f"{name}_progress")(progress)
    router.post(f"{prefix}/jobs/{{job_id}}/cancel", response_class=HTMLResponse, name=f"{name}_cancel")(cancel)
