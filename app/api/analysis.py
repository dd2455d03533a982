"""Per-token features, logit lens and feature cards as JSON."""
from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Path, Query
from pydantic import BaseModel, Field

from app.api.deps import EngineDep, SettingsDep
from app.api.schemas import PromptFields
from app.engine import analysis as an
from app.engine.prompts import encode_prompt
from app.settings import get_settings

router = APIRouter(prefix="/api", tags=["analysis"])
SaeName = Literal["coarse", "fine"]
L = get_settings().limits
NEURONPEDIA = "https://www.neuronpedia.org"


class AnalyzeRequest(PromptFields):
    top_k: int = Field(default=10, ge=1, le=50, description="features listed per token and SAE (at most 50)")
    include_sinks: bool = Field(default=False, description="rank features at position 0 / special / massive-norm tokens too")
    lens: bool = Field(default=False, description="also run the logit lens (the `lens` field of the response)")


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


class LensRequest(PromptFields):
    top: int = Field(default=5, ge=1, le=10, description="tokens kept per layer and position (at most 10)")


class LensResponse(BaseModel):
    profile: str
    layers: list[str] = Field(description='"embed", then "0" .. "n_layers-1" (each block\'s resid_post)')
    tokens: list[str]
    top_tokens: list[list[list[str]]] = Field(description="[layer][position] -> top tokens, most probable first")
    top_probs: list[list[list[float]]] = Field(description="[layer][position] -> their probabilities")


class AnalyzeResponse(BaseModel):
    profile: str
    hook_name: str
    text: str
    tokens: list[TokenModel]
    explained_variance: dict[str, float | None]
    next_tokens: list[tuple[str, float]]
    sae_widths: dict[str, int] = Field(default_factory=dict)
    lens: LensResponse | None = None


class FeatureResponse(BaseModel):
    sae: str
    index: int
    width: int
    decoder_norm: float
    promoted: list[tuple[str, float]] = Field(description="tokens whose logits the decoder direction raises most (W_dec[i] @ W_U)")
    suppressed: list[tuple[str, float]] = Field(description="tokens whose logits it lowers most (value is the logit change, negative)")
    neuronpedia_url: str | None = None
    tokens: list[str] | None = Field(default=None, description="the prompt's tokens, when a prompt was given")
    activations: list[float] | None = Field(default=None, description="the feature's activation at each position")
    sink: list[bool] | None = None
    max_activation: float | None = Field(default=None, description="max over positions (sinks left out unless include_sinks)")
    max_position: int | None = None


def encode_checked(engine, settings, req: PromptFields) -> tuple[int, ...]:
    """Token ids of a request's prompt, or 422 when it has more tokens than the limit."""
    ep = encode_prompt(engine.tokenizer, req.prompt, req.system_prompt, req.chat,
                       prepend_bos=engine.profile.name == "gemma-2-2b")
    limit = settings.limits.max_prompt_tokens
    if len(ep.token_ids) > limit:
        raise HTTPException(422, detail=[{"loc": ["body", "prompt"], "msg": f"prompt has {len(ep.token_ids)} tokens; the limit is {limit}",
                                          "type": "too_long"}])
    return ep.token_ids, ep.text


def _lens_response(engine, lens: an.LogitLens, ids) -> LensResponse:
    return LensResponse(profile=engine.profile.name, layers=list(lens.layers),
                        tokens=[engine.tokenizer.decode([int(t)]) for t in ids],
                        top_tokens=[[list(c) for c in row] for row in lens.top_tokens],
                        top_probs=[[list(c) for c in row] for row in lens.top_probs])


def run_analysis(engine, settings, req: AnalyzeRequest) -> AnalyzeResponse:
    """Shared by the JSON API and the HTML fragments."""
    ids, text = encode_checked(engine, settings, req)
    lens = None
    with engine.session():
        a = an.analyze(engine.model, engine.saes, engine.hook_name, ids, top_k=req.top_k, sink_norm=engine.profile.sink_norm)
        if getattr(req, "lens", False):
            lens = an.logit_lens(engine.model, ids)
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
                           explained_variance=ev, next_tokens=list(a.next_token_top),
                           sae_widths={k: int(s.cfg.d_sae) for k, s in engine.saes.items()},
                           lens=_lens_response(engine, lens, ids) if lens is not None else None)


def run_lens(engine, settings, req: LensRequest) -> LensResponse:
    ids, _ = encode_checked(engine, settings, req)
    with engine.session():
        lens = an.logit_lens(engine.model, ids, top=req.top)
    return _lens_response(engine, lens, ids)


def neuronpedia_url(engine, sae: str, index: int) -> str | None:
    spec = {"coarse": engine.profile.coarse, "fine": engine.profile.fine}.get(sae)
    return f"{NEURONPEDIA}/{spec.neuronpedia}/{index}" if spec is not None and spec.neuronpedia else None


def run_feature(engine, settings, sae: str, index: int, top: int = 10, prompt: PromptFields | None = None,
                include_sinks: bool = False) -> FeatureResponse:
    """A feature card; 404 when the index is outside the SAE's width (checked before any model work)."""
    if sae not in engine.saes:
        raise HTTPException(404, detail=f"no SAE named {sae!r}; this profile has {', '.join(engine.saes)}")
    width = int(engine.saes[sae].cfg.d_sae)
    if not 0 <= index < width:
        raise HTTPException(404, detail=[{"loc": ["path", "index"], "type": "out_of_range",
                                          "msg": f"feature index {index} does not exist: SAE {sae} has {width} features (0..{width - 1})"}])
    ids = encode_checked(engine, settings, prompt)[0] if prompt is not None else None
    with engine.session():
        card = an.feature_card(engine.model, engine.saes[sae], sae, index, top=top)
        acts = sink = None
        if ids is not None:
            a, s = an.feature_activations_and_sinks(engine.model, engine.saes[sae], engine.hook_name, ids, index,
                                                    engine.profile.sink_norm)
            acts, sink = [float(x) for x in a], [bool(x) for x in s]
    resp = FeatureResponse(sae=sae, index=index, width=width, decoder_norm=card.decoder_norm,
                           promoted=list(card.promoted), suppressed=list(card.suppressed),
                           neuronpedia_url=neuronpedia_url(engine, sae, index))
    if acts is not None:
        resp.tokens = [engine.tokenizer.decode([int(t)]) for t in ids]
        resp.activations, resp.sink = acts, sink
        ranked = [p for p in range(len(acts)) if include_sinks or not sink[p]] or list(range(len(acts)))
        best = max(ranked, key=lambda p: acts[p])
        resp.max_activation, resp.max_position = acts[best], best
    return resp


@router.post("/analyze", response_model=AnalyzeResponse)
def analyze(req: AnalyzeRequest, engine: EngineDep, settings: SettingsDep) -> AnalyzeResponse:
    """Tokens, each SAE's top features and reconstruction quality per token; the logit lens with lens=true."""
    return run_analysis(engine, settings, req)


@router.post("/lens", response_model=LensResponse)
def lens(req: LensRequest, engine: EngineDep, settings: SettingsDep) -> LensResponse:
    """Logit lens: every layer's residual through the final norm and the unembedding; top tokens per position."""
    return run_lens(engine, settings, req)


@router.get("/features/{sae}/{index}", response_model=FeatureResponse,
            responses={404: {"description": "index outside the SAE's width"}})
def feature(
    sae: SaeName,
    index: Annotated[int, Path(ge=0, description="feature index, 0 <= index < the SAE's width (see /health)")],
    engine: EngineDep,
    settings: SettingsDep,
    prompt: Annotated[str | None, Query(min_length=1, max_length=L.max_prompt_chars,
                                        description="optional: also return the activation at each token of this prompt")] = None,
    system_prompt: Annotated[str | None, Query(max_length=L.max_system_prompt_chars)] = None,
    chat: bool | None = None,
    top: Annotated[int, Query(ge=1, le=50, description="promoted/suppressed tokens listed")] = 10,
    include_sinks: bool = False,
) -> FeatureResponse:
    """Feature card: decoder norm, vocabulary projection, Neuronpedia link, activation on an optional prompt."""
    fields = PromptFields(prompt=prompt, system_prompt=system_prompt, chat=chat) if prompt is not None else None
    return run_feature(engine, settings, sae, index, top=top, prompt=fields, include_sinks=include_sinks)
