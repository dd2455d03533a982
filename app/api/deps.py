"""Dependencies: routes reach the Engine and Settings only through these (tests inject their own)."""
from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.engine.engine import Engine
from app.settings import Settings


def get_engine(request: Request) -> Engine:
    return request.app.state.engine


def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


EngineDep = Annotated[Engine, Depends(get_engine)]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]


# --- saved explorations (issue 6) ---
from app.store import Store  # noqa: E402


def get_store(request: Request) -> Store:
    return request.app.state.store


StoreDep = Annotated[Store, Depends(get_store)]
