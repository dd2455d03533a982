"""The attention panel of the analysis view (htmx fragment): asked for when the panel is opened, so the analysis
itself stays one forward. templates/fragments/attention.html renders from {inputs, result, kind} only; it calls
the service behind POST /api/attention (run_attention)."""
from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from app.api.deps import EngineDep, SettingsDep
from app.api.patching import AttentionRequest, run_attention
from app.web.forms import flag, last, model_fields_of
from app.web.views import form_fragment, service_view

router = APIRouter(tags=["pages"], include_in_schema=False)
KIND = "attention"


def parse_attention(params) -> AttentionRequest:
    """AttentionRequest from the panel's form (the analysis' prompt fields and a target token id)."""
    raw = model_fields_of(params, AttentionRequest, keep_blank=("prompt",), strip=False)
    raw.setdefault("prompt", "")
    raw["no_default_system"] = bool(flag(last(params, "no_default_system"), False))
    return AttentionRequest.model_validate(raw)


attention_view = service_view(KIND, parse_attention, run_attention)


@router.post("/fragments/attention", response_class=HTMLResponse)
async def attention_fragment(request: Request, engine: EngineDep, settings: SettingsDep):
    """The panel's patterns and head DLA; no history push (the analysis' address stays)."""
    return await form_fragment(request, engine, settings, "fragments/attention.html", attention_view)
