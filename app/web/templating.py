"""Jinja2 templates (autoescape on: model text is never marked safe)."""
from __future__ import annotations

import json

from fastapi.templating import Jinja2Templates

from app.main import ROOT

templates = Jinja2Templates(directory=str(ROOT / "templates"))
templates.env.autoescape = True


def to_json_attr(obj) -> str:
    """JSON for a data-* attribute (autoescape escapes quotes and angle brackets)."""
    return json.dumps(obj, separators=(",", ":"))


templates.env.filters["tojson_attr"] = to_json_attr


def errors_of(exc) -> list[str]:
    """Human lines ("prompt: ...") from a pydantic ValidationError or an HTTPException 422/404, for error fragments."""
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        return [f"{'.'.join(str(x) for x in e['loc']) or 'input'}: {e['msg']}" for e in exc.errors()]
    detail = getattr(exc, "detail", str(exc))
    if isinstance(detail, list):
        return [f"{'.'.join(str(x) for x in d.get('loc', ['input'])[1:]) or 'input'}: {d.get('msg')}" for d in detail]
    return [str(detail)]


def render_fragment(request, name: str, ctx: dict, push: str | None = None):
    """An htmx fragment: ctx["status"] as the HTTP status, HX-Push-Url on success, Retry-After on 503."""
    status = ctx.pop("status", 200)
    headers = {}
    if push and status == 200:
        headers["HX-Push-Url"] = push
    if status == 503:
        headers["Retry-After"] = str(ctx.get("retry_after", 2))
    ctx.setdefault("limits", request.app.state.settings.limits)
    return templates.TemplateResponse(request, name, ctx, status_code=status, headers=headers)
