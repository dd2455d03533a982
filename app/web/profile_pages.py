"""The /profile page: the loaded model, hook and SAE pair (same service as GET /api/profile)."""
from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from app.api.deps import EngineDep, SettingsDep
from app.api.profile import run_profile
from app.web.templating import render_page

router = APIRouter(tags=["pages"], include_in_schema=False)


@router.get("/profile", response_class=HTMLResponse)
def profile_page(request: Request, engine: EngineDep, settings: SettingsDep):
    return render_page(request, "profile.html", {"page": "profile", "engine": engine, "p": run_profile(engine, settings)})
