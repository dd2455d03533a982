"""The analysis view's htmx fragments (token strip + per-token SAE panels + logit lens, feature cards).

Fragments are rendered from plain dicts only (the saved-explorations contract): analysis.html from
{inputs, result, kind} (an open feature is `inputs.feature`, its card `result.card`); feature_card.html from
{card, inputs}. The page URL carries the inputs (`/?prompt=...&system_prompt=...&feature=fine:123`), pushed with
HX-Push-Url after each htmx request.
"""
from __future__ import annotations

import re
from functools import partial
from urllib.parse import urlencode

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse
from starlette.concurrency import run_in_threadpool

from app.api.analysis import AnalyzeRequest, run_analysis
from app.api.analysis.schemas import FEATURE_PATTERN
from app.api.deps import EngineDep, SettingsDep
from app.api.errors import check_feature_index, errors_of
from app.web.codecs import Codec
from app.web.forms import cap_url, flag, last
from app.web.templating import render_fragment, render_page
from app.web.views import form_fragment, query_page, run_view

router = APIRouter(tags=["pages"], include_in_schema=False)
KIND = "analysis"
FEATURE_RE = re.compile(FEATURE_PATTERN)


def parse_inputs(params) -> AnalyzeRequest:
    """AnalyzeRequest from query or form parameters (raises pydantic ValidationError naming the field)."""
    raw = {"prompt": last(params, "prompt") or "", "lens": flag(last(params, "lens"), True),
           "include_sinks": flag(last(params, "include_sinks"), False)}
    if sp := last(params, "system_prompt"):
        raw["system_prompt"] = sp
    if (chat := flag(last(params, "chat"), None)) is not None:
        raw["chat"] = chat
    if flag(last(params, "no_default_system"), False):
        raw["no_default_system"] = True
    if (top_k := last(params, "top_k")) not in (None, ""):
        raw["top_k"] = top_k
    if rank := last(params, "rank"):
        raw["rank"] = rank
    if (kind := last(params, "lens_kind")) not in (None, ""):
        raw["lens_kind"] = kind
    if (feature := last(params, "feature")) and FEATURE_RE.match(feature):  # a malformed one is ignored
        raw["feature"] = feature
    return AnalyzeRequest.model_validate(raw)


def known_feature(engine, feature: str | None) -> bool:
    """'sae:index' names a feature of this engine's SAEs."""
    sae, _, idx = (feature or "").partition(":")
    return sae in engine.saes and idx.isdigit() and int(idx) < int(engine.saes[sae].cfg.d_sae)


def feature_problems(engine, feature: str | None) -> list[str]:
    """Why an address's ?feature=sae:index opens no card (one line naming the range), or [] when it is a feature."""
    if not feature:
        return []
    m = re.fullmatch(r"([^:]*):(-?[0-9]{1,12})", feature)
    if m is None:
        return [f"feature: {feature!r} is not sae:index (e.g. feature=coarse:12)"]
    try:
        check_feature_index(engine.saes, m[1], int(m[2]), ["feature"])
    except HTTPException as exc:
        return [line if line.startswith("feature: ") else f"feature: {line}" for line in errors_of(exc)]
    return []


def page_url(inputs: dict) -> str | None:
    """The address that reproduces this view (only non-default inputs); None when too long to push."""
    q = {"prompt": inputs["prompt"]}
    if inputs.get("system_prompt"):
        q["system_prompt"] = inputs["system_prompt"]
    if inputs.get("chat") is not None:
        q["chat"] = "on" if inputs["chat"] else "off"
    if inputs.get("no_default_system"):
        q["no_default_system"] = "on"
    if inputs.get("top_k", 10) != 10:
        q["top_k"] = inputs["top_k"]
    if inputs.get("include_sinks"):
        q["include_sinks"] = "1"
    if not inputs.get("lens", True):
        q["lens"] = "0"
    if inputs.get("rank", "unusual") != "unusual":
        q["rank"] = inputs["rank"]
    if inputs.get("lens_kind", "logit") != "logit":
        q["lens_kind"] = inputs["lens_kind"]
    if inputs.get("feature"):
        q["feature"] = inputs["feature"]
    return cap_url("/?" + urlencode(q))


CODEC = Codec("/", page_url, parse_inputs, page="Analyze")


def analyze_url(text: str) -> str | None:
    """Analyze on `text` as it is (no chat template): "open in Analyze" under generated text; None when too long."""
    return CODEC.write({"prompt": text, "chat": False})


def lens_vals(inputs: dict) -> dict:
    """The form fields that ask for the same analysis again (no nulls: a form field is text)."""
    out = {k: v for k, v in inputs.items() if v is not None}
    return {k: ("1" if v else "0") if isinstance(v, bool) else v for k, v in out.items()}


def lens_switch_vals(inputs: dict) -> dict:
    """lens_vals without lens_kind (the switch's button gives it) and with switch=1 (the answer pushes the address)."""
    return {k: v for k, v in lens_vals(inputs).items() if k != "lens_kind"} | {"switch": "1"}


def analysis_view(engine, settings, params, defer_lens: bool = False, strict_feature: bool = False) -> dict:
    """Context for the analysis part of the page: {inputs, result, kind[, errors]} (+ status).

    defer_lens: compute the features only; the fragment then asks /fragments/analysis/lens for the lens
    (`lens_vals` in the context), which reads the residuals this forward kept (engine.resid_cache).
    strict_feature: a `feature` outside the SAE is an error (404), not left out as in a pasted address.
    """
    def parse(params) -> AnalyzeRequest:
        req = parse_inputs(params)
        if req.feature and not strict_feature and not known_feature(engine, req.feature):  # an address naming no feature opens no card
            req = req.model_copy(update={"feature": None})
        return req

    def analyse(req: AnalyzeRequest):
        return run_analysis(engine, settings, req.model_copy(update={"lens": False}) if defer_lens and req.lens else req)

    ctx = run_view(KIND, parse, params, analyse)
    ctx["lens_status"] = getattr(engine, "tuned_lens_status", "not loaded")  # the live switch (not in snapshots)
    if defer_lens and ctx["result"] is not None and ctx["inputs"]["lens"]:
        ctx["lens_vals"] = lens_vals(ctx["inputs"])
    return ctx


@router.get("/", response_class=HTMLResponse)
def index(request: Request, engine: EngineDep, settings: SettingsDep):
    """The analysis view; opened with ?prompt=... it runs the analysis (a copied address reproduces the view)."""
    problems = feature_problems(engine, last(request.query_params, "feature"))  # said in place; the rest still shown
    return render_page(request, "index.html", *query_page(request, engine, settings, "analyze", KIND, "prompt",
                                                          analysis_view, param_errors=problems))


@router.post("/fragments/analysis", response_class=HTMLResponse)
async def analysis_fragment(request: Request, engine: EngineDep, settings: SettingsDep):
    """The form posts here; answers the analysis fragment and pushes the reproducing address."""
    view = partial(analysis_view, defer_lens=True)  # features first, the lens after
    return await form_fragment(request, engine, settings, "fragments/analysis.html", view, CODEC.address)


@router.post("/fragments/analysis/lens", response_class=HTMLResponse)
async def analysis_lens_fragment(request: Request, engine: EngineDep, settings: SettingsDep):
    """The lens of an analysis fragment, asked for once its features are drawn: no forward when the features'
    residuals are still cached; the Save box comes again (out of band) with the complete result. The lens panel's
    logit / tuned switch posts here too (switch=1): then the answer pushes the address with the new lens_kind."""
    switch = last(await request.form(), "switch") == "1"
    return await form_fragment(request, engine, settings, "fragments/analysis_lens.html", analysis_view,
                               CODEC.address if switch else None)


@router.post("/fragments/feature", response_class=HTMLResponse)
async def feature_fragment(request: Request, engine: EngineDep, settings: SettingsDep):
    """A feature card for (sae, index) on the analysed prompt, and the analysis' Save box again (out of band) with
    the feature in its inputs and the card in its result, so a save keeps the open card."""
    form = await request.form()
    sae, idx = last(form, "sae") or "", last(form, "index") or ""
    if sae not in engine.saes or not idx.isdigit():
        ctx = {"card": None, "inputs": None, "status": 422,
               "errors": [f"sae/index: expected one of {', '.join(engine.saes)} and a feature index >= 0"]}
        return render_fragment(request, "fragments/feature_card.html", ctx)
    params = {k: last(form, k) for k in form.keys()} | {"feature": f"{sae}:{idx}"}
    ctx = await run_in_threadpool(analysis_view, engine, settings, params, False, True)  # out of range: 404
    ctx["card"] = (ctx.get("result") or {}).get("card")
    ctx["save_oob"] = True
    return render_fragment(request, "fragments/feature_card.html", ctx, CODEC.address(ctx["inputs"]) if ctx["card"] else None)
