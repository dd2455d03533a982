"""Analysis JSON routes (thin: parse, call the service)."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from app.api.analysis.schemas import (
    FeatureResponse,
    SaeName,
)
from app.api.analysis.service import run_analysis, run_feature, run_lens
from app.api.deps import EngineDep, SettingsDep
from app.api.routing import post_service
from app.api.schemas import PromptFields

router = APIRouter(prefix="/api", tags=["analysis"])


post_service(router, "/analyze", run_analysis,
             "Tokens, each SAE's top features and reconstruction quality per token; the logit lens with lens=true.",
             responses={404: {"description": "`feature` names an index outside its SAE's width"}})
post_service(router, "/lens", run_lens,
             "Logit lens: every layer's residual through the final norm and the unembedding; top tokens per position.")


@router.get("/features/{sae}/{index}", response_model=FeatureResponse,
            responses={404: {"description": "index outside the SAE's width"}})
def feature(
    sae: SaeName,
    index: Annotated[int, Path(ge=0, description="feature index, 0 <= index < the SAE's width (see /health)")],
    engine: EngineDep,
    settings: SettingsDep,
    prompt: Annotated[str | None, Query(min_length=1, description="optional: also return the activation at each token of "
                                                                   "this prompt (at most max_prompt_chars characters)")] = None,
    system_prompt: Annotated[str | None, Query(description="at most max_system_prompt_chars characters")] = None,
    chat: bool | None = None,
    top: Annotated[int, Query(ge=1, le=50, description="promoted/suppressed tokens listed")] = 10,
    include_sinks: bool = False,
) -> FeatureResponse:
    """Feature card: decoder norm, vocabulary projection, Neuronpedia link, activation on an optional prompt."""
    fields = PromptFields(prompt=prompt, system_prompt=system_prompt, chat=chat) if prompt is not None else None
    return run_feature(engine, settings, sae, index, top=top, prompt=fields, include_sinks=include_sinks)
