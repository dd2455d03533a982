"""Which features drive a token: the analysis view's panel (htmx fragment) and a page of its own
(/attribution?prompt=...&position=...&target=...) for copied addresses and Fork.

templates/fragments/attribution.html is rendered from {inputs, result, kind} only.
"""
from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from app.api.attribution import KIND, AttributionRequest, run_attribution
from app.api.deps import EngineDep, SettingsDep
from app.web.codecs import fields_codec
from app.web.forms import model_fields_of
from app.web.templating import render_page
from app.web.views import form_fragment, query_page, service_view

router = APIRouter(tags=["pages"], include_in_schema=False)


def parse_inputs(params) -> AttributionRequest:
    """AttributionRequest from query or form fields (empty optional fields are left out)."""
    raw = model_fields_of(params, AttributionRequest, keep_blank=("prompt",), strip=False)
    raw.setdefault("prompt", "")
    return AttributionRequest.model_validate(raw)


CODEC = fields_codec("/attribution", AttributionRequest, parse_inputs, always="prompt")


attribution_view = service_view(KIND, parse_inputs, run_attribution)


@router.get("/attribution", response_class=HTMLResponse)
def attribution_page(request: Request, engine: EngineDep, settings: SettingsDep):
    return render_page(request, "attribution.html",
                       *query_page(request, engine, settings, "analyze", KIND, "prompt", attribution_view))


@router.post("/fragments/attribution", response_class=HTMLResponse)
async def attribution_fragment(request: Request, engine: EngineDep, settings: SettingsDep):
    """The analysis view's "which features drive this token" form posts here. No history push: the panel sits
    inside the analysis view, whose address stays; the result's Save box and its own link share it."""
    return await form_fragment(request, engine, settings, "fragments/attribution.html", attribution_view)
