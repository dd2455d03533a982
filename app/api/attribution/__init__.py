"""Which features drive a token (JSON; the analysis page's panel calls the same service)."""
from app.api.attribution.routes import router
from app.api.attribution.schemas import KIND, AttributionRequest, AttributionResponse
from app.api.attribution.service import run_attribution

__all__ = ["router", "KIND", "AttributionRequest", "AttributionResponse", "run_attribution"]
