"""Where the answer is decided: compare two prompts, activation patching, attention heads (JSON; pages call the same
services)."""
from app.api.patching.routes import router
from app.api.patching.schemas import (
    COMPARE_KIND,
    HEADS_KIND,
    PATCHING_KIND,
    AttentionRequest,
    AttentionResponse,
    CompareRequest,
    CompareResponse,
    HeadsRequest,
    HeadsResponse,
    PatchingRequest,
    PatchingResponse,
)
from app.api.patching.service import run_attention, run_compare, run_heads, run_patching

__all__ = ["router", "COMPARE_KIND", "PATCHING_KIND", "HEADS_KIND", "AttentionRequest", "AttentionResponse",
           "CompareRequest", "CompareResponse", "HeadsRequest", "HeadsResponse", "PatchingRequest", "PatchingResponse",
           "run_attention", "run_compare", "run_heads", "run_patching"]
