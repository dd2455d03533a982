"""The zero-shot concept measure: how much likelier the model finds a text's tokens after concept examples than after
the best of several contrast prefaces, counting only the tokens where the concept preface wins.

score(text) = mean over the text's tokens t_i of clip(log p(t_i | concept preface, t_<i) - max over contrast prefaces
c of log p(t_i | c, t_<i), 0, CAP_NATS) (nats per token, 0 to CAP_NATS). The first contrast
preface lists other topics; further ones may list the discovery contrast set and texts generated while pushing along
random directions, so that a text pushed off its topic is explained by the pushed preface rather than read as the
concept (a pushed, garbled text is likelier after code examples than after everyday sentences). The prefaces list
`k` texts of each set, so a pasted concept needs no name. Read with the unsteered model (no hook).
"""
from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from app.engine import compat
from app.engine.experiment.checkpoint import config_key
from app.engine.experiment.reads import pad_batch

HEADER = "Here are some example texts:\n"
# each token's evidence for the concept: how many nats likelier the concept preface makes it than the best contrast
# preface does, floored at 0 and capped. The floor is why this is not the plain mean difference: a text pushed off
# every topic is about as likely after any preface, so its mean difference drifts from the unsteered text's negative
# value towards 0 (a "rise" that is only a lost topic); the cap keeps one name-like token from outweighing a text.
CAP_NATS = 4.0
MEASURE_RULE = f"mean-clipped-0-{CAP_NATS:g}-nats-over-best-contrast"  # in the score cache's key: a new rule re-scores


@dataclass(frozen=True)
class ZeroShot:
    """The prefaces (token ids) and the examples they list: the concept's, the first contrast's, and further contrasts
    (named, e.g. "pushed") whose best log-prob the score subtracts together with the first's."""

    concept_ids: tuple[int, ...]
    contrast_ids: tuple[int, ...]
    concept_examples: tuple[str, ...]
    contrast_examples: tuple[str, ...]
    extra: tuple[tuple[str, tuple[int, ...], tuple[str, ...]], ...] = ()  # (name, preface ids, examples)

    @property
    def contrasts(self) -> tuple[tuple[int, ...], ...]:
        return (self.contrast_ids, *(ids for _, ids, _ in self.extra))

    def with_contrast(self, name: str, tokenizer, examples: Sequence[str], k: int, max_tokens: int | None = None) -> "ZeroShot":
        """This measure with one more contrast preface of up to k of the examples (fewer when it would pass max_tokens)."""
        ids, picked = make_preface(tokenizer, examples, k, max_tokens)
        return dataclasses.replace(self, extra=(*self.extra, (name, ids, picked)))


def preface_text(examples: Sequence[str]) -> str:
    return HEADER + "".join(f"- {e.strip()}\n" for e in examples) + "- "


def _pick(items: Sequence[str], k: int) -> tuple[str, ...]:
    """k items evenly spaced through the list (all of them when there are no more than k)."""
    items = list(items)
    if len(items) <= k:
        return tuple(items)
    step = len(items) / k
    return tuple(items[int(i * step)] for i in range(k))


def make_preface(tokenizer, examples: Sequence[str], k: int, max_tokens: int | None = None) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """(token ids, examples listed) of a preface of up to k evenly spaced examples; fewer when it would pass max_tokens."""
    while True:
        picked = _pick(examples, k)
        ids = tuple(tokenizer.encode(preface_text(picked), add_special_tokens=False))
        if max_tokens is None or len(ids) <= max_tokens or k <= 1:
            return ids, picked
        k -= 1


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
    ce, ne = _pick(concept, k), _pick(contrast, k)
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


def _token_logprobs(model, preface: Sequence[int], texts: Sequence[Sequence[int]], batch_size: int, batch_context,
                    progress) -> list[np.ndarray | None]:
    """Per text, [T] log p of each of its tokens after the preface (None for an empty text). The preface is read once
    (its key-value cache is shared by every row); texts are right-padded, so padding never reaches a real token."""
    pad = getattr(model.tokenizer, "pad_token_id", None) or 0
    out: list[np.ndarray | None] = [None] * len(texts)
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
                out[i] = got[b, : len(texts[i])].double().numpy()
        if progress is not None:
            progress(len(order[s:s + batch_size]))
    return out


def clipped_scores(concept: Sequence[np.ndarray | None], contrasts: Sequence[Sequence[np.ndarray | None]],
                   cap: float = CAP_NATS) -> np.ndarray:
    """[n] the measure from per-token log-probs: concept[i] [T] and contrasts[j][i] [T] -> mean over tokens of
    concept - max_j contrast_j clipped to [0, cap] (NaN where a text has no tokens)."""
    out = np.full(len(concept), np.nan)
    for i, lc in enumerate(concept):
        if lc is not None and len(lc):
            best = np.max(np.stack([np.asarray(b[i]) for b in contrasts]), axis=0)  # every preface saw the same tokens
            out[i] = float(np.mean(np.clip(np.asarray(lc) - best, 0.0, cap)))
    return out


def zeroshot_scores(model, zs: ZeroShot, texts: Sequence[Sequence[int]], batch_size: int = 16,
                    batch_context=contextlib.nullcontext, progress: Callable[[int], None] | None = None,
                    cap: float = CAP_NATS, cache=None, name: str = "") -> np.ndarray:
    """[n] mean over each text's tokens of log p(token | concept preface) - max over contrast prefaces of
    log p(token | contrast), clipped to [0, cap] (nats per token; NaN for an empty text). progress(k) is called once
    per text and preface. cache (get / put by name, e.g. a ChunkCache) keeps each preface's per-token log-probs of
    these texts under name + the preface's hash, so a re-run that changes how they are combined, or one preface,
    reads the others back instead of running the model."""
    def lps(ids):
        key = f"{name}lp-{config_key(list(ids))}"
        got = cache.get(key) if cache is not None else None
        if got is not None:
            if progress is not None:
                progress(len(texts))
            return [None if v is None else np.asarray(v, dtype=np.float64) for v in got]
        out = _token_logprobs(model, ids, texts, batch_size, batch_context, progress)
        if cache is not None:
            cache.put(key, [None if v is None else [round(float(x), 6) for x in v] for v in out])
        return out

    return clipped_scores(lps(zs.concept_ids), [lps(ids) for ids in zs.contrasts], cap)


def auc(pos: Sequence[float] | np.ndarray, neg: Sequence[float] | np.ndarray) -> float:
    """P(score of a concept text > score of a neutral text), ties counting one half (the Mann-Whitney AUC)."""
    p = np.asarray(pos, dtype=np.float64)
    n = np.asarray(neg, dtype=np.float64)
    p, n = p[np.isfinite(p)], n[np.isfinite(n)]
    if not len(p) or not len(n):
        return float("nan")
    gt = (p[:, None] > n[None, :]).sum() + 0.5 * (p[:, None] == n[None, :]).sum()
    return float(gt / (len(p) * len(n)))
