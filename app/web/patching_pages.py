"""Compare two prompts (/compare), activation patching (/patching) and attention heads (/heads): pages and htmx
fragments. templates/fragments/{compare,patching,heads}.html render from {inputs, result, kind} only; each page's
address carries its inputs (each view's codec: app/web/codecs.fields_codec; compare's tokens as JSON), so a copied address reproduces the view.
"""
from __future__ import annotations

import json

from fastapi import APIRouter

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
from app.web.views import add_view_pages

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


COMPARE_CODEC = fields_codec("/compare", CompareRequest, parse_compare, always="prompt_a", page="Compare two prompts")
PATCHING_CODEC = fields_codec("/patching", PatchingRequest, parse_patching, always="clean", page="Activation patching")
HEADS_CODEC = fields_codec("/heads", HeadsRequest, parse_heads, always="seq_len", page="Attention heads")


add_view_pages(router, COMPARE_KIND, COMPARE_CODEC, run_compare, page="compare", key="prompt_a",
               template="compare.html", fragment="compare")
add_view_pages(router, PATCHING_KIND, PATCHING_CODEC, run_patching, page="patching", key="clean",
               template="patching.html", fragment="patching")
add_view_pages(router, HEADS_KIND, HEADS_CODEC, run_heads, page="heads", key="seq_len",
               template="heads.html", fragment="heads")
