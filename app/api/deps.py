"""Dependencies: routes reach the app's shared objects only through these (tests inject their own)."""
from __future__ import annotations

from typing import Annotated, Any, Callable

from fastapi import Depends, Request

from app.api.streams import Streams
from app.core.settings import Settings
from app.engine.engine import Engine
from app.explorations.registry import ViewRegistry
from app.jobs import JobRunner
from app.store import Store


def app_state(attr: str) -> Callable[[Request], Any]:
    """A dependency returning `request.app.state.<attr>` (what create_app's lifespan put there)."""

    def dependency(request: Request) -> Any:
        return getattr(request.app.state, attr)

    dependency.__name__ = f"get_{attr}"
    return dependency


get_engine = app_state("engine")
get_settings_dep = app_state("settings")
get_store = app_state("store")
get_views = app_state("views")
get_jobs = app_state("jobs")
get_streams = app_state("streams")

EngineDep = Annotated[Engine, Depends(get_engine)]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
StoreDep = Annotated[Store, Depends(get_store)]
ViewsDep = Annotated[ViewRegistry, Depends(get_views)]
JobsDep = Annotated[JobRunner, Depends(get_jobs)]
StreamsDep = Annotated[Streams, Depends(get_streams)]
