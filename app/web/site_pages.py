"""What every site answers: /favicon.ico (the app's SVG icon; browsers ask for it on pages without a <link rel=icon>,
such as JSON answers) and a 404 page for a browser at an address that has none (the JSON API keeps its JSON)."""
from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import FileResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.api.errors import errors_of
from app.core.settings import ROOT
from app.web.templating import render_page

router = APIRouter(tags=["pages"], include_in_schema=False)
FAVICON = ROOT / "static" / "favicon.svg"
# where a 404 stays JSON: the API, htmx fragments (forms.js shows the lines in place) and assets
JSON_PREFIXES = ("/api/", "/fragments/", "/static/", "/openapi.json", "/health")


@router.api_route("/favicon.ico", methods=["GET", "HEAD"])
def favicon():
    """The SVG icon under the address browsers ask for by default (every current browser draws an SVG favicon)."""
    return FileResponse(FAVICON, media_type="image/svg+xml", headers={"cache-control": "public, max-age=86400"})


def wants_page(request: Request) -> bool:
    """A browser navigating here (GET, asks for HTML, not htmx), as opposed to the API, a script or a fragment."""
    return (request.method in ("GET", "HEAD") and "text/html" in request.headers.get("accept", "")
            and request.headers.get("hx-request") != "true" and not request.url.path.startswith(JSON_PREFIXES))


async def http_error_handler(request: Request, exc: StarletteHTTPException):
    """404 for a browser: an HTML page that says which address and why, with the site's header to go on from;
    everything else: FastAPI's JSON answer ({"detail": ...})."""
    if exc.status_code != 404 or not wants_page(request) or getattr(request.app.state, "engine", None) is None:
        return await http_exception_handler(request, exc)
    reason = [] if exc.detail in (None, "Not Found") else errors_of(exc)
    return render_page(request, "404.html", {"engine": request.app.state.engine, "page": None, "path": request.url.path,
                                             "reasons": reason}, 404, getattr(exc, "headers", None))
