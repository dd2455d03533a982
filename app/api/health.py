"""Liveness and what is loaded."""
from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from app.api.deps import EngineDep, SettingsDep

router = APIRouter(tags=["health"])


class HealthResponse(BaseModel):
    status: str
    profile: str
    hook_name: str
    saes: dict[str, int]
    fingerprint: str
    busy: bool
    limits: dict


@router.get("/health", response_model=HealthResponse)
def health(engine: EngineDep, settings: SettingsDep) -> HealthResponse:
    return HealthResponse(status="ok", profile=engine.profile.name, hook_name=engine.hook_name,
                          saes={k: int(s.cfg.d_sae) for k, s in engine.saes.items()},
                          fingerprint=engine.fingerprint, busy=engine.busy, limits=settings.limits.model_dump())
