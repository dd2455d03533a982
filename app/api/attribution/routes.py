"""Attribution JSON route (thin: parse, call the service)."""
from __future__ import annotations

from fastapi import APIRouter

from app.api.attribution.schemas import AttributionRequest, AttributionResponse
from app.api.attribution.service import run_attribution
from app.api.deps import EngineDep, SettingsDep

router = APIRouter(prefix="/api", tags=["attribution"])


@router.post("/attribution", response_model=AttributionResponse,
             responses={404: {"description": "position past the prompt's end, or token id outside the vocabulary"}})
def attribution(req: AttributionRequest, engine: EngineDep, settings: SettingsDep) -> AttributionResponse:
    """Which features of both SAEs drive one next-token logit (activation × decoder · gradient, one backward pass),
    with the SAE error as its own entry, checked by clamping the top features to 0."""
    return run_attribution(engine, settings, req)
