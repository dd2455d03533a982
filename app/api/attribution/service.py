"""Attribution service: the function the JSON route, the analysis page's panel and saved re-runs call."""
from __future__ import annotations

from app.api.attribution.schemas import (
    AttributionEntryModel,
    AttributionPositionModel,
    AttributionRequest,
    AttributionResponse,
    AttributionTermModel,
    NextTokenModel,
)
from app.api.errors import out_of_range, unprocessable
from app.api.features.service import steer_link
from app.api.schemas import finite_or_none
from app.engine import attribution as attr
from app.engine.ranking import dense_last
from app.engine.tokens import token_text, token_texts


def run_attribution(engine, settings, req: AttributionRequest) -> AttributionResponse:
    """Rank both SAEs' features by their attribution to the target logit; clamp the top ones to check."""
    from app.api.analysis.service import encode_checked, ranked_features, system_of

    ids, text = encode_checked(engine, settings, req)
    n = len(ids)
    p = n - 1 if req.position is None else req.position
    if p >= n:
        raise out_of_range(["body", "position"], f"position {p} does not exist: the prompt has {n} tokens (0..{n - 1})")
    tok = engine.tokenizer
    vocab = int(engine.model.cfg.d_vocab_out)
    note = None
    target = None
    twin = None  # (id, text) of the typed target's spaced twin
    if req.target_id is not None:
        if req.target_id >= vocab:
            raise out_of_range(["body", "target_id"], f"token id {req.target_id} does not exist: the vocabulary has {vocab} tokens (0..{vocab - 1})")
        target = req.target_id
    elif req.target is not None:
        t_ids = tok.encode(req.target, add_special_tokens=False)
        if not t_ids:
            raise unprocessable(["body", "target"], "the target text has no tokens")
        target = int(t_ids[0])
        if len(t_ids) > 1:
            note = f"{req.target!r} is {len(t_ids)} tokens; its first, {token_text(tok, target)!r}, is attributed"
        twin_text = attr.spaced_twin(req.target)
        twin_ids = tok.encode(twin_text, add_special_tokens=False) if twin_text else []
        if twin_ids and int(twin_ids[0]) != target:
            twin = (int(twin_ids[0]), twin_text)
    sink_norm = engine.profile.sink_norm
    atlas = getattr(engine, "atlas", None)
    with engine.session():
        a = attr.attribute(engine.model, engine.saes, engine.hook_name, ids, position=p, target=target, top=req.top,
                           sink_norm=sink_norm, probs_of=(twin[0],) if twin else ())
        if req.n_validate:
            a = attr.validate_by_ablation(engine.model, engine.saes, engine.hook_name, a, req.n_validate, sink_norm)
    dec = lambda i: token_text(tok, i)  # noqa: E731
    strip = token_texts(tok, a.token_ids)  # a split character shows on the token that completes it
    ab = {(x.sae, x.index): x for x in a.ablations}
    feats = []
    for f in a.features:
        v = ab.get((f.sae, f.index))
        mx = max((act for _, act, _ in f.positions), default=0.0)
        link = steer_link(engine, settings, f.sae, f.index, mx)
        rk = ranked_features(engine, f.sae, [f.index], [mx])[0]
        feats.append(AttributionEntryModel(
            sae=f.sae, index=f.index, label=atlas.label(f.sae, f.index) if atlas is not None else None,
            attribution=f.attribution, max_activation=mx, ratio=rk.ratio, dense=rk.dense,
            steer_value=(link.value if f.attribution >= 0 else -link.value) if link is not None else None,
            positions=[AttributionPositionModel(position=q, token=strip[q], activation=act, attribution=at)
                       for q, act, at in f.positions],
            estimate=v.estimate if v else None, actual=v.actual if v else None))
    if req.rank == "unusual":  # the attribution's own order, dense features after the rest
        feats = dense_last(feats, [x.dense for x in feats])
    twin_out, warning = None, None
    if twin is not None:
        (tid, p_twin), = a.also
        twin_out = NextTokenModel(id=tid, token=dec(tid), prob=p_twin)
        if attr.twin_is_meant(a.prob, p_twin):
            space = "without" if str(twin[1]).startswith(" ") else "with"
            warning = (f"You typed {req.target!r}: the token {dec(a.target)!r} ({space} a leading space) has p = {a.prob:.3f} "
                       f"here, while {dec(tid)!r} has p = {p_twin:.3f}. A word inside a sentence is usually the token "
                       f"with its space; pick the target from the model's next tokens below.")
    return AttributionResponse(
        profile=engine.profile.name, hook_name=engine.hook_name, text=text, tokens=strip,
        position=p, target_id=a.target, target=dec(a.target), target_note=note, logit=a.logit, prob=a.prob,
        top_next=[(dec(i), q) for i, q in a.top_next], total=a.total, features=feats,
        terms=[AttributionTermModel(name=t.name, sae=t.sae, attribution=t.attribution) for t in a.terms],
        decomposed=list(a.decomposed), correlation=finite_or_none(a.correlation), n_validated=len(a.ablations),
        next_tokens=[NextTokenModel(id=i, token=dec(i), prob=q) for i, q in a.top_next], twin=twin_out,
        target_warning=warning, system=system_of(engine, req))
