"""HTML pages (full pages; htmx fragments live with each feature's page router)."""
from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from app.api.deps import EngineDep, SettingsDep
from app.web.templating import templates

router = APIRouter(tags=["pages"], include_in_schema=False)


@router.get("/", response_class=HTMLResponse)
def index(request: Request, engine: EngineDep, settings: SettingsDep):
    return templates.TemplateResponse(request, "index.html", {"engine": engine, "limits": settings.limits, "page": "analyze"})
