"""Unsteered residual reads and SAE activations: typical activations, selectivity, default children."""
from __future__ import annotations

import contextlib
from typing import Callable, Sequence

import numpy as np
import torch

from app.engine.analysis import sink_mask


def pad_batch(id_lists: Sequence[Sequence[int]], idx: Sequence[int], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The sequences id_lists[i] for i in idx, right-padded: (token ids [b, T], attention mask [b, T])."""
    T = max(len(id_lists[i]) for i in idx)
    toks = torch.full((len(idx), T), pad, dtype=torch.int64)
    att = torch.zeros(len(idx), T, dtype=torch.int64)
    for b, i in enumerate(idx):
        toks[b, : len(id_lists[i])] = torch.as_tensor(list(id_lists[i]))
        att[b, : len(id_lists[i])] = 1
    return toks, att


def read_back(model, hook_names: Sequence[str], id_lists: Sequence[Sequence[int]], batch_size: int = 16,
              logits: bool = False, batch_context=contextlib.nullcontext, progress: Callable[[int], None] | None = None):
    """Plain (unsteered) forward of right-padded sequences; per sequence {hook: resid [n_i, d]} (+ log-probs [n_i, V]
    of the next token when logits=True). No steering hook is attached here."""
    layers = [int(h.split(".")[1]) for h in hook_names]
    pad = getattr(model.tokenizer, "pad_token_id", None) or 0
    order = sorted(range(len(id_lists)), key=lambda i: len(id_lists[i]))
    res: list = [None] * len(id_lists)
    for s in range(0, len(order), batch_size):
        idx = order[s:s + batch_size]
        toks, att = pad_batch(id_lists, idx, pad)
        with batch_context(), torch.inference_mode():
            kw = {} if logits else {"stop_at_layer": max(layers) + 1}
            lg, cache = model.run_with_cache(toks.to(model.cfg.device), names_filter=list(hook_names),
                                             attention_mask=att.to(model.cfg.device), **kw)
            for b, i in enumerate(idx):
                n = len(id_lists[i])
                item = {h: cache[h][b, :n].float().cpu() for h in hook_names}
                if logits:
                    item["logprobs"] = torch.log_softmax(lg[b, :n].float(), -1).cpu()
                res[i] = item
        if progress is not None:
            progress(len(idx))
    return res


def feature_acts(sae, resid: torch.Tensor, features: Sequence[int]) -> torch.Tensor:
    """[n, len(features)] activations of the given features (the SAE's own encoder)."""
    if resid.shape[0] == 0:
        return torch.zeros(0, len(features))
    return sae.encode(resid.to(sae.W_dec.dtype)).float()[:, list(features)].clamp_min(0)


def typical_activations(saes: dict, feats: Sequence[tuple[str, int]], hook_resids: Sequence[torch.Tensor], atlas=None) -> tuple[dict, dict]:
    """Typical activation of each (sae, index): atlas mean-when-firing when present, else the mean activation over
    the concept set's tokens where the feature fires. Returns (values, sources)."""
    vals, src = {}, {}
    for name, idx in feats:
        v = None
        mwf = getattr(atlas, "mean_when_firing", None) if atlas is not None else None
        if mwf is not None:
            try:
                v = float(mwf[name][idx])
                src[(name, idx)] = "atlas mean when firing"
            except (KeyError, IndexError, TypeError):
                v = None
        if v is None or not v > 0:
            x = torch.cat([r for r in hook_resids if r.shape[0]]) if hook_resids else torch.zeros(0, 1)
            a = feature_acts(saes[name], x, [idx])[:, 0] if x.shape[0] else torch.zeros(0)
            fired = a[a > 0]
            if fired.numel():
                v, src[(name, idx)] = float(fired.mean()), "concept set mean when firing"
            else:
                v, src[(name, idx)] = None, "does not fire on the concept set"
        vals[(name, idx)] = v
    known = [v for v in vals.values() if v]
    fallback = float(np.median(known)) if known else 1.0
    for k, v in vals.items():
        if not v:
            vals[k] = fallback
            src[k] += f"; using the median of the others ({fallback:.3g})" if known else "; using 1.0"
    return vals, src


def selectivity_of(saes: dict, name: str, features: Sequence[int], concept_resids, contrast_resids,
                   check: Callable[[], None] | None = None) -> list[float]:
    """Discovery's selectivity (per-prompt max, mean over each set) of the given features; check() before each prompt
    (raises to stop: a cancelled job)."""
    @torch.no_grad()
    def per_set(resids):
        m = torch.zeros(len(features))
        for r in resids:
            if check is not None:
                check()
            if r.shape[0]:
                m += feature_acts(saes[name], r, features).max(0).values
        return m / max(len(resids), 1)
    a, b = per_set(concept_resids), per_set(contrast_resids)
    tot = a + b
    return [float(x) if t > 0 else 0.0 for x, t in zip(torch.where(tot > 0, a / tot.clamp_min(1e-30), torch.zeros_like(a)), tot)]


def default_children(saes: dict, anchor: int, concept_resids, contrast_resids, n: int = 3, cos_threshold: float = 0.3,
                     min_selectivity: float = 0.5, check: Callable[[], None] | None = None) -> list[int]:
    """The anchor's blue matches: fine features with decoder cosine >= cos_threshold, selective on the concept set
    (>= min_selectivity), best cosine first; if none qualifies, the n best cosines."""
    Wc = saes["coarse"].W_dec.float()[anchor]
    Wf = saes["fine"].W_dec.float()
    cos = (Wf @ Wc) / (Wf.norm(dim=-1) * Wc.norm()).clamp_min(1e-12)
    order = [int(i) for i in torch.argsort(cos, descending=True)[: max(4 * n, 16)]]
    cand = [i for i in order if float(cos[i]) >= cos_threshold]
    if cand:
        sel = selectivity_of(saes, "fine", cand, concept_resids, contrast_resids, check)
        keep = [i for i, s in zip(cand, sel) if s >= min_selectivity]
        if keep:
            return keep[:n]
    return order[:n]


def _kept(model, ids, resid_hook: torch.Tensor, sink_norm) -> torch.Tensor:
    return ~sink_mask(model, ids, resid_hook, sink_norm)
