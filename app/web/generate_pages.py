"""HTML pages and htmx fragments (stub: filled in by its issue)."""
from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["pages"], include_in_schema=False)
