"""Generation, steering, dose-response, temperature and system-prompt views (JSON and SSE)."""
from app.api.generate.routes import router
from app.api.generate.schemas import (
    DoseRequest,
    DoseResponse,
    GenerateRequest,
    GenerateResponse,
    SteerRequest,
    SteerResponse,
    SystemShiftRequest,
    SystemShiftResponse,
    TemperatureRequest,
    TemperatureResponse,
)
from app.api.generate.service import run_dose, run_generate, run_steer, run_system_shift, run_temperature

__all__ = ["router", "DoseRequest", "DoseResponse", "GenerateRequest", "GenerateResponse", "SteerRequest",
           "SteerResponse", "SystemShiftRequest", "SystemShiftResponse", "TemperatureRequest", "TemperatureResponse",
           "run_dose", "run_generate", "run_steer", "run_system_shift", "run_temperature"]
