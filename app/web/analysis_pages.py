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
from starlette.concurrency import run_in_threadpool

from app.api.analysis import AnalyzeRequest, run_analysis, run_feature
from app.api.deps import EngineDep, SettingsDep
from app.api.schemas import PromptFields
from app.engine.engine import EngineBusy
from app.web.forms import cap_url, errors_of, flag, last
from app.web.templating import render_fragment, render_page

router = APIRouter(tags=["pages"], include_in_schema=False)
KIND = "analysis"


def parse_inputs(params) -> AnalyzeRequest:
    """AnalyzeRequest from query or form parameters (raises pydantic ValidationError naming the field)."""
    raw = {"prompt": last(params, "prompt") or "", "lens": flag(last(params, "lens"), True),
           "include_sinks": flag(last(params, "include_sinks"), False)}
    if sp := last(params, "system_prompt"):
        raw["system_prompt"] = sp
    if (chat := flag(last(params, "chat"), None)) is not None:
        raw["chat"] = chat
    if (top_k := last(params, "top_k")) not in (None, ""):
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
    return cap_url("/?" + urlencode(q))


def parse_feature(value: str | None, widths: dict) -> tuple[str, int] | None:
    """'fine:123' -> ("fine", 123); None for anything malformed or out of range."""
    if not value or ":" not in value:
        return None
    sae, _, idx = value.partition(":")
    if sae not in widths or not idx.isdigit() or not 0 <= int(idx) < widths[sae]:
        return None
    return sae, int(idx)


def lens_vals(inputs: dict) -> dict:
    """The form fields that ask for the same analysis again (no nulls: a form field is text)."""
    out = {k: v for k, v in inputs.items() if v is not None}
    return {k: ("1" if v else "0") if isinstance(v, bool) else v for k, v in out.items()}


def analysis_view(engine, settings, params, defer_lens: bool = False) -> dict:
    """Context for the analysis part of the page: {inputs, result, kind[, card][, errors]} (+ status).

    defer_lens: compute the features only; the fragment then asks /fragments/analysis/lens for the lens
    (`lens_vals` in the context), which reads the residuals this forward kept (engine.resid_cache).
    """
    try:
        req = parse_inputs(params)
    except ValidationError as exc:
        return {"inputs": None, "result": None, "kind": KIND, "errors": errors_of(exc), "status": 422}
    inputs = req.model_dump()
    ctx = {"inputs": inputs, "result": None, "kind": KIND, "status": 200}
    try:
        if defer_lens and req.lens:
            ctx["result"] = run_analysis(engine, settings, req.model_copy(update={"lens": False})).model_dump()
            ctx["lens_vals"] = lens_vals(inputs)
        else:
            ctx["result"] = run_analysis(engine, settings, req).model_dump()
        feat = parse_feature(last(params, "feature"), ctx["result"]["sae_widths"])
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


@router.get("/", response_class=HTMLResponse)
def index(request: Request, engine: EngineDep, settings: SettingsDep):
    """The analysis view; opened with ?prompt=... it runs the analysis (a copied address reproduces the view)."""
    ctx = {"engine": engine, "page": "analyze", "inputs": None, "result": None, "kind": KIND,
           "raw": dict(request.query_params)}
    status = 200
    if "prompt" in request.query_params:
        view = analysis_view(engine, settings, request.query_params)
        status = view.pop("status", 200)
        view.pop("retry_after", None)
        ctx.update(view)
    return render_page(request, "index.html", ctx, status)


@router.post("/fragments/analysis", response_class=HTMLResponse)
async def analysis_fragment(request: Request, engine: EngineDep, settings: SettingsDep):
    """The form posts here; answers the analysis fragment and pushes the reproducing address."""
    form = await request.form()
    ctx = await run_in_threadpool(analysis_view, engine, settings, form, True)  # features first, the lens after
    push = page_url(ctx["inputs"]) if ctx.get("result") else None
    return render_fragment(request, "fragments/analysis.html", ctx, push)


@router.post("/fragments/analysis/lens", response_class=HTMLResponse)
async def analysis_lens_fragment(request: Request, engine: EngineDep, settings: SettingsDep):
    """The lens of an analysis fragment, asked for once its features are drawn: no forward when the features'
    residuals are still cached; the Save box comes again (out of band) with the complete result."""
    form = await request.form()
    ctx = await run_in_threadpool(analysis_view, engine, settings, form)
    return render_fragment(request, "fragments/analysis_lens.html", ctx)


@router.post("/fragments/feature", response_class=HTMLResponse)
async def feature_fragment(request: Request, engine: EngineDep, settings: SettingsDep):
    """A feature card for (sae, index) with its activation on the analysed prompt."""
    form = await request.form()

    def work():
        try:
            req = parse_inputs(form)
        except ValidationError as exc:
            return {"card": None, "inputs": None, "errors": errors_of(exc), "status": 422}
        inputs = req.model_dump()
        sae, idx = last(form, "sae") or "", last(form, "index") or ""
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
