"""Map JSON routes (thin: parse, call the service)."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from app.api.deps import EngineDep, SettingsDep
from app.api.map.schemas import LayoutInfo, MapRequest, MapResponse, SaeName
from app.api.map.service import feature_point, layout_info, layout_or_409, run_map

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
