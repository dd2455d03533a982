"""Saved explorations: the document, its services and the JSON API."""
from app.api.explorations.document import (
                                           KIND_PATTERN,
                                           MIGRATIONS,
                                           SCHEMA_VERSION,
                                           Exploration,
                                           ProfileInfo,
                                           RerunResponse,
                                           SAEInfo,
                                           SavedResponse,
                                           SaveRequest,
                                           load_document,
                                           migrate,
)
from app.api.explorations.routes import router
from app.api.explorations.service import (
                                           build_document,
                                           check_size,
                                           get_document,
                                           live_profile,
                                           parse_import,
                                           profile_differences,
                                           rerun_document,
                                           save_document,
)

__all__ = ["KIND_PATTERN", "MIGRATIONS", "SCHEMA_VERSION", "Exploration", "ProfileInfo", "RerunResponse", "SAEInfo", "SavedResponse",
           "SaveRequest", "load_document", "migrate", "router", "build_document", "check_size", "get_document",
           "live_profile", "parse_import", "profile_differences", "rerun_document", "save_document"]
