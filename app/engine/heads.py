"""Attention heads: every head's pattern on a prompt, its direct logit attribution, and four behaviour scores.

Direct logit attribution (DLA) of head h in layer l to token t at the last position q:
    DLA = ((z[q, h] @ W_O[l, h]) / scale_final[q]) ⊙ w_final · W_U[:, t]
(the final norm is linear once its scale is fixed; LayerNorm also centres; biases belong to no head).
Scores, on `n_seqs` sequences of `seq_len` random tokens repeated twice (R R, after a BOS when the model has one),
each the mean attention over the query positions that have the key:
    previous-token  A[q, q-1];  duplicate-token  A[q, q-L] (second copy);
    induction  A[q, q-L+1] (second copy: the token after this one's earlier occurrence);
    first position  A[q, 0] (q >= 1).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from app.engine.patching import make_store_hook

SCORES = ("previous_token", "induction", "duplicate_token", "first_position")


@dataclass(frozen=True)
class HeadPatterns:
    token_ids: tuple[int, ...]
    patterns: np.ndarray  # [layer, head, query, key] attention probabilities
    target: int  # the token whose logit the DLA is for
    dla: np.ndarray  # [layer, head] direct logit attribution to `target` at the last position, logit units
    top_next: tuple[tuple[int, float], ...]  # (id, prob) at the last position


@dataclass(frozen=True)
class HeadScores:
    seq_len: int
    n_seqs: int
    token_ids: tuple[int, ...]  # the first sequence (what the example patterns are on)
    scores: dict  # score name -> np.ndarray [layer, head]
    examples: dict  # score name -> (layer, head, pattern [T, T] on the first sequence)


def _pattern_names(model) -> list[str]:
    return [f"blocks.{i}.attn.hook_pattern" for i in range(model.cfg.n_layers)]


def final_norm_linear(model, vec: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """The final norm applied to a part `vec` [..., d] of a residual whose norm scale is `scale` (no bias)."""
    ln = model.ln_final
    if model.cfg.normalization_type in ("LN", "LNPre"):
        vec = vec - vec.mean(-1, keepdim=True)
    if model.cfg.normalization_type is None:
        return vec
    out = vec / scale
    w = getattr(ln, "w", None)
    return out * w if w is not None else out


def head_patterns(model, token_ids, target: int | None = None, top: int = 10, resid=None) -> HeadPatterns:
    """Every head's pattern and its DLA to `target` (default: the top next token).

    resid: the prompt's every-layer residuals [n_layers+1, pos, d] (the embedding, then each block's resid_post:
    what the analysis forward keeps, `analysis.lens_residuals`); then only each block's ln1 + attention runs on its
    input (no MLP, no full forward). Without it (or where a block's attention takes other inputs): one forward."""
    from app.engine.analysis.core import _final_logits
    from app.engine.compat import block_attention

    n_layers = model.cfg.n_layers
    store: dict = {}
    names = _pattern_names(model) + [f"blocks.{i}.attn.hook_z" for i in range(n_layers)]
    if model.cfg.normalization_type is not None:
        names.append("ln_final.hook_scale")
    toks = torch.tensor([list(token_ids)], device=model.cfg.device)
    with model.hooks(fwd_hooks=[(n, make_store_hook(store, n)) for n in names]):
        done = resid is not None
        for i in range(n_layers if done else 0):
            x = resid[i][None].to(device=model.cfg.device, dtype=model.cfg.dtype)
            if block_attention(model.blocks[i], x) is None:
                done = False
                break
        if done:
            last = resid[n_layers][None, -1:].to(device=model.cfg.device, dtype=model.cfg.dtype)
        else:
            last = model(toks, stop_at_layer=n_layers, attention_mask=torch.ones_like(toks))[:, -1:]
        probs = _final_logits(model, last)[0, -1].float().softmax(-1)  # ln_final's scale hook fires here
    target = int(probs.argmax()) if target is None else int(target)
    pv, pi = probs.topk(min(top, probs.shape[-1]))
    scale = store["ln_final.hook_scale"][0, -1] if "ln_final.hook_scale" in store else torch.ones(1)
    dla = []
    for i in range(n_layers):
        z = store[f"blocks.{i}.attn.hook_z"][0, -1].float()  # [head, d_head]
        out = torch.einsum("hd,hdm->hm", z, model.blocks[i].attn.W_O.float())  # [head, d_model]
        dla.append((final_norm_linear(model, out, scale.float()) @ model.W_U[:, target].float()).cpu().numpy())
    pats = np.stack([store[n][0].float().cpu().numpy() for n in _pattern_names(model)])
    return HeadPatterns(tuple(int(t) for t in token_ids), pats, target, np.stack(dla),
                        tuple((int(i), float(v)) for v, i in zip(pv.tolist(), pi.tolist())))


def repeated_tokens(vocab: int, seq_len: int, n_seqs: int, seed: int = 0, bos: int | None = None,
                    avoid=()) -> np.ndarray:
    """[n_seqs, (1 +) 2·seq_len] token ids: a seeded random sequence twice, after `bos` when given."""
    rng = np.random.default_rng(seed)
    pool = np.setdiff1d(np.arange(vocab), np.asarray(list(avoid), dtype=np.int64))
    rand = rng.choice(pool, size=(n_seqs, seq_len), replace=True)
    seqs = np.concatenate([rand, rand], axis=1)
    if bos is not None:
        seqs = np.concatenate([np.full((n_seqs, 1), bos), seqs], axis=1)
    return seqs


def scores_from_patterns(pats: np.ndarray, seq_len: int, offset: int) -> dict:
    """pats [batch, layer, head, T, T] -> {score: [layer, head]} (see the module docstring; offset: 1 after a BOS)."""
    T = pats.shape[-1]
    L = seq_len
    second = np.arange(offset + L, offset + 2 * L)
    q_prev = np.arange(offset + 1, T)
    q_first = np.arange(1, T)
    pick = lambda q, k: pats[..., q, k].mean(axis=(0, -1))  # noqa: E731
    return {"previous_token": pick(q_prev, q_prev - 1),
            "induction": pick(second, second - L + 1),
            "duplicate_token": pick(second, second - L),
            "first_position": pick(q_first, np.zeros_like(q_first))}


def head_scores(model, tokenizer=None, seq_len: int = 20, n_seqs: int = 4, seed: int = 0,
                prepend_bos: bool = False) -> HeadScores:
    """Score every head on the four behaviours (one batched forward over the repeated random sequences)."""
    vocab = int(model.cfg.d_vocab)
    avoid = list(getattr(tokenizer, "all_special_ids", []) or []) if tokenizer is not None else []
    bos = getattr(tokenizer, "bos_token_id", None) if (prepend_bos and tokenizer is not None) else None
    seqs = repeated_tokens(vocab, seq_len, n_seqs, seed, bos, avoid)
    store: dict = {}
    toks = torch.tensor(seqs, device=model.cfg.device)
    with model.hooks(fwd_hooks=[(n, make_store_hook(store, n)) for n in _pattern_names(model)]):
        model(toks, stop_at_layer=model.cfg.n_layers, attention_mask=torch.ones_like(toks))
    pats = np.stack([store[n].float().cpu().numpy() for n in _pattern_names(model)], axis=1)  # [b, l, h, T, T]
    scores = scores_from_patterns(pats, seq_len, 1 if bos is not None else 0)
    examples = {}
    for name, s in scores.items():
        layer, head = np.unravel_index(int(np.argmax(s)), s.shape)
        examples[name] = (int(layer), int(head), pats[0, layer, head])
    return HeadScores(seq_len, n_seqs, tuple(int(t) for t in seqs[0]), scores, examples)
