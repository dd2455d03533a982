"""Saved explorations: the document, its services and the JSON API."""
from app.api.explorations.document import KIND_PATTERN, SCHEMA_VERSION, SaveRequest, load_document, migrate
from app.api.explorations.routes import router
from app.api.explorations.service import (
    build_document,
    get_document,
    live_profile,
    parse_import,
    profile_differences,
    rerun_document,
    save_document,
)

__all__ = ["KIND_PATTERN", "SCHEMA_VERSION", "SaveRequest", "load_document", "migrate", "router", "build_document",
           "get_document", "live_profile", "parse_import", "profile_differences", "rerun_document", "save_document"]
