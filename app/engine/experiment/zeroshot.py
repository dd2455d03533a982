"""The zero-shot concept measure: how much more likely the model finds a text after concept examples than after
contrast examples. Steering pushes alone do not raise it: a pushed, garbled text is unlikely under both prefaces.

score(text) = mean over the text's tokens of log p(t_i | concept preface, t_<i) - log p(t_i | contrast preface, t_<i)
(nats per token; > 0 reads "more like the concept set"). The prefaces list `k` prompts of each discovery set, so a
pasted concept needs no name. Read with the unsteered model (no hook attached).
"""
from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from app.engine import compat
from app.engine.experiment.reads import pad_batch

HEADER = "Here are some example texts:\n"


@dataclass(frozen=True)
class ZeroShot:
    """The two prefaces (token ids) and the examples they list."""

    concept_ids: tuple[int, ...]
    contrast_ids: tuple[int, ...]
    concept_examples: tuple[str, ...]
    contrast_examples: tuple[str, ...]


def preface_text(examples: Sequence[str]) -> str:
    return HEADER + "".join(f"- {e.strip()}\n" for e in examples) + "- "


def make_zeroshot(tokenizer, concept: Sequence[str], contrast: Sequence[str], k: int = 6,
                  max_tokens: int | None = None) -> ZeroShot:
    """Prefaces from k prompts of each set (evenly spaced through the set, so order in a file matters less); fewer
    when a preface would pass max_tokens (the model's context less the longest text scored after it)."""
    enc = lambda t: tuple(tokenizer.encode(t, add_special_tokens=False))  # noqa: E731
    while k > 1 and max_tokens is not None:
        zs = make_zeroshot(tokenizer, concept, contrast, k)
        if max(len(zs.concept_ids), len(zs.contrast_ids)) <= max_tokens:
            return zs
        k -= 1

    def pick(items):
        items = list(items)
        if len(items) <= k:
            return tuple(items)
        step = len(items) / k
        return tuple(items[int(i * step)] for i in range(k))

    ce, ne = pick(concept), pick(contrast)
    return ZeroShot(enc(preface_text(ce)), enc(preface_text(ne)), ce, ne)


def _prefix_cache(model, preface: Sequence[int]):
    """The preface run once: a frozen key-value cache of it and the log-probs of the token after it [V]."""
    cache = compat.kv_cache(model, 1)
    toks = torch.as_tensor([list(preface)], dtype=torch.int64, device=model.cfg.device)
    with torch.inference_mode():
        logits = model(toks, attention_mask=torch.ones_like(toks), past_kv_cache=cache)
    cache.freeze()
    return cache, torch.log_softmax(logits[0, -1].float(), -1).cpu()


def _expanded(cache, b: int):
    """A view of a frozen batch-1 cache for a batch of b rows (no copy of the keys and values)."""
    entries = [dataclasses.replace(e, past_keys=e.past_keys.expand(b, -1, -1, -1),
                                   past_values=e.past_values.expand(b, -1, -1, -1)) for e in cache.entries]
    return dataclasses.replace(cache, entries=entries,
                               previous_attention_mask=cache.previous_attention_mask.expand(b, -1))


def _mean_logprob(model, preface: Sequence[int], texts: Sequence[Sequence[int]], batch_size: int, batch_context,
                  progress) -> np.ndarray:
    """[n] mean log p of each text's tokens after the preface (NaN for an empty text). The preface is read once
    (its key-value cache is shared by every row); texts are right-padded, so padding never reaches a real token."""
    pad = getattr(model.tokenizer, "pad_token_id", None) or 0
    out = np.full(len(texts), np.nan)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    with batch_context():
        cache, first = _prefix_cache(model, preface)
    for s in range(0, len(order), batch_size):
        idx = [i for i in order[s:s + batch_size] if len(texts[i])]
        if idx:
            toks, att = pad_batch(texts, idx, pad)
            with batch_context(), torch.inference_mode():
                logits = model(toks.to(model.cfg.device), attention_mask=att.to(model.cfg.device),
                               past_kv_cache=_expanded(cache, len(idx)))
                lp = torch.log_softmax(logits[:, :-1].float(), -1).cpu()  # position j predicts token j + 1
            got = torch.cat([first[toks[:, :1]], lp.gather(2, toks[:, 1:, None])[..., 0]], 1)  # [b, T]
            for b, i in enumerate(idx):
                out[i] = float(got[b, : len(texts[i])].double().mean())
        if progress is not None:
            progress(len(order[s:s + batch_size]))
    return out


def zeroshot_scores(model, zs: ZeroShot, texts: Sequence[Sequence[int]], batch_size: int = 16,
                    batch_context=contextlib.nullcontext, progress: Callable[[int], None] | None = None) -> np.ndarray:
    """[n] concept-minus-contrast mean log-prob per token of each text (nats; NaN for an empty text).
    progress(k) is called twice per text (once per preface)."""
    a = _mean_logprob(model, zs.concept_ids, texts, batch_size, batch_context, progress)
    b = _mean_logprob(model, zs.contrast_ids, texts, batch_size, batch_context, progress)
    return a - b


def auc(pos: Sequence[float] | np.ndarray, neg: Sequence[float] | np.ndarray) -> float:
    """P(score of a concept text > score of a neutral text), ties counting one half (the Mann-Whitney AUC)."""
    p = np.asarray(pos, dtype=np.float64)
    n = np.asarray(neg, dtype=np.float64)
    p, n = p[np.isfinite(p)], n[np.isfinite(n)]
    if not len(p) or not len(n):
        return float("nan")
    gt = (p[:, None] > n[None, :]).sum() + 0.5 * (p[:, None] == n[None, :]).sum()
    return float(gt / (len(p) * len(n)))
