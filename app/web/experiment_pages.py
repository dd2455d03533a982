"""The /experiment page and its htmx fragments: the form, the job's progress bar (polled), the result.

templates/fragments/experiment.html renders from {inputs, result, kind} only (saved-explorations contract).
The page URL carries the inputs (`/experiment?anchor=596&children=[1,2]&run=1`); a discovery result links here
("Test steering") with the coarse feature, its blue matches as children and its concept and contrast sets (a shipped
name, or a pasted set's `sha:<hash>`, kept in the Store: app/web/pasted_sets.py).
"""
from __future__ import annotations

import json
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, Response

from app.api.deps import EngineDep, SettingsDep
from app.api.discover import shipped_sets
from app.api.experiment import KIND, ExperimentRequest, job_or_404, start_job
from app.core.settings import ROOT
from app.engine.discovery import parse_prompt_lines
from app.web import pasted_sets
from app.web.codecs import Codec
from app.web.forms import MAX_URL, FormError, cap_url, last, validated
from app.web.jobs_pages import JobPages, add_job_page_routes
from app.web.report_text import blocks
from app.web.templating import render_page

router = APIRouter(tags=["pages"], include_in_schema=False)

LISTS = ("children", "strengths", "modes", "words")
SCALARS = ("anchor", "n_prompts", "matched_norm", "max_new_tokens", "temperature", "top_p", "n_seeds", "seed",
           "probe_layer", "chat", "measure")
SIDES = ("concept", "contrast", "eval")


def _side(params, side: str, store, raw: dict, errors: list[str]) -> None:
    """One prompt set from the form or the address: an uploaded file (<side>_file), pasted text (<side>_text, with
    <side>_set 'custom' or empty), 'sha:<hash>' (a set pasted before, from the store), a JSON list
    (<side>_prompts, a forked view's address) or a shipped name (<side>_set)."""
    choice = (last(params, f"{side}_set") or "").strip()
    upload = last(params, f"{side}_file")
    text = last(params, f"{side}_text") or ""
    listed = last(params, f"{side}_prompts")
    if upload is not None and hasattr(upload, "file"):
        data = upload.file.read()
        if data:
            text = data.decode("utf-8", errors="replace")
            choice = "custom"
    if listed:
        raw[f"{side}_prompts"], raw[f"{side}_set"] = json.loads(listed), None
    elif choice.startswith("sha:"):
        got = pasted_sets.lookup(store, choice)
        if got is None:
            errors.append(f"{side}_set: no pasted set {choice} in this server's store; paste it again")
        raw[f"{side}_prompts"], raw[f"{side}_set"] = got or [], None
    elif choice == "custom" or (not choice and text.strip()):
        raw[f"{side}_prompts"], raw[f"{side}_set"] = parse_prompt_lines(text), None
    elif choice:
        raw[f"{side}_set"] = choice


def _list(text: str, key: str):
    """'[1, 2]' (JSON, as in the URL) or '1, 2' / one per line (the form)."""
    text = text.strip()
    if text.startswith("["):
        return json.loads(text)
    sep = "\n" if key == "words" and "\n" in text else ","
    return [x.strip() for x in text.split(sep) if x.strip()]


def parse_inputs(params, store=None) -> ExperimentRequest:
    """ExperimentRequest from query/form fields (lists as JSON or comma-separated; sets shipped, pasted, uploaded or
    sha:<hash> from the store)."""
    raw: dict = {}
    errors: list[str] = []
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
        for side in SIDES:
            _side(params, side, store, raw, errors)
    except (ValueError, TypeError) as exc:
        raise FormError([f"input: {exc}"]) from None
    if errors:
        raise FormError(errors)
    if "anchor" not in raw:
        raise FormError(["anchor: give a coarse feature index"])
    return validated(ExperimentRequest, raw)


def page_url(inputs: dict, run: bool = True) -> str | None:
    """The address that reproduces this view (lists as compact JSON; defaults left out); `run=False`: the page with
    its form filled, not started."""
    q = {}
    base = ExperimentRequest(anchor=0).model_dump()
    pasted = {side: inputs[f"{side}_prompts"] for side in SIDES if inputs.get(f"{side}_prompts")}
    for k, v in inputs.items():
        if v is None or (k != "anchor" and v == base.get(k)) or k.endswith("_prompts"):
            continue
        q[k] = json.dumps(v, separators=(",", ":")) if isinstance(v, (list, dict)) else (str(v).lower() if isinstance(v, bool) else v)
    if run:
        q["run"] = "1"
    # pasted sets inline when the address stays short, else by content hash (kept in the store when the job starts)
    return cap_url("/experiment?" + urlencode(pasted_sets.address_sets(q, pasted, "/experiment", MAX_URL)))


CODEC = Codec("/experiment", page_url, parse_inputs, page="Steering experiment")


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
    exp: dict = {"anchor": coarse, "children": children or None}
    for side in ("concept", "contrast"):  # the sets travel with the link: a shipped name, a pasted set inline or its sha
        if inputs.get(f"{side}_prompts"):
            exp[f"{side}_prompts"] = inputs[f"{side}_prompts"]
        elif inputs.get(f"{side}_set"):
            exp[f"{side}_set"] = inputs[f"{side}_set"]
    return page_url(exp, run=False) or CODEC.path  # the codec's address, not started


def _form_values(inputs: dict | None) -> dict:
    v = ExperimentRequest(anchor=0).model_dump()
    v["anchor"] = None
    if inputs:
        v.update(inputs)
    v["children_text"] = ", ".join(str(x) for x in v.get("children") or [])
    v["strengths_text"] = ", ".join(f"{x:g}" for x in v.get("strengths") or [])
    v["words_text"] = ", ".join(v.get("words") or [])
    for side in SIDES:
        v[f"{side}_text"] = "\n".join(v.get(f"{side}_prompts") or [])
        v[f"{side}_choice"] = "custom" if v.get(f"{side}_prompts") else (v.get(f"{side}_set") or "custom")
    return v


@router.get("/experiment", response_class=HTMLResponse)
def experiment_page(request: Request, engine: EngineDep, settings: SettingsDep):
    """The page: the form (filled from the query) and, with run=1, the result area starts the job on load."""
    params = request.query_params
    errors, inputs = [], None
    if last(params, "anchor") is not None:
        try:
            inputs = parse_inputs(params, request.app.state.store).model_dump()
        except FormError as exc:
            errors = exc.errors
    run = last(params, "run") in ("1", "true", "on") and inputs is not None and not errors
    layer = int(engine.hook_name.split(".")[1])
    from app.engine.experiment import probe_layer_for

    return render_page(request, "experiment.html", {
        "engine": engine, "page": "experiment", "sets": shipped_sets(), "form": _form_values(inputs), "errors": errors,
        "tab_title": CODEC.title(inputs),
        "run": run, "widths": {n: int(s.W_dec.shape[0]) for n, s in engine.saes.items()},
        "probe_layer": probe_layer_for(engine.model.cfg.n_layers, layer), "hook_layer": layer,
        "report": REPORT.exists()})


REPORT = ROOT / "docs" / "steering-experiment.md"


NO_REPORT = "No report yet: run python -m app.training.steering_suite (it writes the report at the end).\n"


@router.get("/experiment/report", response_class=HTMLResponse)
def experiment_report(request: Request, engine: EngineDep):
    """docs/steering-experiment.md as a page: the answer across concepts, its figure and the text."""
    if not REPORT.exists():
        return PlainTextResponse(NO_REPORT, status_code=404)
    # the page has its own title and shows the figure itself: the title line goes (image lines go in blocks())
    text = "\n".join(REPORT.read_text(encoding="utf-8").split("\n")[1:])
    return render_page(request, "experiment_report.html", {"engine": engine, "page": "experiment", "blocks": blocks(text)})


@router.get("/experiment/report.md", response_class=PlainTextResponse)
def experiment_report_markdown():
    """docs/steering-experiment.md as it is (python -m app.training.steering_report writes it)."""
    if not REPORT.exists():
        return PlainTextResponse(NO_REPORT, status_code=404)
    return PlainTextResponse(REPORT.read_text(encoding="utf-8"), media_type="text/markdown; charset=utf-8")


@router.get("/experiment/steering-experiment.svg")
def experiment_report_figure():
    """The report's figure (concept score against fluency per arm, per concept)."""
    svg = REPORT.with_suffix(".svg")
    if not svg.exists():
        return PlainTextResponse("no figure yet\n", status_code=404)
    return Response(svg.read_bytes(), media_type="image/svg+xml")


PAGES = JobPages(KIND, "fragments/experiment.html", "fragments/experiment_progress.html")


def start_keeping_sets(jobs, engine, settings, req: ExperimentRequest):
    """Start the job; pasted sets go into the store first, so the address pushed after it opens on any replica."""
    pasted_sets.keep_sides(getattr(jobs, "store", None), req, SIDES)
    return start_job(jobs, engine, settings, req)


add_job_page_routes(router, "/experiment", PAGES, CODEC, start_keeping_sets, job_or_404)
