"""Generation, steering, dose-response, temperature and system-prompt views (JSON and SSE)."""
from app.api.steering import schemas, service
from app.api.steering.routes import router

__all__ = ["router", "schemas", "service"]
