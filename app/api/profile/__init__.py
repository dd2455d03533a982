"""The loaded profile: model, hook, both SAEs, the pair check, atlas status, and how to start another profile."""
from app.api.profile.routes import router
from app.api.profile.schemas import ProfileResponse
from app.api.profile.service import run_profile

__all__ = ["router", "ProfileResponse", "run_profile"]
