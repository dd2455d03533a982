"""Per-token features, logit lens and feature cards (JSON; the HTML pages call the same services)."""
from app.api.analysis.routes import router
from app.api.analysis.schemas import (
                                      AnalyzeRequest,
                                      AnalyzeResponse,
                                      FeatureResponse,
                                      LensRequest,
                                      LensResponse,
                                      SaeName,
                                      SAETokenModel,
                                      TokenModel,
)
from app.api.analysis.service import encode_checked, neuronpedia_url, run_analysis, run_feature, run_lens

__all__ = ["router", "AnalyzeRequest", "AnalyzeResponse", "FeatureResponse", "LensRequest", "LensResponse",
           "SAETokenModel", "SaeName", "TokenModel", "encode_checked", "neuronpedia_url", "run_analysis", "run_feature",
           "run_lens"]
