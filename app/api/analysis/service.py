"""Analysis services: the functions the JSON routes, the HTML fragments and saved-exploration re-runs call."""
from __future__ import annotations

from app.api.analysis.schemas import (
    AnalyzeRequest,
    AnalyzeResponse,
    FeatureResponse,
    LensRequest,
    LensResponse,
    SAETokenModel,
    TokenModel,
)
from app.api.errors import check_feature_index, unprocessable
from app.api.features.service import atlas_status, feature_atlas, steer_link
from app.api.limits import enforce_limits
from app.api.schemas import PromptFields, SystemReadModel
from app.engine import analysis as an
from app.engine.prompts import encode_prompt, template_system
from app.engine.ranking import RankBy, RankedFeature, rank_features
from app.engine.tokens import token_texts

NEURONPEDIA = "https://www.neuronpedia.org"
RANK_POOL = 128  # active features per token and SAE that the rank order is chosen from
CARD_TOP = 12  # promoted / suppressed tokens on a feature card


def encode_checked(engine, settings, req: PromptFields) -> tuple[tuple[int, ...], str]:
    """(token ids, rendered text) of a request's prompt, or 422 when it breaks a limit (characters, tokens)."""
    enforce_limits(req, settings.limits)
    ep = encode_prompt(engine.tokenizer, req.prompt, req.system_prompt, req.chat,
                       prepend_bos=engine.profile.prepend_bos, no_default_system=req.no_default_system)
    limit = settings.limits.max_prompt_tokens
    if len(ep.token_ids) > limit:
        raise unprocessable(["body", "prompt"], f"prompt has {len(ep.token_ids)} tokens; the limit is {limit}", "too_long")
    return ep.token_ids, ep.text


def ranked_features(engine, sae: str, indices, values, by: RankBy = "unusual") -> tuple[RankedFeature, ...]:
    """Features in display order, with the atlas's typical activation and density when the engine has an atlas."""
    at = engine.atlas
    if at is None or sae not in at.codes:
        return rank_features(indices, values, None, None, by)
    return rank_features(indices, values, at.mean_when_firing[sae], at.density[sae], by)


def feature_label(engine, sae: str, index: int) -> str:
    """The atlas label of a feature ('' without an atlas)."""
    at = engine.atlas
    return at.label(sae, int(index)) if at is not None and sae in at.codes else ""
def system_read(engine, prompt: str, system_prompt: str | None, chat: bool | None, no_default: bool = False) -> SystemReadModel:
    """Which system prompt the model reads for these fields (the same encoding as encode_checked; no model run)."""
    ep = encode_prompt(engine.tokenizer, prompt, system_prompt, chat, prepend_bos=engine.profile.prepend_bos,
                       no_default_system=no_default)
    ts = template_system(engine.tokenizer) if ep.chat else None
    return SystemReadModel(source=ep.system_source, text=ep.system, default=ts.default if ts else None,
                           can_omit=bool(ts and ts.can_omit), chat=ep.chat)


def system_of(engine, req: PromptFields) -> SystemReadModel:
    return system_read(engine, req.prompt, req.system_prompt, req.chat, req.no_default_system)


def _lens_response(engine, lens: an.LogitLens, ids) -> LensResponse:
    return LensResponse(profile=engine.profile.name, layers=list(lens.layers),
                        tokens=token_texts(engine.tokenizer, ids),
                        top_tokens=[[list(c) for c in row] for row in lens.top_tokens],
                        top_probs=[[list(c) for c in row] for row in lens.top_probs], lens_kind=lens.kind,
                        kl=[list(row) for row in lens.kl], sink=list(lens.sink),
                        kl_mean=None if lens.kl_mean is None else list(lens.kl_mean))


def tuned_for(engine, kind: str):
    """The engine's tuned lens for lens_kind 'tuned' (None for 'logit'); 422 naming lens_kind when it has none."""
    if kind != "tuned":
        return None
    tuned = getattr(engine, "tuned_lens", None)
    if tuned is None:
        why = getattr(engine, "tuned_lens_status", "not loaded")
        raise unprocessable(["body", "lens_kind"], f"profile {engine.profile.name} has no tuned lens: {why}")
    return tuned


def _lens(engine, ids, kind: str, top: int = 5, cache=None, key=None) -> an.LogitLens:
    """The logit or tuned lens of a prompt (the residuals from the analysis forward when it kept them)."""
    return an.logit_lens(engine.model, ids, top=top, resid_cache=cache, cache_key=key, tuned=tuned_for(engine, kind),
                         sink_norm=engine.profile.sink_norm)


def _resid_cache(engine, ids):
    """The engine's residual cache and this prompt's key in it (None, None for an engine without one)."""
    cache = getattr(engine, "resid_cache", None)
    return (cache, cache.key(engine.fingerprint, ids)) if cache is not None else (None, None)


def run_analysis(engine, settings, req: AnalyzeRequest) -> AnalyzeResponse:
    """Shared by the JSON API and the HTML fragments."""
    ids, text = encode_checked(engine, settings, req)
    lens = None
    if req.lens:
        tuned_for(engine, req.lens_kind)  # 422 before any model work
    with engine.session():
        # the same forward keeps every layer's residual: the lens (now or in a follow-up /api/lens) runs no forward
        cache, key = _resid_cache(engine, ids)
        # every active feature (up to RANK_POOL) comes back, so the rank order is chosen over all of them
        a = an.analyze(engine.model, engine.saes, engine.hook_name, ids, top_k=max(req.top_k, RANK_POOL), sink_norm=engine.profile.sink_norm,
                       resid_cache=cache, cache_key=key)
        if req.lens:
            lens = _lens(engine, ids, req.lens_kind, cache=cache, key=key)
    toks = []
    for p, (tid, t) in enumerate(zip(a.token_ids, a.tokens)):
        saes = {}
        for name, views in a.per_sae.items():
            v = views[p]
            hide = a.sink[p] and not req.include_sinks
            ranked = () if hide else ranked_features(engine, name, v.indices, v.values, req.rank)[: req.top_k]
            saes[name] = SAETokenModel(indices=[r.index for r in ranked], values=[r.value for r in ranked],
                                       ratios=[r.ratio for r in ranked], dense=[r.dense for r in ranked],
                                       labels=[feature_label(engine, name, r.index) for r in ranked],
                                       rel_error=v.rel_error, cosine=v.cosine, l0=v.l0)
        toks.append(TokenModel(position=p, token_id=tid, token=t, sink=a.sink[p], resid_norm=a.resid_norm[p], saes=saes))
    ev = {k: (None if v != v else v) for k, v in a.explained_variance.items()}
    return AnalyzeResponse(profile=engine.profile.name, hook_name=engine.hook_name, text=text, tokens=toks,
                           explained_variance=ev, next_tokens=list(a.next_token_top), next_token_ids=list(a.next_token_ids),
                           sae_widths={k: int(s.cfg.d_sae) for k, s in engine.saes.items()},
                           lens=_lens_response(engine, lens, ids) if lens is not None else None,
                           card=_card(engine, settings, req), system=system_of(engine, req))


def _card(engine, settings, req: AnalyzeRequest) -> FeatureResponse | None:
    """The card of req.feature on the prompt (the card an open feature shows); 404 naming the width when out of range."""
    if req.feature is None:
        return None
    sae, _, idx = req.feature.partition(":")
    check_feature_index(engine.saes, sae, int(idx), ["body", "feature"])
    return run_feature(engine, settings, sae, int(idx), top=CARD_TOP, prompt=req, include_sinks=req.include_sinks)


def run_lens(engine, settings, req: LensRequest) -> LensResponse:
    ids, _ = encode_checked(engine, settings, req)
    tuned_for(engine, req.lens_kind)
    with engine.session():
        cache, key = _resid_cache(engine, ids)
        lens = _lens(engine, ids, req.lens_kind, top=req.top, cache=cache, key=key)
    return _lens_response(engine, lens, ids)


def neuronpedia_url(engine, sae: str, index: int) -> str | None:
    spec = {"coarse": engine.profile.coarse, "fine": engine.profile.fine}.get(sae)
    return f"{NEURONPEDIA}/{spec.neuronpedia}/{index}" if spec is not None and spec.neuronpedia else None


def run_feature(engine, settings, sae: str, index: int, top: int = 10, prompt: PromptFields | None = None,
                include_sinks: bool = False) -> FeatureResponse:
    """A feature card; 404 when the index is outside the SAE's width (checked before any model work)."""
    width = check_feature_index(engine.saes, sae, index, ["path", "index"])
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
    resp.atlas, resp.atlas_status = feature_atlas(engine, sae, index), atlas_status(engine)
    if acts is not None:
        resp.tokens = token_texts(engine.tokenizer, ids)
        resp.activations, resp.sink = acts, sink
        ranked = [p for p in range(len(acts)) if include_sinks or not sink[p]] or list(range(len(acts)))
        best = max(ranked, key=lambda p: acts[p])
        resp.max_activation, resp.max_position = acts[best], best
    resp.steer = steer_link(engine, settings, sae, index, resp.max_activation)
    return resp
