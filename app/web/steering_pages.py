"""Pages /generate (generation, steering side by side, dose-response) and /temperature (temperature and
system-prompt views), with their htmx fragments.

Fragments are rendered from {inputs, result, kind} only (saved-explorations contract). Page addresses carry
the inputs in the grammar of app/web/urls.py (`/generate?prompt=...&f=coarse:12:add:8&view=steer`).
"""
from __future__ import annotations

from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from app.api.deps import EngineDep, SettingsDep, StreamsDep
from app.api.errors import invalid
from app.api.steering.service import run_dose, run_generate, run_steer, run_system_shift, run_temperature
from app.api.steering.stream import stream_generation
from app.explorations.registry import snapshot_context
from app.web.forms import last, values
from app.web.templating import render_page, templates_of
from app.web.urls import CODECS, feature_problems, parse_features
from app.web.urls import KIND_OF_VIEW as KINDS
from app.web.views import form_fragment, run_view

router = APIRouter(tags=["pages"], include_in_schema=False)
GEN_VIEWS = {"generation": ("fragments/generation.html", run_generate),
             "steer": ("fragments/steering.html", run_steer),
             "dose": ("fragments/dose.html", run_dose)}
TEMP_VIEWS = {"temperature": ("fragments/temperature.html", run_temperature),
              "system_shift": ("fragments/system_shift.html", run_system_shift)}


def compute(engine, settings, view: str, params, table: dict) -> dict:
    """{inputs, result, kind} (+ errors, status) for one view, its request read by the page's grammar."""
    _, runner = table[view]
    # IndexError is defensive: never a 500 for an out-of-range index
    return run_view(KINDS[view], CODECS[KINDS[view]].read, params,
                    lambda req: runner(engine, settings, req), invalid=(IndexError,))


def _form_values(params) -> dict:
    """Raw values to refill the page's form from its address."""
    return {"raw": {k: last(params, k) for k in params.keys()}, "features": parse_features(params),
            "temps": values(params, "t")}


async def _views_page(request: Request, engine, settings, page: str, table: dict):
    """The page `page`.html; with ?view=<one of table>&prompt=..., that view computed inside it."""
    params = request.query_params
    view = last(params, "view")
    ctx = {"engine": engine, "page": page, **_form_values(params),
           "widths": {k: int(s.cfg.d_sae) for k, s in engine.saes.items()}, "view": None,
           "param_errors": feature_problems(params, engine.saes)}  # a bad f=... says so in place, not silently
    if view is not None and view not in table:
        ctx["param_errors"].append(f"view: {view!r} is not one of {', '.join(table)}")
    # the tab title: the view's codec names the view and its page (a page showing none yet: its first view's page)
    ctx["tab_title"] = (CODECS[KINDS[view]].title(ctx["raw"]) if view in table
                        else CODECS[KINDS[next(iter(table))]].title(ctx["raw"], named=False))
    status = 200
    if view in table and last(params, "prompt"):
        vctx = await run_in_threadpool(compute, engine, settings, view, params, table)
        status = vctx.pop("status", 200) if vctx.get("errors") else 200
        ctx.update(view=view, vctx=vctx, fragment=table[view][0])
    return render_page(request, f"{page}.html", ctx, status)


@router.get("/generate", response_class=HTMLResponse)
async def generate_page(request: Request, engine: EngineDep, settings: SettingsDep):
    return await _views_page(request, engine, settings, "generate", GEN_VIEWS)


@router.get("/temperature", response_class=HTMLResponse)
async def temperature_page(request: Request, engine: EngineDep, settings: SettingsDep):
    return await _views_page(request, engine, settings, "temperature", TEMP_VIEWS)


def _add_fragment_route(path: str, view: str, table: dict, name: str) -> None:
    """POST /fragments/<path>: the form's view computed, pushing the address that reproduces it."""
    async def fragment(request: Request, engine: EngineDep, settings: SettingsDep):
        return await form_fragment(request, engine, settings, table[view][0],
                                   lambda e, st, form: compute(e, st, view, form, table),
                                   CODECS[KINDS[view]].address)
    router.post(f"/fragments/{path}", response_class=HTMLResponse, name=name)(fragment)


for _path, _view, _table in (("generation", "generation", GEN_VIEWS), ("steering", "steer", GEN_VIEWS),
                             ("dose", "dose", GEN_VIEWS), ("temperature", "temperature", TEMP_VIEWS),
                             ("system_shift", "system_shift", TEMP_VIEWS)):
    _add_fragment_route(_path, _view, _table, f"{_path}_fragment")


@router.post("/fragments/generation/stream")
async def generation_stream(request: Request, engine: EngineDep, settings: SettingsDep, streams: StreamsDep):
    """The page's streamed generation of its form (read by the generation codec, as the Generate button's fragment
    reads it): the events of /api/generate/stream plus `save` {html}, the Save box of the finished generation (kind
    "generation"), and `links` {html} ("open in Analyze"), sent before `done`. The address that reproduces it comes
    in the HX-Push-Url header and its tab title, percent-encoded UTF-8, in X-Tab-Title (generate.js applies both)."""
    codec = CODECS["generation"]
    try:
        req = codec.read(await request.form())
    except ValidationError as exc:
        raise invalid(exc, ["body"]) from None

    def save_box(resp) -> dict:
        ctx = snapshot_context("generation", req, resp) | {"request": request, "limits": settings.limits}
        env = templates_of(request).env
        return {"save": {"html": env.get_template("fragments/_save.html").render(ctx)},
                "links": {"html": env.get_template("fragments/_stream_links.html").render(ctx)}}

    push = codec.address(req.model_dump())
    response = await stream_generation(streams, engine, settings, req, extra=save_box)
    if push:
        response.headers["HX-Push-Url"] = push.url
        response.headers["X-Tab-Title"] = quote(push.title or "", safe="")
    return response
