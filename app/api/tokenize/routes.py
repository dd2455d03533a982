"""POST /api/tokenize (thin: parse, call the service)."""
from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import EngineDep, SettingsDep
from app.api.tokenize.schemas import TokenizeRequest, TokenizeResponse
from app.api.tokenize.service import run_tokenize

router = APIRouter(prefix="/api", tags=["tokenize"])


@router.post("/tokenize", response_model=TokenizeResponse)
def tokenize(req: TokenizeRequest, engine: EngineDep, settings: SettingsDep) -> TokenizeResponse:
    """How many tokens a prompt is (system prompt and chat template included) and the limit; cheap, no model run."""
    return run_tokenize(engine, settings, req)
