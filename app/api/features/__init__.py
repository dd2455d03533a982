"""Feature atlas (corpus context per feature) and feature search (JSON; the pages call the same services)."""
from app.api.features.routes import router
from app.api.features.schemas import SearchRequest
from app.api.features.service import atlas_status, check_feature, feature_atlas, run_search, steer_link

__all__ = ["router", "SearchRequest", "atlas_status", "check_feature", "feature_atlas", "run_search", "steer_link"]
