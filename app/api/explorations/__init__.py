"""Saved explorations: the document, its services and the JSON API."""
from app.api.explorations import service
from app.api.explorations.document import KIND_PATTERN, SCHEMA_VERSION, SaveRequest, load_document, migrate
from app.api.explorations.routes import router

__all__ = ["KIND_PATTERN", "SCHEMA_VERSION", "SaveRequest", "load_document", "migrate", "router", "service"]
