"""The split map page (/splits?coarse=N...) and its htmx fragment.

templates/fragments/split_map.html is rendered from {inputs, result, kind} only (the saved-explorations
contract). The page URL carries the inputs (`inputs_to_query`), so a copied address reproduces the view.
"""
from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from app.api.deps import EngineDep, SettingsDep
from app.api.splits import KIND, SplitMapRequest, run_split_map
from app.engine.engine import EngineBusy
from app.explorations_registry import inputs_to_query
from app.web.forms import cap_url, errors_of, flag, last
from app.web.templating import render_fragment, render_page

router = APIRouter(tags=["pages"], include_in_schema=False)
DEFAULTS = {k: f.default for k, f in SplitMapRequest.model_fields.items() if k != "coarse"}


def parse_inputs(params) -> SplitMapRequest:
    """SplitMapRequest from query or form fields (empty fields take their defaults)."""
    raw = {}
    for name in SplitMapRequest.model_fields:
        v = last(params, name)
        if v is None or (isinstance(v, str) and not v.strip() and name not in ("prompt", "system_prompt")):
            continue
        raw[name] = v
    if "chat" in raw:
        raw["chat"] = flag(raw["chat"], None)
    for k in ("prompt", "system_prompt"):
        if k in raw and not str(raw[k]).strip():
            raw.pop(k)
    return SplitMapRequest.model_validate(raw)


def page_url(inputs: dict) -> str | None:
    """The address that reproduces this split map (non-default inputs only)."""
    q = {k: v for k, v in inputs.items() if k == "coarse" or (v is not None and v != DEFAULTS.get(k))}
    return cap_url("/splits?" + inputs_to_query(q))


def split_view(engine, settings, params) -> dict:
    try:
        req = parse_inputs(params)
    except ValidationError as exc:
        return {"inputs": None, "result": None, "kind": KIND, "errors": errors_of(exc), "status": 422}
    ctx = {"inputs": req.model_dump(), "result": None, "kind": KIND, "status": 200}
    try:
        ctx["result"] = run_split_map(engine, settings, req).model_dump()
    except HTTPException as exc:
        ctx.update(errors=errors_of(exc), status=exc.status_code)
    except EngineBusy as exc:
        ctx.update(errors=[str(exc)], status=503, retry_after=exc.retry_after)
    return ctx


@router.get("/splits", response_class=HTMLResponse)
def splits_page(request: Request, engine: EngineDep, settings: SettingsDep):
    """The split map of ?coarse=N (the form alone without it)."""
    ctx = {"engine": engine, "page": "splits", "inputs": None, "result": None, "kind": KIND,
           "raw": dict(request.query_params), "atlas_status": getattr(engine, "atlas_status", None)}
    status = 200
    if "coarse" in request.query_params:
        view = split_view(engine, settings, request.query_params)
        status = view.pop("status", 200)
        view.pop("retry_after", None)
        ctx.update(view)
    return render_page(request, "splits.html", ctx, status)


@router.post("/fragments/split_map", response_class=HTMLResponse)
async def split_fragment(request: Request, engine: EngineDep, settings: SettingsDep):
    form = await request.form()
    ctx = await run_in_threadpool(split_view, engine, settings, form)
    push = page_url(ctx["inputs"]) if ctx.get("result") else None
    return render_fragment(request, "fragments/split_map.html", ctx, push)
