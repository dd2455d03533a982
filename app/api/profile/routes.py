from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import EngineDep, SettingsDep
from app.api.profile.schemas import ProfileResponse
from app.api.profile.service import run_profile

router = APIRouter(prefix="/api", tags=["profile"])


@router.get("/profile", response_model=ProfileResponse)
def profile(engine: EngineDep, settings: SettingsDep) -> ProfileResponse:
    return run_profile(engine, settings)
