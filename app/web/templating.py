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
