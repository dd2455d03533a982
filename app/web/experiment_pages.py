"""The /experiment page and its htmx fragments: the form, the job's progress bar (polled), the result.

templates/fragments/experiment.html renders from {inputs, result, kind} only (saved-explorations contract).
The page URL carries the inputs (`/experiment?anchor=596&children=[1,2]&run=1`); a discovery result links here
("Test steering") with the coarse feature and its blue matches as children.
"""
from __future__ import annotations

import json
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from app.api.deps import EngineDep, SettingsDep
from app.api.discover import shipped_sets
from app.api.experiment import KIND, ExperimentRequest, job_or_404, start_job
from app.engine.discovery import parse_prompt_lines
from app.web.codecs import Codec
from app.web.forms import FormError, cap_url, last, validated
from app.web.jobs_pages import JobPages, add_job_page_routes
from app.web.templating import render_page

router = APIRouter(tags=["pages"], include_in_schema=False)

LISTS = ("children", "strengths", "modes", "words")
SCALARS = ("anchor", "concept_set", "contrast_set", "eval_set", "n_prompts", "matched_norm", "max_new_tokens",
           "temperature", "top_p", "n_seeds", "seed", "probe_layer", "chat")


def _list(text: str, key: str):
    """'[1, 2]' (JSON, as in the URL) or '1, 2' / one per line (the form)."""
    text = text.strip()
    if text.startswith("["):
        return json.loads(text)
    sep = "\n" if key == "words" and "\n" in text else ","
    return [x.strip() for x in text.split(sep) if x.strip()]


def parse_inputs(params) -> ExperimentRequest:
    """ExperimentRequest from query/form fields (lists as JSON or comma-separated; eval_text pasted one per line)."""
    raw: dict = {}
    try:
        for k in SCALARS:
            v = last(params, k)
            if v not in (None, ""):
                raw[k] = v
        for k in ("matched_norm", "chat"):
            if k in raw:
                raw[k] = str(raw[k]).lower() in ("1", "true", "on", "yes")
        for k in LISTS:
            v = last(params, k)
            if v not in (None, ""):
                raw[k] = _list(str(v), k)
        ev = last(params, "eval_text")
        if ev and ev.strip():
            raw["eval_prompts"] = parse_prompt_lines(ev)
            raw["eval_set"] = None
        for side in ("eval", "concept", "contrast"):  # prompts given as a list (a forked view's address) win
            if ep := last(params, f"{side}_prompts"):
                raw[f"{side}_prompts"] = json.loads(ep)
                raw[f"{side}_set"] = None
    except (ValueError, TypeError) as exc:
        raise FormError([f"input: {exc}"]) from None
    if "anchor" not in raw:
        raise FormError(["anchor: give a coarse feature index"])
    return validated(ExperimentRequest, raw)


def page_url(inputs: dict) -> str | None:
    """The address that reproduces this view (lists as compact JSON; defaults left out)."""
    q = {}
    base = ExperimentRequest(anchor=0).model_dump()
    for k, v in inputs.items():
        if v is None or (k != "anchor" and v == base.get(k)):
            continue
        q[k] = json.dumps(v, separators=(",", ":")) if isinstance(v, (list, dict)) else (str(v).lower() if isinstance(v, bool) else v)
    q["run"] = "1"
    return cap_url("/experiment?" + urlencode(q))


CODEC = Codec("/experiment", page_url, parse_inputs)


def test_steering_url(inputs: dict, result: dict, coarse: int, limit: int = 8) -> str:
    """/experiment for a discovery result's coarse feature with its blue matches (cosine and correlation above the
    thresholds; best cosine first) as children, on the same concept/contrast sets."""
    m = result.get("mapping") or {}
    children = []
    if coarse in m.get("coarse", []):
        i = m["coarse"].index(coarse)
        cos_t, corr_t = inputs.get("cos_threshold", 0.3), inputs.get("corr_threshold", 0.3)
        blue = [(c, f) for f, c, r in zip(m["fine"], m["cos"][i], m["corr"][i]) if c >= cos_t and r >= corr_t]
        children = [f for _, f in sorted(blue, key=lambda t: -t[0])][:limit]
    q = {"anchor": coarse}
    if children:
        q["children"] = json.dumps(children, separators=(",", ":"))
    for side in ("concept", "contrast"):
        if inputs.get(f"{side}_set") and not inputs.get(f"{side}_prompts"):
            q[f"{side}_set"] = inputs[f"{side}_set"]
    return "/experiment?" + urlencode(q)


def _form_values(inputs: dict | None) -> dict:
    v = ExperimentRequest(anchor=0).model_dump()
    v["anchor"] = None
    if inputs:
        v.update(inputs)
    v["children_text"] = ", ".join(str(x) for x in v.get("children") or [])
    v["strengths_text"] = ", ".join(f"{x:g}" for x in v.get("strengths") or [])
    v["words_text"] = ", ".join(v.get("words") or [])
    v["eval_text"] = "\n".join(v.get("eval_prompts") or [])
    return v


@router.get("/experiment", response_class=HTMLResponse)
def experiment_page(request: Request, engine: EngineDep, settings: SettingsDep):
    """The page: the form (filled from the query) and, with run=1, the result area starts the job on load."""
    params = request.query_params
    errors, inputs = [], None
    if last(params, "anchor") is not None:
        try:
            inputs = parse_inputs(params).model_dump()
        except FormError as exc:
            errors = exc.errors
    run = last(params, "run") in ("1", "true", "on") and inputs is not None and not errors
    layer = int(engine.hook_name.split(".")[1])
    from app.engine.experiment import probe_layer_for

    return render_page(request, "experiment.html", {
        "engine": engine, "page": "experiment", "sets": shipped_sets(), "form": _form_values(inputs), "errors": errors,
        "run": run, "widths": {n: int(s.W_dec.shape[0]) for n, s in engine.saes.items()},
        "probe_layer": probe_layer_for(engine.model.cfg.n_layers, layer), "hook_layer": layer})


PAGES = JobPages(KIND, "fragments/experiment.html", "fragments/experiment_progress.html")
add_job_page_routes(router, "/experiment", PAGES, CODEC, start_job, job_or_404)
