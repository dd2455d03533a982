"""Pages /generate (generation, steering side by side, dose-response) and /temperature (temperature and
system-prompt views), with their htmx fragments.

Fragments are rendered from {inputs, result, kind} only (saved-explorations contract). Page addresses carry
the inputs in the grammar of app/web/urls.py (`/generate?prompt=...&f=coarse:12:add:8&view=steer`).
"""
from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from app.api.deps import EngineDep, SettingsDep, StreamsDep
from app.api.generate import (
    GenerateRequest,
    run_dose,
    run_generate,
    run_steer,
    run_system_shift,
    run_temperature,
)
from app.api.generate.stream import stream_generation
from app.engine.engine import EngineBusy
from app.explorations_registry import snapshot_context
from app.web.forms import errors_of, last, values
from app.web.templating import render_fragment, render_page, templates_of
from app.web.urls import KIND_OF_VIEW as KINDS
from app.web.urls import from_query, parse_features, to_url

router = APIRouter(tags=["pages"], include_in_schema=False)
GEN_VIEWS = {"generation": ("fragments/generation.html", run_generate),
             "steer": ("fragments/steering.html", run_steer),
             "dose": ("fragments/dose.html", run_dose)}
TEMP_VIEWS = {"temperature": ("fragments/temperature.html", run_temperature),
              "system_shift": ("fragments/system_shift.html", run_system_shift)}


def compute(engine, settings, view: str, params, table: dict) -> dict:
    """{inputs, result, kind} (+ errors, status) for one view, its request read by the page's grammar."""
    _, runner = table[view]
    ctx = {"inputs": None, "result": None, "kind": KINDS[view], "status": 200}
    try:
        req = from_query(KINDS[view], params)
    except ValidationError as exc:
        ctx.update(errors=errors_of(exc), status=422)
        return ctx
    ctx["inputs"] = req.model_dump()
    try:
        ctx["result"] = runner(engine, settings, req).model_dump()
    except HTTPException as exc:
        ctx.update(errors=errors_of(exc), status=exc.status_code)
    except EngineBusy as exc:
        ctx.update(errors=[str(exc)], status=503, retry_after=exc.retry_after)
    except IndexError as exc:  # defensive: never a 500 for an out-of-range index
        ctx.update(errors=[str(exc)], status=422)
    return ctx


def _form_values(params) -> dict:
    """Raw values to refill the page's form from its address."""
    return {"raw": {k: last(params, k) for k in params.keys()}, "features": parse_features(params),
            "temps": values(params, "t")}


@router.get("/generate", response_class=HTMLResponse)
async def generate_page(request: Request, engine: EngineDep, settings: SettingsDep):
    params = request.query_params
    view = last(params, "view")
    ctx = {"engine": engine, "page": "generate", **_form_values(params),
           "widths": {k: int(s.cfg.d_sae) for k, s in engine.saes.items()}, "view": None}
    status = 200
    if view in GEN_VIEWS and last(params, "prompt"):
        vctx = await run_in_threadpool(compute, engine, settings, view, params, GEN_VIEWS)
        status = vctx.pop("status", 200) if vctx.get("errors") else 200
        ctx.update(view=view, vctx=vctx, fragment=GEN_VIEWS[view][0])
    return render_page(request, "generate.html", ctx, status)


@router.get("/temperature", response_class=HTMLResponse)
async def temperature_page(request: Request, engine: EngineDep, settings: SettingsDep):
    params = request.query_params
    view = last(params, "view")
    ctx = {"engine": engine, "page": "temperature", **_form_values(params),
           "widths": {k: int(s.cfg.d_sae) for k, s in engine.saes.items()}, "view": None}
    status = 200
    if view in TEMP_VIEWS and last(params, "prompt"):
        vctx = await run_in_threadpool(compute, engine, settings, view, params, TEMP_VIEWS)
        status = vctx.pop("status", 200) if vctx.get("errors") else 200
        ctx.update(view=view, vctx=vctx, fragment=TEMP_VIEWS[view][0])
    return render_page(request, "temperature.html", ctx, status)


async def _gen_fragment(request: Request, engine, settings, view: str):
    form = await request.form()
    ctx = await run_in_threadpool(compute, engine, settings, view, form, GEN_VIEWS)
    push = to_url(ctx["kind"], ctx["inputs"]) if ctx.get("result") else None
    return render_fragment(request, GEN_VIEWS[view][0], ctx, push)


async def _temp_fragment(request: Request, engine, settings, view: str):
    form = await request.form()
    ctx = await run_in_threadpool(compute, engine, settings, view, form, TEMP_VIEWS)
    push = to_url(ctx["kind"], ctx["inputs"]) if ctx.get("result") else None
    return render_fragment(request, TEMP_VIEWS[view][0], ctx, push)


@router.post("/fragments/generation", response_class=HTMLResponse)
async def generation_fragment(request: Request, engine: EngineDep, settings: SettingsDep):
    return await _gen_fragment(request, engine, settings, "generation")


@router.post("/fragments/steering", response_class=HTMLResponse)
async def steering_fragment(request: Request, engine: EngineDep, settings: SettingsDep):
    return await _gen_fragment(request, engine, settings, "steer")


@router.post("/fragments/dose", response_class=HTMLResponse)
async def dose_fragment(request: Request, engine: EngineDep, settings: SettingsDep):
    return await _gen_fragment(request, engine, settings, "dose")


@router.post("/fragments/temperature", response_class=HTMLResponse)
async def temperature_fragment(request: Request, engine: EngineDep, settings: SettingsDep):
    return await _temp_fragment(request, engine, settings, "temperature")


@router.post("/fragments/system_shift", response_class=HTMLResponse)
async def system_shift_fragment(request: Request, engine: EngineDep, settings: SettingsDep):
    return await _temp_fragment(request, engine, settings, "system_shift")


@router.post("/fragments/generation/stream")
async def generation_stream(req: GenerateRequest, request: Request, engine: EngineDep, settings: SettingsDep,
                            streams: StreamsDep):
    """The page's streamed generation: the events of /api/generate/stream plus `save` {html}, the Save box of the
    finished generation (kind "generation"), sent before `done`."""
    def save_box(resp) -> dict:
        ctx = snapshot_context("generation", req, resp) | {"request": request, "limits": settings.limits}
        return {"save": {"html": templates_of(request).env.get_template("fragments/_save.html").render(ctx)}}

    return await stream_generation(streams, engine, settings, req, extra=save_box)
