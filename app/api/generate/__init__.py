"""Generation, steering, dose-response, temperature and system-prompt views (JSON and SSE)."""
from app.api.generate import schemas, service
from app.api.generate.routes import router

__all__ = ["router", "schemas", "service"]
