"""The activation-space map (issue 13): JSON routes; the HTML page calls the same services."""
from app.api.map.routes import router
from app.api.map.schemas import MapRequest, MapResponse, MapSearchRequest, MapSearchResponse
from app.api.map.service import (
    PLACEMENT,
    feature_point,
    layout_or_409,
    layout_status,
    place_regions,
    point_row,
    run_map,
    run_map_search,
)

KIND = "map"

__all__ = ["router", "KIND", "MapRequest", "MapResponse", "PLACEMENT", "feature_point", "layout_or_409", "layout_status",
           "point_row", "run_map", "MapSearchRequest", "MapSearchResponse", "place_regions", "run_map_search"]
