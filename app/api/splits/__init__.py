"""Split maps: how a coarse feature splits into fine features (JSON; the page calls the same service)."""
from app.api.splits.routes import router
from app.api.splits.schemas import KIND, SplitMapRequest, SplitMapResponse
from app.api.splits.service import run_split_map, split_index

__all__ = ["router", "KIND", "SplitMapRequest", "SplitMapResponse", "run_split_map", "split_index"]
