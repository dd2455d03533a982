"""Compare, patching, attention and head-score services: what the JSON routes, the pages and saved re-runs call."""
from __future__ import annotations

import numpy as np

from app.api.errors import unprocessable
from app.api.limits import enforce_limits
from app.api.patching.schemas import (
    AttentionRequest,
    AttentionResponse,
    CompareRequest,
    CompareResponse,
    FeatureDiffModel,
    FeaturePatchModel,
    HeadExampleModel,
    HeadScoreModel,
    HeadsRequest,
    HeadsResponse,
    PatchingRequest,
    PatchingResponse,
)
from app.api.schemas import finite_or_none
from app.engine import compare as cmp
from app.engine import heads as hd
from app.engine import patching as pt
from app.engine.prompts import encode_prompt
from app.engine.tokens import token_texts


def _grid(g) -> list[list[float | None]]:
    return [[finite_or_none(v) for v in row] for row in g]


def _encode(engine, settings, req, field: str, text: str, limit_name: str = "max_prompt_tokens"):
    ep = encode_prompt(engine.tokenizer, text, req.system_prompt, req.chat, prepend_bos=engine.profile.prepend_bos,
                       no_default_system=getattr(req, "no_default_system", False))
    limit = min(settings.limits.max_prompt_tokens, getattr(settings.limits, limit_name))
    if len(ep.token_ids) > limit:
        name = limit_name if limit == getattr(settings.limits, limit_name) else "max_prompt_tokens"
        raise unprocessable(["body", field], f"{field} has {len(ep.token_ids)} tokens; the limit is {limit} ({name})",
                            "too_long")
    return list(ep.token_ids)


def _words(engine, answer: str, wrong: str, fields=("answer", "wrong")) -> tuple[int, int]:
    try:
        return (pt.single_token(engine.tokenizer, answer, fields[0]),
                pt.single_token(engine.tokenizer, wrong, fields[1]))
    except pt.PatchingInputError as exc:
        raise unprocessable(["body", *exc.field.split(".")], str(exc)) from None


def _label(engine, sae: str, index: int) -> str | None:
    atlas = getattr(engine, "atlas", None)
    return atlas.label(sae, index) if atlas is not None else None


def _dec(engine):
    tok = engine.tokenizer
    return lambda i: tok.decode([int(i)])


def run_compare(engine, settings, req: CompareRequest) -> CompareResponse:
    """Both prompts once each: features that differ most (at a position and summed), next tokens, LD."""
    enforce_limits(req, settings.limits)
    ids_a = _encode(engine, settings, req, "prompt_a", req.prompt_a)
    ids_b = _encode(engine, settings, req, "prompt_b", req.prompt_b)
    toks = _words(engine, req.tokens[0], req.tokens[1], fields=("tokens.0", "tokens.1")) if req.tokens else None
    if req.position is not None:
        if len(ids_a) != len(ids_b):
            raise unprocessable(["body", "position"], f"a position is compared only when both prompts have the same "
                                                      f"length; prompt_a has {len(ids_a)} tokens, prompt_b {len(ids_b)}")
        if req.position >= len(ids_a):
            raise unprocessable(["body", "position"], f"position {req.position} does not exist: the prompts have "
                                                      f"{len(ids_a)} tokens (0..{len(ids_a) - 1})")
    with engine.session():
        c = cmp.compare_prompts(engine.model, engine.saes, engine.hook_name, ids_a, ids_b, req.position, toks,
                                top=req.top, sink_norm=engine.profile.sink_norm)
    dec = _dec(engine)
    fd = lambda f: FeatureDiffModel(sae=f.sae, index=f.index, label=_label(engine, f.sae, f.index), a=f.a, b=f.b,  # noqa: E731
                                    diff=f.diff)
    return CompareResponse(
        profile=engine.profile.name, tokens_a=[dec(i) for i in ids_a], tokens_b=[dec(i) for i in ids_b],
        aligned=c.aligned, position_a=c.position_a, position_b=c.position_b,
        at_position=[fd(f) for f in c.at_position], summed=[fd(f) for f in c.summed],
        next_a=[(dec(i), p) for i, p in c.next_a], next_b=[(dec(i), p) for i, p in c.next_b],
        answer=dec(toks[0]) if toks else None, wrong=dec(toks[1]) if toks else None,
        logit_diff_a=c.logit_diff_a, logit_diff_b=c.logit_diff_b)


def run_patching(engine, settings, req: PatchingRequest) -> PatchingResponse:
    """Exact patching over layers × positions of one site (batched), plus SAE-feature and attribution patching."""
    enforce_limits(req, settings.limits)
    clean = _encode(engine, settings, req, "clean", req.clean, "max_patching_tokens")
    corrupt = _encode(engine, settings, req, "corrupt", req.corrupt, "max_patching_tokens")
    dec = _dec(engine)
    tokens, corrupt_tokens = [dec(i) for i in clean], [dec(i) for i in corrupt]
    try:
        pt.check_same_length(tokens, corrupt_tokens)
    except pt.PatchingInputError as exc:
        raise unprocessable(["body", exc.field], str(exc), "length_mismatch", clean_tokens=tokens,
                            corrupt_tokens=corrupt_tokens) from None
    a, w = _words(engine, req.answer, req.wrong)
    model, hook = engine.model, engine.hook_name
    with engine.session():
        g = pt.exact_patching(model, clean, corrupt, a, w, req.site)
        at = pt.attribution_patching(model, clean, corrupt, a, w, req.site) if req.attribution else None
        feats: tuple[pt.FeaturePatch, ...] = ()
        if req.features:
            x, _ = pt.cached_run(model, clean, [hook])
            sink = engine.profile.sink_norm
            keep = (x[hook].float().norm(dim=-1) <= sink) if sink is not None else None
            if keep is not None:
                keep[0] = False
            feats = pt.feature_patching(model, engine.saes, hook, clean, corrupt, a, w, keep=keep)
    return PatchingResponse(
        profile=engine.profile.name, site=req.site, layers=list(g.layers), tokens=tokens, corrupt_tokens=corrupt_tokens,
        grid=_grid(g.grid), ld_clean=g.ld_clean, ld_corrupt=g.ld_corrupt, answer=dec(a), wrong=dec(w), answer_id=a,
        wrong_id=w, runs=g.runs, batches=g.batches, attribution_grid=_grid(at.grid) if at else None,
        correlation=finite_or_none(pt.correlation(at.grid, g.grid)) if at else None, sae_hook=hook,
        sae_layer=pt.sae_grid_layer(hook, req.site),
        features=[FeaturePatchModel(sae=f.sae, index=f.index, label=_label(engine, f.sae, f.index),
                                    effect=finite_or_none(f.effect), delta=list(f.delta)) for f in feats])


def run_attention(engine, settings, req: AttentionRequest) -> AttentionResponse:
    """Every head's attention pattern on the prompt and its direct logit attribution to the next token."""
    enforce_limits(req, settings.limits)
    ids = _encode(engine, settings, req, "prompt", req.prompt, "max_attention_tokens")
    target = None
    if req.target_id is not None:
        vocab = int(engine.model.cfg.d_vocab)
        if req.target_id >= vocab:
            raise unprocessable(["body", "target_id"], f"token id {req.target_id} does not exist: the vocabulary has "
                                                       f"{vocab} tokens (0..{vocab - 1})")
        target = req.target_id
    elif req.target is not None:
        t = engine.tokenizer.encode(req.target, add_special_tokens=False)
        if not t:
            raise unprocessable(["body", "target"], "the target text has no tokens")
        target = int(t[0])
    with engine.session():
        # the residuals the analysis forward of this prompt kept (the panel opens after it): each block's attention
        # alone runs on them, no forward; without them one forward (cheaper than keeping them first)
        cache = getattr(engine, "resid_cache", None)
        stack = cache.get(cache.key(engine.fingerprint, ids)) if cache is not None else None
        hp = hd.head_patterns(engine.model, ids, target, resid=stack)
    dec = _dec(engine)
    pats = np.round(hp.patterns.astype(np.float64), 4)
    return AttentionResponse(profile=engine.profile.name, tokens=token_texts(engine.tokenizer, ids),
                             n_layers=pats.shape[0], n_heads=pats.shape[1], patterns=pats.tolist(),
                             dla=[[float(v) for v in row] for row in hp.dla], target=dec(hp.target),
                             target_id=hp.target, top_next=[(dec(i), p) for i, p in hp.top_next],
                             top_next_ids=[i for i, _ in hp.top_next])


def run_heads(engine, settings, req: HeadsRequest) -> HeadsResponse:
    """Four behaviour scores for every head on repeated random sequences, with the top head's pattern each."""
    enforce_limits(req, settings.limits)
    with engine.session():
        hs = hd.head_scores(engine.model, engine.tokenizer, req.seq_len, req.n_seqs, req.seed,
                            prepend_bos=engine.profile.prepend_bos)
    dec = _dec(engine)
    top = {}
    for name, s in hs.scores.items():
        order = np.argsort(-s, axis=None)[:req.top]
        top[name] = [HeadScoreModel(layer=int(i // s.shape[1]), head=int(i % s.shape[1]), score=float(s.flat[i]))
                     for i in order]
    n_layers, n_heads = next(iter(hs.scores.values())).shape
    return HeadsResponse(profile=engine.profile.name, n_layers=int(n_layers), n_heads=int(n_heads),
                         tokens=[dec(i) for i in hs.token_ids],
                         scores={k: [[float(v) for v in row] for row in s] for k, s in hs.scores.items()}, top=top,
                         examples=[HeadExampleModel(score=k, layer=x, head=h,
                                                    pattern=np.round(p.astype(np.float64), 4).tolist())
                                   for k, (x, h, p) in hs.examples.items()])
