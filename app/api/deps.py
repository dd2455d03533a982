"""Dependencies: routes reach the app's shared objects only through these (tests inject their own)."""
from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.api.streams import Streams
from app.engine.engine import Engine
from app.explorations_registry import ViewRegistry
from app.jobs import JobRunner
from app.settings import Settings
from app.store import Store


def get_engine(request: Request) -> Engine:
    return request.app.state.engine


def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


def get_store(request: Request) -> Store:
    return request.app.state.store


def get_views(request: Request) -> ViewRegistry:
    return request.app.state.views


def get_jobs(request: Request) -> JobRunner:
    return request.app.state.jobs


def get_streams(request: Request) -> Streams:
    return request.app.state.streams


EngineDep = Annotated[Engine, Depends(get_engine)]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
StoreDep = Annotated[Store, Depends(get_store)]
ViewsDep = Annotated[ViewRegistry, Depends(get_views)]
JobsDep = Annotated[JobRunner, Depends(get_jobs)]
StreamsDep = Annotated[Streams, Depends(get_streams)]
