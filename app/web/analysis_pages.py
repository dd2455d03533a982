"""The analysis view's htmx fragments (token strip + per-token SAE panels + logit lens, feature cards).

Fragments are rendered from plain dicts only (the saved-explorations contract): analysis.html from
{inputs, result, kind}; feature_card.html from {card, inputs}. The page URL carries the inputs
(`/?prompt=...&system_prompt=...&feature=fine:123`), pushed with HX-Push-Url after each htmx request.
"""
from __future__ import annotations

from urllib.parse import urlencode

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse
from pydantic import ValidationError

from app.api.analysis import AnalyzeRequest, run_analysis, run_feature
from app.api.deps import EngineDep, SettingsDep
from app.api.schemas import PromptFields
from app.engine.engine import EngineBusy
from app.viz.lens import lens_figure, visible
from app.web.templating import errors_of, render_fragment, templates

router = APIRouter(tags=["pages"], include_in_schema=False)
KIND = "analysis"
MAX_PUSHED_URL = 8_000  # longer addresses are not pushed (servers cap request lines at ~16 KB)
templates.env.filters.setdefault("lens_figure", lens_figure)
templates.env.filters.setdefault("visible", visible)

TRUE, FALSE = {"1", "true", "on", "yes"}, {"0", "false", "off", "no"}


def _last(params, key: str):
    """Last value of a form / query key (a checkbox after its hidden default wins)."""
    vals = params.getlist(key) if hasattr(params, "getlist") else [params[key]] if key in params else []
    return vals[-1] if vals else None


def _flag(value, default: bool | None):
    if value is None or value == "" or value == "auto":
        return default
    v = str(value).strip().lower()
    return True if v in TRUE else False if v in FALSE else value  # anything else: pydantic names the field


def parse_inputs(params) -> AnalyzeRequest:
    """AnalyzeRequest from query or form parameters (raises pydantic ValidationError naming the field)."""
    raw = {"prompt": _last(params, "prompt") or "", "lens": _flag(_last(params, "lens"), True),
           "include_sinks": _flag(_last(params, "include_sinks"), False)}
    if sp := _last(params, "system_prompt"):
        raw["system_prompt"] = sp
    if (chat := _flag(_last(params, "chat"), None)) is not None:
        raw["chat"] = chat
    if (top_k := _last(params, "top_k")) not in (None, ""):
        raw["top_k"] = top_k
    return AnalyzeRequest.model_validate(raw)


def page_url(inputs: dict, feature: str | None = None) -> str | None:
    """The address that reproduces this view (only non-default inputs); None when too long to push."""
    q = {"prompt": inputs["prompt"]}
    if inputs.get("system_prompt"):
        q["system_prompt"] = inputs["system_prompt"]
    if inputs.get("chat") is not None:
        q["chat"] = "on" if inputs["chat"] else "off"
    if inputs.get("top_k", 10) != 10:
        q["top_k"] = inputs["top_k"]
    if inputs.get("include_sinks"):
        q["include_sinks"] = "1"
    if not inputs.get("lens", True):
        q["lens"] = "0"
    if feature:
        q["feature"] = feature
    url = "/?" + urlencode(q)
    return url if len(url) <= MAX_PUSHED_URL else None


def parse_feature(value: str | None, widths: dict) -> tuple[str, int] | None:
    """'fine:123' -> ("fine", 123); None for anything malformed or out of range."""
    if not value or ":" not in value:
        return None
    sae, _, idx = value.partition(":")
    if sae not in widths or not idx.isdigit() or not 0 <= int(idx) < widths[sae]:
        return None
    return sae, int(idx)


def analysis_view(engine, settings, params) -> dict:
    """Context for the analysis part of the page: {inputs, result, kind[, card][, errors]} (+ status)."""
    try:
        req = parse_inputs(params)
    except ValidationError as exc:
        return {"inputs": None, "result": None, "kind": KIND, "errors": errors_of(exc), "status": 422}
    inputs = req.model_dump()
    ctx = {"inputs": inputs, "result": None, "kind": KIND, "status": 200}
    try:
        ctx["result"] = run_analysis(engine, settings, req).model_dump()
        feat = parse_feature(_last(params, "feature"), ctx["result"]["sae_widths"])
        if feat:
            ctx["card"] = feature_dict(engine, settings, feat[0], feat[1], inputs)
            ctx["feature"] = f"{feat[0]}:{feat[1]}"
    except HTTPException as exc:
        ctx.update(errors=errors_of(exc), status=exc.status_code)
    except EngineBusy as exc:
        ctx.update(errors=[str(exc)], status=503, retry_after=exc.retry_after)
    return ctx


def feature_dict(engine, settings, sae: str, index: int, inputs: dict) -> dict:
    prompt = PromptFields(prompt=inputs["prompt"], system_prompt=inputs.get("system_prompt"), chat=inputs.get("chat"))
    return run_feature(engine, settings, sae, index, top=12, prompt=prompt,
                       include_sinks=bool(inputs.get("include_sinks"))).model_dump()




@router.post("/fragments/analysis", response_class=HTMLResponse)
async def analysis_fragment(request: Request, engine: EngineDep, settings: SettingsDep):
    """The form posts here; answers the analysis fragment and pushes the reproducing address."""
    form = await request.form()
    from starlette.concurrency import run_in_threadpool

    ctx = await run_in_threadpool(analysis_view, engine, settings, form)
    push = page_url(ctx["inputs"]) if ctx.get("result") else None
    return render_fragment(request, "fragments/analysis.html", ctx, push)


@router.post("/fragments/feature", response_class=HTMLResponse)
async def feature_fragment(request: Request, engine: EngineDep, settings: SettingsDep):
    """A feature card for (sae, index) with its activation on the analysed prompt."""
    form = await request.form()
    from starlette.concurrency import run_in_threadpool

    def work():
        try:
            req = parse_inputs(form)
        except ValidationError as exc:
            return {"card": None, "inputs": None, "errors": errors_of(exc), "status": 422}
        inputs = req.model_dump()
        sae, idx = _last(form, "sae") or "", _last(form, "index") or ""
        if sae not in engine.saes or not idx.isdigit():
            return {"card": None, "inputs": inputs, "status": 422,
                    "errors": [f"sae/index: expected one of {', '.join(engine.saes)} and a feature index >= 0"]}
        try:
            return {"card": feature_dict(engine, settings, sae, int(idx), inputs), "inputs": inputs, "status": 200}
        except HTTPException as exc:
            return {"card": None, "inputs": inputs, "errors": errors_of(exc), "status": exc.status_code}
        except EngineBusy as exc:
            return {"card": None, "inputs": inputs, "errors": [str(exc)], "status": 503, "retry_after": exc.retry_after}

    ctx = await run_in_threadpool(work)
    push = page_url(ctx["inputs"], f"{ctx['card']['sae']}:{ctx['card']['index']}") if ctx.get("card") else None
    return render_fragment(request, "fragments/feature_card.html", ctx, push)
