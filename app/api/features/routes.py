"""Feature atlas and search JSON routes (thin: parse, call the service)."""
from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query
from pydantic import ValidationError

from app.api.deps import EngineDep, SettingsDep
from app.api.errors import invalid
from app.api.features.schemas import AtlasStatusModel, FeatureAtlasResponse, SearchRequest, SearchResponse
from app.api.features.service import atlas_status, run_feature_atlas, run_search

router = APIRouter(prefix="/api", tags=["features"])


@router.get("/atlas", response_model=AtlasStatusModel)
def atlas(engine: EngineDep) -> AtlasStatusModel:
    """Is there a feature atlas for the loaded SAEs? If not: why, and the command that builds it."""
    return atlas_status(engine)


@router.get("/atlas/{sae}/{index}", response_model=FeatureAtlasResponse,
            responses={404: {"description": "index outside the SAE's width"}})
def feature_atlas(sae: Literal["coarse", "fine"],
                  index: Annotated[int, Path(ge=0, description="feature index, 0 <= index < the SAE's width")],
                  engine: EngineDep, settings: SettingsDep) -> FeatureAtlasResponse:
    """A feature's atlas data alone (no model work): label, density, histogram, examples, tokens, neighbours."""
    return run_feature_atlas(engine, settings, sae, index)


@router.get("/search", response_model=SearchResponse)
def search_get(engine: EngineDep, settings: SettingsDep,
               q: Annotated[str, Query(description="a word or phrase (at most max_search_chars characters)")],
               mode: Literal["both", "text", "atlas"] = "both",
               top: Annotated[int, Query(ge=1, le=50)] = 10,
               sort: Literal["rank", "label_f1"] = "rank",
               min_label_f1: Annotated[float, Query(ge=0.0, le=1.0)] = 0.0) -> SearchResponse:
    """Features that fire on the query (through the model) and features specific to its whole word in the atlas."""
    try:
        req = SearchRequest(q=q, mode=mode, top=top, sort=sort, min_label_f1=min_label_f1)
    except ValidationError as exc:  # 422 naming the query field, like FastAPI's own
        raise invalid(exc, ["query"]) from None
    return run_search(engine, settings, req)


@router.post("/search", response_model=SearchResponse)
def search_post(req: SearchRequest, engine: EngineDep, settings: SettingsDep) -> SearchResponse:
    """The same search with a JSON body."""
    return run_search(engine, settings, req)
