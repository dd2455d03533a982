"""Per-token features, logit lens and feature cards (JSON; the HTML pages call the same services)."""
from app.api.analysis.routes import router
from app.api.analysis.schemas import AnalyzeRequest, AnalyzeResponse
from app.api.analysis.service import neuronpedia_url, run_analysis, run_feature

__all__ = ["router", "AnalyzeRequest", "AnalyzeResponse", "neuronpedia_url", "run_analysis", "run_feature"]
