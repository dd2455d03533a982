"""Map JSON routes (thin: parse, call the service)."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from pydantic import ValidationError

from app.api.deps import EngineDep, SettingsDep
from app.api.errors import invalid
from app.api.map.schemas import LayoutInfo, MapRequest, MapResponse, MapSearchRequest, MapSearchResponse, SaeName
from app.api.map.service import feature_point, layout_info, layout_or_409, run_map, run_map_search

router = APIRouter(prefix="/api/map", tags=["map"])


@router.get("/layout", response_model=LayoutInfo, responses={409: {"description": "no map built for these SAEs"}})
def layout(engine: EngineDep) -> LayoutInfo:
    """The map's size, regions count, parameters and neighbour preservation@10."""
    return layout_info(layout_or_409(engine))


@router.post("/path", response_model=MapResponse, responses={409: {"description": "no map built for these SAEs"}})
def path(req: MapRequest, engine: EngineDep, settings: SettingsDep) -> MapResponse:
    """A prompt's tokens placed on the map (+ without the system prompt, steered vs unsteered, drift)."""
    return run_map(engine, settings, req)


@router.get("/features/{sae}/{index}", responses={404: {"description": "index outside the SAE's width"}})
def feature(sae: SaeName, index: Annotated[int, Path(ge=0, description="0 <= index < the SAE's width")],
            engine: EngineDep) -> dict:
    """One point of the map: place, region, atlas label, density and top examples."""
    return feature_point(engine, sae, index)


def search_request(q: str, top: int = 12) -> MapSearchRequest:
    """MapSearchRequest from query fields; a 422 naming the query field, like FastAPI's own."""
    try:
        return MapSearchRequest(q=q, top=top)
    except ValidationError as exc:
        raise invalid(exc, ["query"]) from None


@router.get("/search", response_model=MapSearchResponse, responses={409: {"description": "no map built for these SAEs"}})
def search(engine: EngineDep, settings: SettingsDep,
           q: Annotated[str, Query(description="a word, phrase or feature id like fine:123 (at most max_search_chars)")],
           top: Annotated[int, Query(ge=1, le=50)] = 12) -> MapSearchResponse:
    """Regions whose names match the query's words and features (an id, or atlas matches), with the box to show each."""
    return run_map_search(engine, settings, search_request(q, top))
