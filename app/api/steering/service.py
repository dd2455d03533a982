"""Generation services: the functions the JSON routes, the HTML fragments, the stream and saved-exploration
re-runs call. The maths is in app/engine (steering, sampling, generation)."""
from __future__ import annotations

from typing import Callable

from app.api.analysis.service import encode_checked, system_of, system_read
from app.api.errors import check_feature_index, unprocessable
from app.api.features.service import atlas_mean
from app.api.limits import enforce_limits
from app.api.steering.schemas import (
    DoseRequest,
    DoseResponse,
    FeatureInfoRequest,
    FeatureInfoResponse,
    GenerateRequest,
    GenerateResponse,
    GenerationOut,
    MovedOut,
    PromotedOut,
    ShiftRowOut,
    SteerFeatureModel,
    SteerRequest,
    SteerResponse,
    SystemShiftRequest,
    SystemShiftResponse,
    TemperatureRequest,
    TemperatureResponse,
    TemperatureViewOut,
    TokenOut,
    TokenRef,
)
from app.engine import generation as G
from app.engine import sampling as S
from app.engine import steering as ST
from app.engine.analysis import logit_direction
from app.engine.continuous import GenJob
from app.engine.prompts import encode_prompt, token_strings
from app.engine.tokens import token_text


def check_features(engine, feats: list[SteerFeatureModel], field: str = "steering") -> list[ST.SteerFeature]:
    out = []
    for i, f in enumerate(feats):
        check_feature_index(engine.saes, f.sae, f.index,
                            ["body", field, i, "index"] if field == "steering" else ["body", field, "index"], status=422)
        out.append(ST.SteerFeature(f.sae, f.index, f.mode, f.value))
    return out


def steer_options(engine, generated_only: bool, skip_sinks: bool) -> ST.SteerOptions:
    return ST.SteerOptions(generated_only=generated_only, skip_first=skip_sinks,
                           sink_norm=engine.profile.sink_norm if skip_sinks else None)


def gen_out(g: G.Generation) -> GenerationOut:
    return GenerationOut(tokens=[TokenOut(id=t.id, text=t.text, prob=t.prob) for t in g.tokens], text=g.text,
                         finish_reason=g.finish_reason, n_new=len(g.tokens), seconds=g.seconds,
                         tokens_per_s=(g.tokens_per_s if g.seconds > 0 else None), decoder=g.decoder)


def shift_rows(probs_a, probs_b, tokenizer, top_n) -> list[ShiftRowOut]:
    return [ShiftRowOut(token_id=r.token_id, token=r.token, p_a=r.p_a, p_b=r.p_b, delta=r.delta, rank_a=r.rank_a, rank_b=r.rank_b)
            for r in S.distribution_shift(probs_a, probs_b, tokenizer, top_n)]


def run_generate(engine, settings, req: GenerateRequest, cancel=None,
                 on_start: Callable[[tuple, str], None] | None = None,
                 on_token: Callable[[int, G.GenToken], None] | None = None) -> GenerateResponse:
    """One (optionally steered) generation. Streaming: on_start(ids, text) once the engine is ours, on_token(i, token)
    per token; `cancel` (a threading.Event) stops it before the next token."""
    ids, text = encode_checked(engine, settings, req)
    feats = check_features(engine, req.steering)
    job = GenJob(tuple(ids), tuple(feats), req.sampling(), req.max_new_tokens, G.stop_token_ids(engine.tokenizer),
                 steer_options(engine, req.generated_only, req.skip_sinks), cancel=cancel,
                 on_start=None if on_start is None else lambda: on_start(ids, text), on_token=on_token)
    (done,) = engine.generate_rows([job])
    g = done.generation(engine.tokenizer)
    return GenerateResponse(profile=engine.profile.name, hook_name=engine.hook_name, prompt_text=text,
                            prompt_tokens=token_strings(engine.tokenizer, ids), generation=gen_out(g), system=system_of(engine, req))


def run_steer(engine, settings, req: SteerRequest) -> SteerResponse:
    """Unsteered and steered runs with the same seed and settings, their divergence, and the next-token shift."""
    ids, text = encode_checked(engine, settings, req)
    feats = check_features(engine, req.steering)
    stops = G.stop_token_ids(engine.tokenizer)
    opts = steer_options(engine, req.generated_only, req.skip_sinks)
    # both runs are rows of one batched decode (the unsteered row carries no steering, as generation.generate)
    ja, jb = engine.generate_rows([GenJob(tuple(ids), (), req.sampling(), req.max_new_tokens, stops, opts),
                                   GenJob(tuple(ids), tuple(feats), req.sampling(), req.max_new_tokens, stops, opts)])
    a, b, ra, rb = ja.generation(engine.tokenizer), jb.generation(engine.tokenizer), ja.run, jb.run
    diverged, first = ST.divergence(a.ids, b.ids)
    return SteerResponse(profile=engine.profile.name, hook_name=engine.hook_name, prompt_text=text,
                         prompt_tokens=token_strings(engine.tokenizer, ids), unsteered=gen_out(a), steered=gen_out(b),
                         diverged=diverged, first_divergence=first,
                         shift=shift_rows(ra.first_logits.softmax(-1), rb.first_logits.softmax(-1), engine.tokenizer, req.top_n),
                         system=system_of(engine, req))


def run_dose(engine, settings, req: DoseRequest) -> DoseResponse:
    """One generation per strength; the next-token distribution of each run's prompt pass gives the curves."""
    ids, text = encode_checked(engine, settings, req)
    (feat,) = check_features(engine, [req.feature], field="feature")
    stops = G.stop_token_ids(engine.tokenizer)
    opts = steer_options(engine, req.generated_only, req.skip_sinks)
    pv, pi = logit_direction(engine.model, engine.saes[feat.sae], feat.index).topk(req.promoted_top)  # weights only
    jobs = engine.generate_rows([GenJob(tuple(ids), (ST.SteerFeature(feat.sae, feat.index, feat.mode, float(s)),), req.sampling(),
                                        req.max_new_tokens, stops, opts) for s in req.strengths])  # one row per strength
    comps = [j.generation(engine.tokenizer) for j in jobs]
    probs = [j.run.first_logits.softmax(-1) for j in jobs]
    tok = engine.tokenizer
    promoted = [PromotedOut(token_id=int(i), token=token_text(tok, i), logit_weight=float(v), probs=[float(p[int(i)]) for p in probs])
                for v, i in zip(pv, pi)]
    moved_ids, spreads = ST.most_moved_tokens(probs, req.moved_top)
    moved = [MovedOut(token_id=i, token=token_text(tok, i), spread=d, probs=[float(p[i]) for p in probs])
             for i, d in zip(moved_ids, spreads)]
    top_next = []
    for p in probs:
        j = int(p.argmax())
        top_next.append(TokenOut(id=j, text=token_text(tok, j), prob=float(p[j])))
    return DoseResponse(profile=engine.profile.name, hook_name=engine.hook_name, prompt_text=text, strengths=list(req.strengths),
                        completions=[gen_out(c) for c in comps], promoted=promoted, moved=moved,
                        top_next=top_next, system=system_of(engine, req))


def run_temperature(engine, settings, req: TemperatureRequest) -> TemperatureResponse:
    """One forward pass (the generation decoder's prompt pass); re-softmaxed at each temperature."""
    ids, text = encode_checked(engine, settings, req)
    feats = check_features(engine, req.steering)
    with engine.session():
        logits = ST.steered_next_token_logits(engine.model, engine.saes, engine.hook_name, ids, feats,
                                              steer_options(engine, req.generated_only, req.skip_sinks))
    top = logits.topk(min(req.top_n, logits.shape[-1])).indices.tolist()
    views = S.temperature_views(logits, req.temperatures, top, req.top_k, req.top_p)
    tok = engine.tokenizer
    return TemperatureResponse(
        profile=engine.profile.name, prompt_text=text, tokens=[TokenRef(id=i, token=token_text(tok, i)) for i in top],
        views=[TemperatureViewOut(temperature=v.temperature, entropy_bits=v.entropy_bits, probs=list(v.probs), kept=list(v.kept),
                                  renormalised=list(v.renormalised), n_kept=v.n_kept, entropy_kept_bits=v.entropy_kept_bits) for v in views],
        top_k=req.top_k, top_p=req.top_p, steered=bool(feats), system=system_of(engine, req))


def run_system_shift(engine, settings, req: SystemShiftRequest) -> SystemShiftResponse:
    """The same user prompt under system prompt A and B (either may be none): next-token table with both
    probabilities, the change and the rank movement (optionally both under the same steering)."""
    enforce_limits(req, settings.limits)
    if (req.system_a or None) == (req.system_b or None):  # none vs none (or the same text) would show every change as 0
        same = "both are empty (no system prompt)" if not req.system_a else "they are the same text"
        raise unprocessable(["body", "system_b"], f"system prompts A and B are the same: {same}; enter a different system prompt B to compare")
    feats = check_features(engine, req.steering)
    encoded = []
    for field, sys_prompt in (("system_a", req.system_a), ("system_b", req.system_b)):
        ep = encode_prompt(engine.tokenizer, req.prompt, sys_prompt or None, req.chat,
                           prepend_bos=engine.profile.prepend_bos, no_default_system=req.no_default_system)
        if len(ep.token_ids) > settings.limits.max_prompt_tokens:
            raise unprocessable(["body", field], f"prompt with {field} has {len(ep.token_ids)} tokens; the limit is {settings.limits.max_prompt_tokens}")
        encoded.append(ep)
    opts = steer_options(engine, req.generated_only, req.skip_sinks)
    with engine.session():
        la, lb = [ST.steered_next_token_logits(engine.model, engine.saes, engine.hook_name, ep.token_ids, feats, opts) for ep in encoded]
    pa, pb = la.softmax(-1), lb.softmax(-1)
    return SystemShiftResponse(profile=engine.profile.name, text_a=encoded[0].text, text_b=encoded[1].text,
                               rows=shift_rows(pa, pb, engine.tokenizer, req.top_n),
                               entropy_a_bits=S.entropy_bits(pa), entropy_b_bits=S.entropy_bits(pb), steered=bool(feats),
                               system_a_read=system_read(engine, req.prompt, req.system_a or None, req.chat, req.no_default_system),
                               system_b_read=system_read(engine, req.prompt, req.system_b or None, req.chat, req.no_default_system))


def run_feature_info(engine, settings, req: FeatureInfoRequest) -> FeatureInfoResponse:
    ids, _ = encode_checked(engine, settings, req)
    width = check_feature_index(engine.saes, req.sae, req.index, ["body", "index"], status=422)
    with engine.session():
        fs = ST.feature_scale(engine.model, engine.saes, engine.hook_name, req.sae, req.index, ids,
                              steer_options(engine, False, req.skip_sinks), atlas_mean=atlas_mean(engine, req.sae, req.index))
    span = ST.slider_span(fs.typical_max, settings.limits.max_steering_strength)
    return FeatureInfoResponse(sae=req.sae, index=req.index, width=width, max_on_prompt=fs.max_on_prompt,
                               typical_max=fs.typical_max, source=fs.source, slider_min=-span, slider_max=span,
                               promoted=[TokenRef(id=i, token=t) for i, t, _ in fs.promoted])
