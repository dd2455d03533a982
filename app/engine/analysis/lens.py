"""The logit lens and the tuned lens: every layer's residual through ln_final + unembed, top tokens per cell and each
cell's KL to the model's output (pure computation). The unembedding kernel is `analysis.unembed`."""
from __future__ import annotations

import torch

from app.engine.analysis.core import (
    LogitLens,
    ResidualCache,
    _decoder,
    _final_logits,
    _forward_capture,
    lens_hook_names,
    lens_stack,
    sink_mask,
)
from app.engine.analysis.unembed import unembed_top
from app.engine.tuned_lens import translate

LENS_ROWS_PER_CHUNK = 256  # [256, vocab] fp32 logits at a time (~50 MB for a 49k vocabulary)


def lens_residuals(model, token_ids, resid_cache: ResidualCache | None = None, cache_key=None) -> torch.Tensor:
    """Every layer's residual [n_layers+1, pos, d]: from the cache when the analysis kept them, else one forward."""
    if resid_cache is not None:
        stack = resid_cache.get(cache_key)
        if stack is not None:
            return stack
    final, store = _forward_capture(model, token_ids, lens_hook_names(model.cfg.n_layers)[:-1])
    stack = lens_stack(model, store, final)
    if resid_cache is not None:
        resid_cache.put(cache_key, stack)
    return stack


def lens_top(model, rows: torch.Tensor, top: int, ref: tuple[torch.Tensor, ...] | None = None,
             low_precision: bool | str | None = None) -> tuple[torch.Tensor, ...]:
    """Residual rows [N, d] -> (top probabilities [N, top], token ids [N, top]) under ln_final + unembed.

    The shared unembedding kernel (`analysis.unembed.unembed_top`, LENS_ROWS_PER_CHUNK rows at a time): int8 (CPUs
    with VNNI) or bf16 (bf16 units) with the top candidates rescored in fp32, exact fp32 elsewhere or with
    low_precision=False (`unembed.pick_precision`); the [N, vocab] logits are never held. With ref = `lens_reference(...)` of P positions, for
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
