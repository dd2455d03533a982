"""Which features drive a token: the analysis view's panel (htmx fragment) and a page of its own
(/attribution?prompt=...&position=...&target=...) for copied addresses and Fork.

templates/fragments/attribution.html is rendered from {inputs, result, kind} only.
"""
from __future__ import annotations

from fastapi import APIRouter

from app.api.attribution import KIND, AttributionRequest, run_attribution
from app.web.codecs import fields_codec
from app.web.forms import model_fields_of
from app.web.views import add_view_pages

router = APIRouter(tags=["pages"], include_in_schema=False)


def parse_inputs(params) -> AttributionRequest:
    """AttributionRequest from query or form fields (empty optional fields are left out)."""
    raw = model_fields_of(params, AttributionRequest, keep_blank=("prompt",), strip=False)
    raw.setdefault("prompt", "")
    return AttributionRequest.model_validate(raw)


CODEC = fields_codec("/attribution", AttributionRequest, parse_inputs, always="prompt",
                     page="Which features drive this token")


# the analysis view's "which features drive this token" form posts to the fragment; no history push: the panel
# sits inside the analysis view, whose address stays (the result's Save box and its own link share it)
add_view_pages(router, KIND, CODEC, run_attribution, page="analyze", key="prompt", template="attribution.html",
               fragment="attribution", push=False)
