"""Compare two prompts (/compare), activation patching (/patching) and attention heads (/heads): pages and htmx
fragments. templates/fragments/{compare,patching,heads}.html render from {inputs, result, kind} only; each page's
address carries its inputs (each view's codec: app/web/codecs.fields_codec; compare's tokens as JSON), so a copied address reproduces the view.
"""
from __future__ import annotations

import json

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from app.api.deps import EngineDep, SettingsDep
from app.api.patching import (
    COMPARE_KIND,
    HEADS_KIND,
    PATCHING_KIND,
    CompareRequest,
    HeadsRequest,
    PatchingRequest,
    run_compare,
    run_heads,
    run_patching,
)
from app.web.codecs import fields_codec
from app.web.forms import last, model_fields_of
from app.web.templating import render_page
from app.web.views import form_fragment, query_page, service_view

router = APIRouter(tags=["pages"], include_in_schema=False)


def _words_kept(params, raw: dict, names: tuple[str, ...]) -> dict:
    """Answer-like fields keep their leading space (model_fields_of would strip it)."""
    for name in names:
        v = last(params, name)
        if v is not None:
            raw[name] = v
    return raw


def parse_compare(params) -> CompareRequest:
    """CompareRequest from query fields (tokens as JSON) or the form (answer and wrong as two boxes)."""
    raw = model_fields_of(params, CompareRequest, keep_blank=("prompt_a", "prompt_b"), strip=False)
    raw.setdefault("prompt_a", "")
    raw.setdefault("prompt_b", "")
    if isinstance(raw.get("tokens"), str):
        try:
            raw["tokens"] = json.loads(raw["tokens"])
        except ValueError:
            pass  # validation names the field
    answer, wrong = last(params, "answer"), last(params, "wrong")
    if "tokens" not in raw and (answer or wrong):
        raw["tokens"] = [answer or "", wrong or ""]
    return CompareRequest.model_validate(raw)


def parse_patching(params) -> PatchingRequest:
    raw = model_fields_of(params, PatchingRequest, keep_blank=("clean", "corrupt"), strip=False,
                          flags=("chat", "features", "attribution"))
    for k in ("clean", "corrupt", "answer", "wrong"):
        raw.setdefault(k, "")
    return PatchingRequest.model_validate(_words_kept(params, raw, ("answer", "wrong")))


def parse_heads(params) -> HeadsRequest:
    return HeadsRequest.model_validate(model_fields_of(params, HeadsRequest))


COMPARE_CODEC = fields_codec("/compare", CompareRequest, parse_compare, always="prompt_a")
PATCHING_CODEC = fields_codec("/patching", PatchingRequest, parse_patching, always="clean")
HEADS_CODEC = fields_codec("/heads", HeadsRequest, parse_heads, always="seq_len")


compare_view = service_view(COMPARE_KIND, parse_compare, run_compare)
patching_view = service_view(PATCHING_KIND, parse_patching, run_patching)
heads_view = service_view(HEADS_KIND, parse_heads, run_heads)


@router.get("/compare", response_class=HTMLResponse)
def compare_page(request: Request, engine: EngineDep, settings: SettingsDep):
    return render_page(request, "compare.html",
                       *query_page(request, engine, settings, "compare", COMPARE_KIND, "prompt_a", compare_view))


@router.post("/fragments/compare", response_class=HTMLResponse)
async def compare_fragment(request: Request, engine: EngineDep, settings: SettingsDep):
    return await form_fragment(request, engine, settings, "fragments/compare.html", compare_view, COMPARE_CODEC.write)


@router.get("/patching", response_class=HTMLResponse)
def patching_page(request: Request, engine: EngineDep, settings: SettingsDep):
    return render_page(request, "patching.html",
                       *query_page(request, engine, settings, "patching", PATCHING_KIND, "clean", patching_view))


@router.post("/fragments/patching", response_class=HTMLResponse)
async def patching_fragment(request: Request, engine: EngineDep, settings: SettingsDep):
    return await form_fragment(request, engine, settings, "fragments/patching.html", patching_view, PATCHING_CODEC.write)


@router.get("/heads", response_class=HTMLResponse)
def heads_page(request: Request, engine: EngineDep, settings: SettingsDep):
    return render_page(request, "heads.html",
                       *query_page(request, engine, settings, "heads", HEADS_KIND, "seq_len", heads_view))


@router.post("/fragments/heads", response_class=HTMLResponse)
async def heads_fragment(request: Request, engine: EngineDep, settings: SettingsDep):
    return await form_fragment(request, engine, settings, "fragments/heads.html", heads_view, HEADS_CODEC.write)
