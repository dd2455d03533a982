"""Per-token SAE features, reconstruction quality, logit lens and feature cards (pure computation).

The building blocks live in app.engine.analysis.core; analyze and the lens stay here, where tests patch
`analyze` and `LENS_ROWS_PER_CHUNK` (read at call time)."""
from __future__ import annotations

import torch

from app.engine.analysis.core import (
    Analysis,
    FeatureCard,
    LogitLens,
    ResidualCache,
    SAETokenView,
    _decoder,
    _final_logits,
    _forward_capture,
    explained_variance,
    lens_hook_names,
    make_store_hook,
    sae_token_views,
    sink_mask,
)
from app.engine.analysis.unembed import unembed_top
from app.engine.tokens import token_text, token_texts
from app.engine.tuned_lens import translate

__all__ = ["SAETokenView", "Analysis", "LogitLens", "FeatureCard", "sink_mask", "sae_token_views", "explained_variance", "make_store_hook", "_forward_capture", "_final_logits", "_decoder", "lens_hook_names", "ResidualCache", "analyze", "feature_activations", "LENS_ROWS_PER_CHUNK",
           "lens_residuals", "lens_top", "lens_reference", "logit_lens", "logit_direction", "feature_card", "feature_activations_and_sinks"]


def analyze(model, saes: dict, hook_name: str, token_ids, top_k: int = 10, sink_norm: float | None = None,
            next_top: int = 10, resid_cache: ResidualCache | None = None, cache_key=None) -> Analysis:
    """One forward pass (caching only the hook; only the last position is unembedded); both SAEs encoded.

    With a resid_cache, the same forward also keeps every layer's residual there under cache_key (the lens's
    input: a follow-up `logit_lens(..., resid_cache, cache_key)` then runs no forward at all); when the cache
    already holds this prompt's residuals, no forward runs here either (SAE encodes and next tokens only).
    """
    names = [hook_name]
    lens_names = lens_hook_names(model.cfg.n_layers)
    stack = resid_cache.get(cache_key) if resid_cache is not None and hook_name in lens_names else None
    if stack is not None:  # this prompt's forward already ran: its residuals are all we need
        resid, final = stack[lens_names.index(hook_name)], stack[-1][None]
    else:
        if resid_cache is not None:
            names = lens_names[:-1] + ([hook_name] if hook_name not in lens_names[:-1] else [])
        final, store = _forward_capture(model, token_ids, names)
        if resid_cache is not None:
            resid_cache.put(cache_key, _lens_stack(model, store, final))
        resid = store[hook_name][0].float()
    sink = sink_mask(model, token_ids, resid, sink_norm)
    keep = ~sink.to(resid.device)
    per_sae, ev = {}, {}
    for name, sae in saes.items():
        views, _, x_hat = sae_token_views(sae, resid, top_k)
        per_sae[name] = views
        ev[name] = explained_variance(resid[keep], x_hat.float()[keep])
    probs = _final_logits(model, final[:, -1:])[0, -1].float().softmax(-1)
    pv, pi = probs.topk(min(next_top, probs.shape[-1]))
    decode = _decoder(model.tokenizer)
    return Analysis(
        token_ids=tuple(int(t) for t in token_ids),
        tokens=tuple(token_texts(model.tokenizer, token_ids)),
        sink=tuple(bool(s) for s in sink),
        resid_norm=tuple(resid.norm(dim=-1).tolist()),
        per_sae=per_sae,
        explained_variance=ev,
        next_token_top=tuple((decode(i), float(v)) for v, i in zip(pv.tolist(), pi.tolist())),
        next_token_ids=tuple(int(i) for i in pi.tolist()),
    )


def feature_activations(model, sae, hook_name: str, token_ids, index: int) -> torch.Tensor:
    """Activation of one feature at every position of a prompt -> [pos] (forward stopped at the hook)."""
    layer = int(hook_name.split(".")[1])
    toks = torch.tensor([list(token_ids)], device=model.cfg.device)
    _, cache = model.run_with_cache(toks, names_filter=hook_name, stop_at_layer=layer + 1)
    return sae.encode(cache[hook_name][0].to(sae.W_dec.dtype))[:, index].float().cpu()


LENS_ROWS_PER_CHUNK = 256  # [256, vocab] fp32 logits at a time (~50 MB for a 49k vocabulary)


def _lens_stack(model, store: dict, final: torch.Tensor) -> torch.Tensor:
    """[n_layers+1, pos, d] float32: the embedding and each block's resid_post of one prompt."""
    names = lens_hook_names(model.cfg.n_layers)
    return torch.stack([store[nm][0] for nm in names[:-1]] + [final[0]]).float()


def lens_residuals(model, token_ids, resid_cache: ResidualCache | None = None, cache_key=None) -> torch.Tensor:
    """Every layer's residual [n_layers+1, pos, d]: from the cache when the analysis kept them, else one forward."""
    if resid_cache is not None:
        stack = resid_cache.get(cache_key)
        if stack is not None:
            return stack
    final, store = _forward_capture(model, token_ids, lens_hook_names(model.cfg.n_layers)[:-1])
    stack = _lens_stack(model, store, final)
    if resid_cache is not None:
        resid_cache.put(cache_key, stack)
    return stack


def lens_top(model, rows: torch.Tensor, top: int, ref: tuple[torch.Tensor, ...] | None = None,
             low_precision: bool | None = None) -> tuple[torch.Tensor, ...]:
    """Residual rows [N, d] -> (top probabilities [N, top], token ids [N, top]) under ln_final + unembed.

    The shared unembedding kernel (`analysis.unembed.unembed_top`, LENS_ROWS_PER_CHUNK rows at a time): bf16 with
    the top candidates rescored in fp32 where the CPU has bf16 units, exact fp32 elsewhere or with
    low_precision=False; the [N, vocab] logits are never held. With ref = `lens_reference(...)` of P positions, for
    rows laid out layer-major over them, a third tensor: KL(final || row) in nats [N] (sum p log p - p.logits +
    logsumexp), on the same path.
    """
    return unembed_top(model, rows, top, LENS_ROWS_PER_CHUNK, low_precision, ref)


def lens_reference(model, final_rows: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The model's own next-token distribution at each position from its final residual [P, d], the reference
    every lens row's KL is taken to: (p [P, vocab], sum p log p [P], W_U p [P, d], b_U . p [P])."""
    logp = _final_logits(model, final_rows[None].to(model.W_U.dtype))[0].float().log_softmax(-1)
    p = logp.exp()
    b_U = getattr(model, "b_U", None)
    pb = p @ b_U.detach().float() if b_U is not None else torch.zeros(p.shape[0])
    return p, (p * logp).sum(-1), p @ model.W_U.detach().float().T, pb


def _lens_sinks(model, token_ids, stack: torch.Tensor, positions, sink_norm: float | None) -> torch.Tensor:
    """[pos] bool: position 0, special tokens, and positions whose residual norm exceeds sink_norm at any layer."""
    mask = sink_mask(model, token_ids, stack.norm(dim=-1).amax(0)[:, None], sink_norm)
    return mask if positions is None else mask[list(positions)]


def logit_lens(model, token_ids, top: int = 5, positions=None, resid_cache: ResidualCache | None = None,
               cache_key=None, tuned=None, sink_norm: float | None = None) -> LogitLens:
    """Each layer's resid_post (and the embedding) through ln_final + unembed; top tokens per position, and each
    cell's KL to the model's own output distribution (kl_mean: per layer, over positions that are not sinks).

    The residuals come from the analysis forward when it kept them in resid_cache (else one forward, no
    unembedding of the final layer: its row of the lens is the model's own output); `lens_top` does the
    unembedding chunk by chunk. `positions` (optional) restricts the lens to those positions. `tuned` (a
    tuned_lens.TunedLens) translates every row but the last first: one batched matmul, then the same readout.
    """
    n = model.cfg.n_layers
    kind = "logit" if tuned is None else "tuned"
    memo = None if resid_cache is None or cache_key is None else \
        (cache_key, top, None if positions is None else tuple(int(p) for p in positions),
         kind if tuned is None else (kind, tuned.fingerprint), sink_norm)
    if memo is not None and (done := resid_cache.get_lens(memo)) is not None:  # type: ignore[union-attr]
        return done
    full = lens_residuals(model, token_ids, resid_cache, cache_key)  # [n+1, pos, d]
    sinks = _lens_sinks(model, token_ids, full, positions, sink_norm)
    stack = full if positions is None else full[:, list(positions)]
    if tuned is not None:
        stack = translate(tuned, stack)
    L1, P, d = stack.shape
    top = min(top, model.cfg.d_vocab_out)
    ref = lens_reference(model, stack[-1])
    fv, fi = ref[0].topk(top, dim=-1)
    pv, pi, kl = lens_top(model, stack[:-1].reshape((L1 - 1) * P, d), top, ref)
    probs = torch.cat([pv, fv]).reshape(L1, P, top).tolist()
    ids = torch.cat([pi, fi]).reshape(L1, P, top).tolist()
    kl = torch.cat([kl, torch.zeros(P)]).reshape(L1, P)
    kept = kl[:, ~sinks]
    decode = _decoder(model.tokenizer)
    labels = ["embed"] + [str(i) for i in range(n)]
    lens = LogitLens(tuple(labels),
                     tuple(tuple(tuple(decode(t) for t in cell) for cell in row) for row in ids),
                     tuple(tuple(tuple(cell) for cell in row) for row in probs), kind,
                     tuple(tuple(row) for row in kl.tolist()),
                     tuple(kept.mean(-1).tolist()) if kept.shape[1] else None, tuple(bool(s) for s in sinks))
    if memo is not None:
        resid_cache.put_lens(memo, lens)  # type: ignore[union-attr]
    return lens


def logit_direction(model, sae, index: int) -> torch.Tensor:
    """The dose projection W_dec[index] @ W_U [d_vocab]: how much adding the feature's decoder direction (activation
    1) raises each token's logit (no final norm: a direction, not a residual). The one definition."""
    return sae.W_dec[index].float() @ model.W_U.float()


def feature_card(model, sae, sae_name: str, index: int, top: int = 10, token_ids=None, hook_name: str | None = None) -> FeatureCard:
    """Decoder direction through the unembedding (no final norm: a direction, not a residual)."""
    logit_dir = logit_direction(model, sae, index)  # [vocab]
    pv, pi = logit_dir.topk(top)
    nv, ni = (-logit_dir).topk(top)
    tok = model.tokenizer
    acts = None
    if token_ids is not None and hook_name is not None:
        acts = tuple(float(a) for a in feature_activations(model, sae, hook_name, token_ids, index))
    return FeatureCard(
        sae=sae_name, index=index, decoder_norm=float(sae.W_dec[index].float().norm()),
        promoted=tuple((token_text(tok, i), float(v)) for v, i in zip(pv.tolist(), pi.tolist())),
        suppressed=tuple((token_text(tok, i), float(-v)) for v, i in zip(nv.tolist(), ni.tolist())),
        activations=acts, max_activation=max(acts) if acts else None,
    )


def feature_activations_and_sinks(model, sae, hook_name: str, token_ids, index: int,
                                  sink_norm: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One feature's activation at every position [pos] and the sink mask [pos] (forward stopped at the hook)."""
    layer = int(hook_name.split(".")[1])
    toks = torch.tensor([list(token_ids)], device=model.cfg.device)
    _, cache = model.run_with_cache(toks, names_filter=hook_name, stop_at_layer=layer + 1)
    resid = cache[hook_name][0]
    acts = sae.encode(resid.to(sae.W_dec.dtype))[:, index].float().cpu()
    return acts, sink_mask(model, token_ids, resid.float(), sink_norm)
