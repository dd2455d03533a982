"""Per-token features, logit lens and feature cards as JSON."""
from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, Field

from app.api.deps import EngineDep, SettingsDep
from app.api.schemas import PromptFields
from app.engine import analysis as an
from app.engine.prompts import encode_prompt

router = APIRouter(prefix="/api", tags=["analysis"])
SaeName = Literal["coarse", "fine"]


class AnalyzeRequest(PromptFields):
    top_k: int = Field(default=10, ge=1, le=50)
    include_sinks: bool = Field(default=False, description="rank features at position 0 / special / massive-norm tokens too")


class SAETokenModel(BaseModel):
    indices: list[int]
    values: list[float]
    rel_error: float
    cosine: float
    l0: int


class TokenModel(BaseModel):
    position: int
    token_id: int
    token: str
    sink: bool
    resid_norm: float
    saes: dict[str, SAETokenModel]


class AnalyzeResponse(BaseModel):
    profile: str
    hook_name: str
    text: str
    tokens: list[TokenModel]
    explained_variance: dict[str, float | None]
    next_tokens: list[tuple[str, float]]


def encode_checked(engine, settings, req: PromptFields) -> tuple[int, ...]:
    """Token ids of a request's prompt, or 422 when it has more tokens than the limit."""
    ep = encode_prompt(engine.tokenizer, req.prompt, req.system_prompt, req.chat,
                       prepend_bos=engine.profile.name == "gemma-2-2b")
    limit = settings.limits.max_prompt_tokens
    if len(ep.token_ids) > limit:
        raise HTTPException(422, detail=[{"loc": ["body", "prompt"], "msg": f"prompt has {len(ep.token_ids)} tokens; the limit is {limit}",
                                          "type": "too_long"}])
    return ep.token_ids, ep.text


def run_analysis(engine, settings, req: AnalyzeRequest) -> AnalyzeResponse:
    """Shared by the JSON API and the HTML fragments."""
    ids, text = encode_checked(engine, settings, req)
    with engine.session():
        a = an.analyze(engine.model, engine.saes, engine.hook_name, ids, top_k=req.top_k, sink_norm=engine.profile.sink_norm)
    toks = []
    for p, (tid, t) in enumerate(zip(a.token_ids, a.tokens)):
        saes = {}
        for name, views in a.per_sae.items():
            v = views[p]
            hide = a.sink[p] and not req.include_sinks
            saes[name] = SAETokenModel(indices=[] if hide else list(v.indices), values=[] if hide else list(v.values),
                                       rel_error=v.rel_error, cosine=v.cosine, l0=v.l0)
        toks.append(TokenModel(position=p, token_id=tid, token=t, sink=a.sink[p], resid_norm=a.resid_norm[p], saes=saes))
    ev = {k: (None if v != v else v) for k, v in a.explained_variance.items()}
    return AnalyzeResponse(profile=engine.profile.name, hook_name=engine.hook_name, text=text, tokens=toks,
                           explained_variance=ev, next_tokens=list(a.next_token_top))


@router.post("/analyze", response_model=AnalyzeResponse)
def analyze(req: AnalyzeRequest, engine: EngineDep, settings: SettingsDep) -> AnalyzeResponse:
    return run_analysis(engine, settings, req)
