"""Thin JSON routes made in one place: POST the service's request model, answer its response model."""
# No `from __future__ import annotations` here: FastAPI reads the route's annotations, which must be the classes.
from typing import Any, Callable, get_type_hints

from fastapi import APIRouter

from app.api.deps import EngineDep, SettingsDep


def post_service(router: APIRouter, path: str, service: Callable[..., Any], doc: str, **route_kw: Any) -> None:
    """POST <path>: service(engine, settings, req), its `req` annotation the body, its return annotation the response
    model; named after the path (/steer/feature: steer_feature) with `doc` as its description, as a hand-written
    `def steer_feature(req, engine, settings)` route with that docstring would be."""
    hints = get_type_hints(service)
    request_model = hints["req"]

    def route(req: request_model, engine: EngineDep, settings: SettingsDep):  # type: ignore[valid-type]
        return service(engine, settings, req)

    route.__name__ = route.__qualname__ = path.strip("/").replace("/", "_").replace("-", "_")
    route.__doc__ = doc  # FastAPI reads the description when the route is added: set it first
    router.post(path, response_model=hints["return"], **route_kw)(route)
