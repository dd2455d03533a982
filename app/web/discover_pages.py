"""The /discover page and its htmx fragments: the form, the job's progress bar (polled), the result views.

templates/fragments/discovery.html is rendered from {inputs, result, kind} only (the saved-explorations
contract); the figures come from app.viz.decomposition.discovery_view(inputs, result). The page URL carries
the inputs (`/discover?concept_set=france&contrast_set=neutral&n_coarse=5&run=1`); a pasted prompt set is
carried in the address (`concept_prompts=[...]`) when it fits, else as `sha:<hash>`, kept in the Store by content hash when its job starts (app/web/pasted_sets.py), so the link
opens on every replica sharing the store and after a restart.
"""
from __future__ import annotations

import json
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from pydantic import ValidationError

from app.api.deps import EngineDep, JobsDep, SettingsDep
from app.api.discover import KIND, DiscoverRequest, job_or_404, shipped_sets, start_job, with_threshold
from app.api.errors import errors_of
from app.engine import discovery as disc
from app.web import pasted_sets
from app.web.codecs import Codec
from app.web.forms import MAX_URL, FormError, cap_url, last, validated
from app.web.jobs_pages import JobPages, add_job_page_routes
from app.web.templating import render_fragment, render_page

router = APIRouter(tags=["pages"], include_in_schema=False)

DEFAULTS = DiscoverRequest().model_dump()
KNOBS = ("aggregate", "top_k", "min_fire_rate", "n_coarse", "n_fine", "cos_threshold", "corr_threshold",
         "cos_near_zero", "hist_coarse")
VIEW_KNOBS = ("cos_threshold", "corr_threshold", "cos_near_zero", "hist_coarse")

def parse_inputs(params, store=None) -> DiscoverRequest:
    """DiscoverRequest from query/form parameters: <side>_set is a shipped name, 'custom' (use <side>_text,
    one prompt per line) or 'sha:<hash>' (a set pasted earlier, read from the store). Raises FormError naming the field."""
    raw, errors = {}, []
    for side in ("concept", "contrast"):
        choice = (last(params, f"{side}_set") or DEFAULTS[f"{side}_set"] or "").strip()
        text = last(params, f"{side}_text") or ""
        listed = last(params, f"{side}_prompts")
        if listed:  # a pasted set carried in the address itself (JSON list)
            try:
                raw[f"{side}_set"], raw[f"{side}_prompts"] = None, json.loads(listed)
            except ValueError:
                errors.append(f"{side}_prompts: not a JSON list of prompts")
        elif choice == "custom" or (not choice and text.strip()):
            raw[f"{side}_set"] = None
            raw[f"{side}_prompts"] = disc.parse_prompt_lines(text)
        elif choice.startswith("sha:"):
            got = pasted_sets.lookup(store, choice)
            if got is None:
                errors.append(f"{side}_set: no pasted set {choice} in this server's store; paste it again")
            raw[f"{side}_set"] = None
            raw[f"{side}_prompts"] = got or []
        else:
            raw[f"{side}_set"] = choice
    for k in KNOBS:
        v = last(params, k)
        if v not in (None, ""):
            raw[k] = v
    if errors:
        raise FormError(errors)
    return validated(DiscoverRequest, raw)


def page_url(inputs: dict) -> str | None:
    """The address that reproduces this view (non-default inputs; pasted sets by hash)."""
    q: dict = {}
    pasted = {}
    for side in ("concept", "contrast"):
        prompts = inputs.get(f"{side}_prompts")
        if prompts:
            pasted[side] = prompts
        elif inputs.get(f"{side}_set") != DEFAULTS[f"{side}_set"]:
            q[f"{side}_set"] = inputs.get(f"{side}_set") or ""
    for k in KNOBS:
        if inputs.get(k) is not None and inputs.get(k) != DEFAULTS.get(k):
            q[k] = inputs[k]
    q["run"] = "1"
    return cap_url("/discover?" + urlencode(pasted_sets.address_sets(q, pasted, "/discover", MAX_URL)))


CODEC = Codec("/discover", page_url, parse_inputs, page="Discover")


def _form_values(params, inputs: dict | None) -> dict:
    """What the form shows: the inputs, with pasted sets as text."""
    v = dict(DEFAULTS)
    if inputs:
        v.update(inputs)
    for side in ("concept", "contrast"):
        if v.get(f"{side}_prompts"):
            v[f"{side}_choice"] = "custom"
            v[f"{side}_text"] = "\n".join(v[f"{side}_prompts"])
        else:
            v[f"{side}_choice"] = v.get(f"{side}_set") or "custom"
            v[f"{side}_text"] = ""
    return v


@router.get("/discover", response_class=HTMLResponse)
def discover_page(request: Request, engine: EngineDep, settings: SettingsDep):
    """The page: form (filled from the query) and, with run=1, the result area starts the job on load."""
    params = request.query_params
    errors, inputs = [], None
    try:
        inputs = parse_inputs(params, request.app.state.store).model_dump()
    except FormError as exc:
        errors = exc.errors
    run = last(params, "run") in ("1", "true", "on") and not errors
    return render_page(request, "discover.html", {
        "engine": engine, "page": "discover", "sets": shipped_sets(), "tab_title": CODEC.title(inputs),
        "form": _form_values(params, inputs), "errors": errors, "run": run,
        "widths": {n: int(s.cfg.d_sae) for n, s in engine.saes.items()},
        "neuronpedia": {engine.profile.coarse.name: engine.profile.coarse.neuronpedia,
                        engine.profile.fine.name: engine.profile.fine.neuronpedia}})


PAGES = JobPages(KIND, "fragments/discovery.html", "fragments/discovery_progress.html")


def start_keeping_sets(jobs, engine, settings, req: DiscoverRequest):
    """Start the job; its pasted sets go into the store first, so the address pushed after it opens anywhere."""
    pasted_sets.keep_sides(getattr(jobs, "store", None), req)
    return start_job(jobs, engine, settings, req)


add_job_page_routes(router, "/discover", PAGES, CODEC, start_keeping_sets, job_or_404)


@router.get("/discover/jobs/{job_id}/view", response_class=HTMLResponse)
def discover_view(request: Request, job_id: str, jobs: JobsDep):
    """Re-render a finished job's result with other thresholds / histogram feature (no recomputation)."""
    job = job_or_404(jobs, job_id)
    if job.state != "done":
        return PAGES.fragment(request, job)
    inputs = dict(job.meta["inputs"])
    raw = dict(inputs)
    for k in VIEW_KNOBS:
        v = last(request.query_params, k)
        if v not in (None, ""):
            raw[k] = v
    try:
        inputs = DiscoverRequest.model_validate(raw).model_dump()
    except ValidationError as exc:
        return PAGES.errors(request, errors_of(exc), 422)
    # GO/NO-GO recomputed at the threshold shown, so a saved view is what a re-run with these inputs returns
    result = with_threshold(job.result, inputs["cos_threshold"])
    ctx = {"inputs": inputs, "result": result, "kind": KIND, "job_id": job.id}
    return render_fragment(request, "fragments/discovery.html", ctx, CODEC.address(inputs))
