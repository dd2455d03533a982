"""HTML pages (full pages; htmx fragments live with each feature's page router)."""
from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from app.api.deps import EngineDep, SettingsDep
from app.web.analysis_pages import analysis_view
from app.web.templating import templates

router = APIRouter(tags=["pages"], include_in_schema=False)


@router.get("/", response_class=HTMLResponse)
def index(request: Request, engine: EngineDep, settings: SettingsDep):
    """The analysis view; opened with ?prompt=... it runs the analysis (a copied address reproduces the view)."""
    ctx = {"engine": engine, "limits": settings.limits, "page": "analyze", "inputs": None, "result": None,
           "kind": "analysis", "raw": dict(request.query_params)}
    status = 200
    if "prompt" in request.query_params:
        view = analysis_view(engine, settings, request.query_params)
        status = view.pop("status", 200)
        view.pop("retry_after", None)
        ctx.update(view)
    return templates.TemplateResponse(request, "index.html", ctx, status_code=status)
