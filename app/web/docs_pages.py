"""/docs: the OpenAPI explorer (Swagger UI served from static/swagger-ui/, no CDN, no inline script); /redoc
sends there."""
from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from app.api.deps import EngineDep
from app.web.templating import render_page

router = APIRouter(tags=["pages"], include_in_schema=False)


@router.get("/docs", response_class=HTMLResponse)
def docs_page(request: Request, engine: EngineDep):
    return render_page(request, "docs.html", {"page": "docs", "engine": engine, "openapi_url": request.app.openapi_url})


@router.get("/redoc")
def redoc_page():
    return RedirectResponse("/docs", status_code=307)
