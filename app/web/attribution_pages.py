"""Which features drive a token: the analysis view's panel (htmx fragment) and a page of its own
(/attribution?prompt=...&position=...&target=...) for copied addresses and Fork.

templates/fragments/attribution.html is rendered from {inputs, result, kind} only.
"""
from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from app.api.attribution import KIND, AttributionRequest, run_attribution
from app.api.deps import EngineDep, SettingsDep
from app.engine.engine import EngineBusy
from app.explorations_registry import inputs_to_query
from app.web.forms import cap_url, errors_of, flag, last
from app.web.templating import render_fragment, render_page

router = APIRouter(tags=["pages"], include_in_schema=False)
DEFAULTS = {k: f.default for k, f in AttributionRequest.model_fields.items()}


def parse_inputs(params) -> AttributionRequest:
    """AttributionRequest from query or form fields (empty optional fields are left out)."""
    raw = {}
    for name in AttributionRequest.model_fields:
        v = last(params, name)
        if v is None or (name != "prompt" and isinstance(v, str) and v == ""):
            continue
        raw[name] = v
    raw.setdefault("prompt", "")
    if "chat" in raw:
        raw["chat"] = flag(raw["chat"], None)
    return AttributionRequest.model_validate(raw)


def page_url(inputs: dict) -> str | None:
    q = {k: v for k, v in inputs.items() if k == "prompt" or (v is not None and v != DEFAULTS.get(k))}
    return cap_url("/attribution?" + inputs_to_query(q))


def attribution_view(engine, settings, params) -> dict:
    try:
        req = parse_inputs(params)
    except ValidationError as exc:
        return {"inputs": None, "result": None, "kind": KIND, "errors": errors_of(exc), "status": 422}
    ctx = {"inputs": req.model_dump(), "result": None, "kind": KIND, "status": 200}
    try:
        ctx["result"] = run_attribution(engine, settings, req).model_dump()
    except HTTPException as exc:
        ctx.update(errors=errors_of(exc), status=exc.status_code)
    except EngineBusy as exc:
        ctx.update(errors=[str(exc)], status=503, retry_after=exc.retry_after)
    return ctx


@router.get("/attribution", response_class=HTMLResponse)
def attribution_page(request: Request, engine: EngineDep, settings: SettingsDep):
    ctx = {"engine": engine, "page": "analyze", "inputs": None, "result": None, "kind": KIND,
           "raw": dict(request.query_params)}
    status = 200
    if "prompt" in request.query_params:
        view = attribution_view(engine, settings, request.query_params)
        status = view.pop("status", 200)
        view.pop("retry_after", None)
        ctx.update(view)
    return render_page(request, "attribution.html", ctx, status)


@router.post("/fragments/attribution", response_class=HTMLResponse)
async def attribution_fragment(request: Request, engine: EngineDep, settings: SettingsDep):
    """The analysis view's "which features drive this token" form posts here. No history push: the panel sits
    inside the analysis view, whose address stays; the result's Save box and its own link share it."""
    form = await request.form()
    ctx = await run_in_threadpool(attribution_view, engine, settings, form)
    return render_fragment(request, "fragments/attribution.html", ctx, None)
