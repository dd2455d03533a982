"""Explorations JSON API (stub: filled in by its issue)."""
from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/api/explorations", tags=["explorations"])
