"""Generation, steering, dose-response, temperature and system-prompt views (JSON and SSE)."""
from app.api.generate.routes import router
from app.api.generate.schemas import (
                                      DoseRequest,
                                      DoseResponse,
                                      FeatureInfoRequest,
                                      FeatureInfoResponse,
                                      GenerateRequest,
                                      GenerateResponse,
                                      GenerationOut,
                                      SamplingFields,
                                      SteerFeatureModel,
                                      SteeringFields,
                                      SteerRequest,
                                      SteerResponse,
                                      SystemShiftRequest,
                                      SystemShiftResponse,
                                      TemperatureRequest,
                                      TemperatureResponse,
)
from app.api.generate.service import (
                                      check_features,
                                      run_dose,
                                      run_feature_info,
                                      run_generate,
                                      run_steer,
                                      run_system_shift,
                                      run_temperature,
)
from app.api.streams import Streams

__all__ = ["router", "DoseRequest", "DoseResponse", "FeatureInfoRequest", "FeatureInfoResponse", "GenerateRequest",
           "GenerateResponse", "GenerationOut", "SamplingFields", "SteerFeatureModel", "SteeringFields", "SteerRequest",
           "SteerResponse", "SystemShiftRequest", "SystemShiftResponse", "TemperatureRequest", "TemperatureResponse",
           "check_features", "run_dose", "run_feature_info", "run_generate", "run_steer", "run_system_shift",
           "run_temperature", "Streams"]
