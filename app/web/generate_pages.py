"""Pages /generate (generation, steering side by side, dose-response) and /temperature (temperature and
system-prompt views), with their htmx fragments.

Fragments are rendered from {inputs, result, kind} only (saved-explorations contract). Page addresses carry
the inputs: `/generate?prompt=...&f=coarse:12:add:8&view=steer` (f = sae:index:mode:value, repeatable;
view = generation | steer | dose) and `/temperature?prompt=...&t=0.2&t=1.0&view=temperature|system_shift`.
"""
from __future__ import annotations

from urllib.parse import urlencode

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from app.api.deps import EngineDep, SettingsDep
from app.api.generate import (
    DoseRequest,
    GenerateRequest,
    SteerRequest,
    SystemShiftRequest,
    TemperatureRequest,
    run_dose,
    run_generate,
    run_steer,
    run_system_shift,
    run_temperature,
)
from app.engine.engine import EngineBusy
from app.web.forms import cap_url, errors_of, flag, last, values
from app.web.templating import render_fragment, render_page

router = APIRouter(tags=["pages"], include_in_schema=False)
GEN_VIEWS = {"generation": ("fragments/generation.html", GenerateRequest, run_generate),
             "steer": ("fragments/steering.html", SteerRequest, run_steer),
             "dose": ("fragments/dose.html", DoseRequest, run_dose)}
KINDS = {"generation": "generation", "steer": "steering", "dose": "dose", "temperature": "temperature", "system_shift": "system_shift"}
TEMP_VIEWS = {"temperature": ("fragments/temperature.html", TemperatureRequest, run_temperature),
              "system_shift": ("fragments/system_shift.html", SystemShiftRequest, run_system_shift)}


def parse_features(params) -> list[dict]:
    """Feature rows from the form (f_sae/f_index/f_mode/f_value lists) or the address (f=sae:index:mode:value)."""
    feats = []
    for s in values(params, "f"):
        parts = s.split(":")
        if len(parts) >= 2 and s:
            feats.append({"sae": parts[0], "index": parts[1], "mode": parts[2] if len(parts) > 2 else "add",
                          "value": parts[3] if len(parts) > 3 else "0"})
    cols = [values(params, k) for k in ("f_sae", "f_index", "f_mode", "f_value")]
    for sae, idx, mode, val in zip(*cols):
        if idx != "":
            feats.append({"sae": sae, "index": idx, "mode": mode, "value": val or "0"})
    return feats


def raw_inputs(params) -> dict:
    """Common raw fields (strings; pydantic converts and names any bad field)."""
    raw = {"prompt": last(params, "prompt") or ""}
    for k in ("system_prompt",):
        if (v := last(params, k)) is not None:
            raw[k] = v
    if (c := flag(last(params, "chat"), None)) is not None:
        raw["chat"] = c
    for k in ("max_new_tokens", "temperature", "top_k", "top_p", "seed", "top_n"):
        if (v := last(params, k)) is not None:
            raw[k] = v
    for k in ("generated_only", "skip_sinks"):
        if (v := flag(last(params, k), None)) is not None:
            raw[k] = v
    return raw


def parse_gen(view: str, params):
    raw = raw_inputs(params)
    feats = parse_features(params)
    if view == "dose":
        raw.pop("top_n", None)
        if feats:
            raw["feature"] = feats[0]
        strengths = last(params, "strengths")
        if strengths is not None:
            raw["strengths"] = [s.strip() for s in strengths.split(",") if s.strip()]
        return DoseRequest.model_validate(raw)
    raw["steering"] = feats
    if view == "generation":
        raw.pop("top_n", None)
        return GenerateRequest.model_validate(raw)
    return SteerRequest.model_validate(raw)


def parse_temp(view: str, params):
    raw = raw_inputs(params)
    for k in ("max_new_tokens", "temperature", "seed"):
        raw.pop(k, None)
    raw["steering"] = parse_features(params)
    raw.setdefault("chat", True)  # one meaning of "no system prompt" in both views: the page's chat selector, default on
    if view == "system_shift":
        raw.pop("system_prompt", None)
        raw.pop("top_k", None)
        raw.pop("top_p", None)
        for k in ("system_a", "system_b"):
            if (v := last(params, k)) is not None:
                raw[k] = v
        return SystemShiftRequest.model_validate(raw)
    temps = values(params, "t")
    if len(temps) == 1 and "," in temps[0]:
        temps = temps[0].split(",")
    temps = [t.strip() for t in temps if t.strip()]
    if temps:
        raw["temperatures"] = temps
    return TemperatureRequest.model_validate(raw)


def compute(engine, settings, view: str, params, table: dict, parser) -> dict:
    """{inputs, result, kind} (+ errors, status) for one view."""
    _, _, runner = table[view]
    ctx = {"inputs": None, "result": None, "kind": KINDS[view], "status": 200}
    try:
        req = parser(view, params)
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


def page_url(path: str, view: str, params) -> str | None:
    """The address that reproduces a view (form fields flattened; features as f=sae:index:mode:value)."""
    q: list[tuple[str, str]] = []
    for k, v in params.multi_items():
        if k in ("f_sae", "f_index", "f_mode", "f_value", "f") or v == "":
            continue
        q.append((k, v))
    q += [("f", f"{f['sae']}:{f['index']}:{f['mode']}:{f['value']}") for f in parse_features(params)]
    q.append(("view", view))
    return cap_url(f"{path}?{urlencode(q)}")


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
        vctx = await run_in_threadpool(compute, engine, settings, view, params, GEN_VIEWS, parse_gen)
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
        vctx = await run_in_threadpool(compute, engine, settings, view, params, TEMP_VIEWS, parse_temp)
        status = vctx.pop("status", 200) if vctx.get("errors") else 200
        ctx.update(view=view, vctx=vctx, fragment=TEMP_VIEWS[view][0])
    return render_page(request, "temperature.html", ctx, status)


async def _gen_fragment(request: Request, engine, settings, view: str):
    form = await request.form()
    ctx = await run_in_threadpool(compute, engine, settings, view, form, GEN_VIEWS, parse_gen)
    push = page_url("/generate", view, form) if ctx.get("result") else None
    return render_fragment(request, GEN_VIEWS[view][0], ctx, push)


async def _temp_fragment(request: Request, engine, settings, view: str):
    form = await request.form()
    ctx = await run_in_threadpool(compute, engine, settings, view, form, TEMP_VIEWS, parse_temp)
    push = page_url("/temperature", view, form) if ctx.get("result") else None
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
