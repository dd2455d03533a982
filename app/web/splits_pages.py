"""The split map page (/splits?coarse=N...) and its htmx fragment.

templates/fragments/split_map.html is rendered from {inputs, result, kind} only (the saved-explorations
contract). The page URL carries the inputs (its codec, `CODEC`), so a copied address reproduces the view.
"""
from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from app.api.deps import EngineDep, SettingsDep
from app.api.splits import KIND, SplitMapRequest, run_split_map
from app.web.codecs import fields_codec
from app.web.forms import model_fields_of
from app.web.templating import render_page
from app.web.views import form_fragment, query_page, service_view

router = APIRouter(tags=["pages"], include_in_schema=False)


def parse_inputs(params) -> SplitMapRequest:
    """SplitMapRequest from query or form fields (empty fields take their defaults)."""
    return SplitMapRequest.model_validate(model_fields_of(params, SplitMapRequest))


CODEC = fields_codec("/splits", SplitMapRequest, parse_inputs, always="coarse")


split_view = service_view(KIND, parse_inputs, run_split_map)


@router.get("/splits", response_class=HTMLResponse)
def splits_page(request: Request, engine: EngineDep, settings: SettingsDep):
    """The split map of ?coarse=N (the form alone without it)."""
    ctx, status = query_page(request, engine, settings, "splits", KIND, "coarse", split_view,
                             atlas_status=getattr(engine, "atlas_status", None))
    return render_page(request, "splits.html", ctx, status)


@router.post("/fragments/split_map", response_class=HTMLResponse)
async def split_fragment(request: Request, engine: EngineDep, settings: SettingsDep):
    return await form_fragment(request, engine, settings, "fragments/split_map.html", split_view, CODEC.address)
