"""Per-token SAE features of a prompt (`analyze`: one forward, both SAEs) and feature cards (decoder direction through
the unembedding, activations on a prompt) (pure computation)."""
from __future__ import annotations

import torch

from app.engine.analysis.core import (
    Analysis,
    FeatureCard,
    ResidualCache,
    _decoder,
    _final_logits,
    _forward_capture,
    explained_variance,
    lens_hook_names,
    lens_stack,
    sae_token_views,
    sink_mask,
)
from app.engine.tokens import token_text, token_texts


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
            resid_cache.put(cache_key, lens_stack(model, store, final))
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
