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
    atlas: str | None = None  # "ok", or why there is no feature atlas and the command that builds it
    pair_independence: dict | None = None  # same-index decoder cosines of the coarse/fine pair (see engine.atlas)


@router.get("/health", response_model=HealthResponse)
def health(engine: EngineDep, settings: SettingsDep) -> HealthResponse:
    return HealthResponse(status="ok", profile=engine.profile.name, hook_name=engine.hook_name,
                          saes={k: int(s.cfg.d_sae) for k, s in engine.saes.items()},
                          fingerprint=engine.fingerprint, busy=engine.busy, limits=settings.limits.model_dump(),
                          atlas=engine.atlas_status, pair_independence=pair_summary(engine.pair_check))


def pair_summary(check) -> dict | None:
    """The pair check as JSON: mean same-index cosine, share whose best fine match is the same index, a warning."""
    if check is None:
        return None
    return {"mean_same_index_cosine": check.mean_same_index_cosine, "share_best_is_same": check.share_best_is_same,
            "n_checked": check.n_checked, "threshold": check.threshold,
            "initialised_together": check.initialised_together,
            "warning": (f"coarse feature i and fine feature i share a decoder direction (mean cosine "
                        f"{check.mean_same_index_cosine:.2f} > {check.threshold}): the pair was initialised together, so "
                        f"coarse-to-fine matches partly reflect initialisation, not structure") if check.initialised_together else None}
