"""Feature atlas (corpus context per feature) and feature search (JSON; the pages call the same services)."""
from app.api.features.routes import router
from app.api.features.schemas import (
                                      AtlasStatusModel,
                                      FeatureAtlasModel,
                                      FeatureAtlasResponse,
                                      SearchHitModel,
                                      SearchRequest,
                                      SearchResponse,
)
from app.api.features.service import atlas_status, check_feature, feature_atlas, run_feature_atlas, run_search

__all__ = ["router", "AtlasStatusModel", "FeatureAtlasModel", "FeatureAtlasResponse", "SearchHitModel", "SearchRequest",
           "SearchResponse", "atlas_status", "check_feature", "feature_atlas", "run_feature_atlas", "run_search"]
