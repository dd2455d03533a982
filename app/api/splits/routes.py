"""Split map JSON route (thin: parse, call the service)."""
from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import EngineDep, SettingsDep
from app.api.splits.schemas import SplitMapRequest, SplitMapResponse
from app.api.splits.service import run_split_map

router = APIRouter(prefix="/api", tags=["splits"])


@router.post("/splits", response_model=SplitMapResponse, responses={404: {"description": "feature index outside the SAE's width"}})
def split_map(req: SplitMapRequest, engine: EngineDep, settings: SettingsDep) -> SplitMapResponse:
    """How a coarse feature splits into fine ones: children by decoder cosine and co-firing on the atlas,
    coverage, absorption holes, meta-decomposition, reconstruction-vs-novel histogram, stitching on a prompt."""
    return run_split_map(engine, settings, req)
