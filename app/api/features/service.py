"""Atlas data for a feature and search (by text through the model, by atlas): shared by JSON routes and pages."""
from __future__ import annotations

from dataclasses import asdict

from app.api.errors import check_feature_index, unprocessable
from app.api.features.schemas import (
    AtlasStatusModel,
    FeatureAtlasModel,
    FeatureAtlasResponse,
    SearchHitModel,
    SearchRequest,
    SearchResponse,
    SteerLinkModel,
)
from app.api.limits import enforce_limits
from app.engine import atlas as at
from app.engine import steering as ST
from app.engine.atlas.label_score import label_score
from app.engine.tokens import token_texts


def atlas_status(engine) -> AtlasStatusModel:
    """Whether the engine has an atlas for its SAEs, and if not why and the command that builds it."""
    a = engine.atlas
    meta = a.meta if a is not None else {}
    corpus = meta.get("corpus", {}).get("source") if isinstance(meta.get("corpus"), dict) else None
    return AtlasStatusModel(available=a is not None, status=engine.atlas_status,
                            build_command=at.build_command(engine.profile.name), folder=str(engine.atlas_dir),
                            tokens=meta.get("tokens"), valid_tokens=meta.get("valid_tokens"), corpus=corpus,
                            built_at=meta.get("built_at"))


def check_feature(engine, sae: str, index: int) -> int:
    """The SAE's width; 404 naming the valid range (or the SAE names) otherwise."""
    return check_feature_index(engine.saes, sae, index, ["path", "index"])


def feature_atlas(engine, sae: str, index: int) -> FeatureAtlasModel | None:
    """Atlas data of one feature (None without an atlas); no model work: codes and summaries only."""
    a = engine.atlas
    if a is None or sae not in a.codes:
        return None
    fa = a.feature(sae, index)
    d = asdict(fa)
    for ex in d["examples"]:
        ex.pop("token_ids")
    quantiles = []
    for name, exs in fa.quantiles:
        quantiles.append({"name": name, "examples": [{k: v for k, v in asdict(e).items() if k != "token_ids"} for e in exs]})
    d["quantiles"] = quantiles
    d["top_tokens"] = [asdict(t) for t in fa.top_tokens]
    d["neighbours"] = {k: [asdict(n) for n in v] for k, v in fa.neighbours.items()}
    d["corpus_tokens"] = a.n_valid
    d["label_score"] = asdict(label_score(a, sae, index))
    return FeatureAtlasModel.model_validate(d)


def atlas_mean(engine, sae: str, index: int) -> float | None:
    """The feature's mean activation when firing on the atlas corpus (None without an atlas)."""
    a = engine.atlas
    return float(a.mean_when_firing[sae][index]) if a is not None and sae in a.mean_when_firing else None


def steer_link(engine, settings, sae: str, index: int, prompt_max: float | None = None) -> SteerLinkModel | None:
    """Where a "steer with this feature" link opens Generate: the one rule in app.engine.steering."""
    scale = ST.typical_activation(atlas_mean(engine, sae, index), prompt_max)
    if scale is None:
        return None
    typical, source = scale
    limit = settings.limits.max_steering_strength
    return SteerLinkModel(value=ST.link_strength(typical, limit), typical=typical, times=ST.LINK_TIMES, source=source,
                          slider_max=ST.slider_span(typical, limit))


def run_feature_atlas(engine, settings, sae: str, index: int) -> FeatureAtlasResponse:
    width = check_feature(engine, sae, index)
    return FeatureAtlasResponse(sae=sae, index=index, width=width, atlas=feature_atlas(engine, sae, index),
                                atlas_status=atlas_status(engine), steer=steer_link(engine, settings, sae, index))


def _prefix_ids(engine) -> list[int]:
    """Tokens run before the query so that none of its tokens is position 0 (an attention sink)."""
    tok = engine.tokenizer
    ids = tok.encode("\n\n", add_special_tokens=False)
    if getattr(engine.model.cfg, "default_prepend_bos", False) and tok.bos_token_id is not None:
        ids = [tok.bos_token_id] + ids
    return ids


def _hits(engine, req: SearchRequest, found: dict) -> dict:
    """Hits as models with their label's detection F1; filtered by min_label_f1 and sorted as asked."""
    out = {}
    for n, hs in found.items():
        rows = []
        for h in hs:
            f1 = label_score(engine.atlas, n, h.index).f1 if engine.atlas is not None and n in engine.atlas.codes else None
            if req.min_label_f1 > 0 and (f1 is None or f1 < req.min_label_f1):
                continue
            rows.append(SearchHitModel.model_validate({**asdict(h), "label_f1": f1}))
        if req.sort == "label_f1":
            rows.sort(key=lambda m: -(m.label_f1 if m.label_f1 is not None else -1.0))  # stable: rank order on ties
        out[n] = rows
    return out


def run_search(engine, settings, req: SearchRequest) -> SearchResponse:
    """Search features by text (through the model: what fires on the query, ranked by max activation) and/or
    by atlas (label tokens / top examples containing the query)."""
    enforce_limits(req, settings.limits, loc=("query",))
    resp = SearchResponse(query=req.q, mode=req.mode, atlas_status=atlas_status(engine))
    if req.mode in ("both", "text"):
        ids = engine.tokenizer.encode(req.q, add_special_tokens=False)
        limit = settings.limits.max_prompt_tokens
        if len(ids) > limit:
            raise unprocessable(["query", "q"], f"query has {len(ids)} tokens; the limit is {limit}", "too_long")
        if not ids:
            raise unprocessable(["query", "q"], "the query has no tokens", "value_error")
        with engine.session():
            found = at.search_by_text(engine.model, engine.saes, engine.hook_name, _prefix_ids(engine), ids,
                                      sink_norm=engine.profile.sink_norm, top=req.top, atlas=engine.atlas)
        resp.text = _hits(engine, req, found)
        resp.query_tokens = token_texts(engine.tokenizer, ids)
    if req.mode in ("both", "atlas") and engine.atlas is not None:
        resp.atlas = _hits(engine, req, at.search_atlas(engine.atlas, req.q, top=req.top))
    return resp
