"""Queries over SAEs and the atlas: the coarse/fine pair check, search by text, search by label."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from app.engine.atlas.build import forward_to_hook, valid_mask
from app.engine.atlas.core import (
    Atlas,
    PairIndependence,
    SearchHit,
)
from app.engine.ranking import RankBy, rank_features
from app.engine.tokens import token_text


def pair_independence(W_dec_coarse: torch.Tensor, W_dec_fine: torch.Tensor, max_checked: int = 2048,
                      threshold: float = 0.1, chunk: int = 256) -> PairIndependence:
    """Mean cos(coarse i, fine i) over i < min width, and the share of coarse features whose best fine match
    (max decoder cosine) is the same index (all coarse features, or `max_checked` evenly spaced ones)."""
    A = torch.nn.functional.normalize(W_dec_coarse.detach().float(), dim=-1)
    B = torch.nn.functional.normalize(W_dec_fine.detach().float(), dim=-1)
    n = min(A.shape[0], B.shape[0])
    max_checked = min(max_checked, max(128, 2**25 // max(1, B.shape[0])))  # ~2k x 16k cosines at most (CPU)
    same = float((A[:n] * B[:n]).sum(-1).mean()) if n else 0.0
    rows = torch.arange(A.shape[0]) if A.shape[0] <= max_checked else \
        torch.linspace(0, A.shape[0] - 1, max_checked).long()
    hits = 0
    for s0 in range(0, len(rows), chunk):
        r = rows[s0: s0 + chunk]
        best = (A[r] @ B.T).argmax(-1)
        hits += int((best == r).sum())
    return PairIndependence(mean_same_index_cosine=same, share_best_is_same=hits / max(1, len(rows)),
                            n_checked=int(len(rows)), threshold=threshold)


# ---------------------------------------------------------------------------------------------- search
def search_by_text(model, saes: dict, hook_name: str, prefix_ids: Sequence[int], query_ids: Sequence[int],
                   sink_norm: float | None = None, top: int = 20, atlas: Atlas | None = None,
                   by: RankBy = "unusual") -> dict:
    """Features that fire on the query tokens (run after `prefix_ids`, so no query token is position 0).

    activation = max over the query's non-sink positions; the order is ranking.rank_features' (with an atlas:
    most unusual for the feature first, dense features last; score = activation / typical activation), else by
    activation (score = activation). -> {sae name: tuple[SearchHit, ...]} best first.
    """
    ids = list(prefix_ids) + list(query_ids)
    toks = torch.tensor([ids], device=model.cfg.device)
    resid = forward_to_hook(model, hook_name, toks)[0]
    special = sorted(set(getattr(model.tokenizer, "all_special_ids", []) or []))
    keep = valid_mask(resid.unsqueeze(0), toks.cpu(), special, sink_norm)[0]
    keep[: len(prefix_ids)] = False
    q = resid[len(prefix_ids):]
    kq = keep[len(prefix_ids):]
    out: dict[str, tuple[SearchHit, ...]] = {}
    for n, sae in saes.items():
        acts = sae.encode(q.to(sae.W_dec.dtype)).float().cpu()
        acts[~kq] = 0.0
        mx, where = acts.max(dim=0) if len(q) else (torch.zeros(acts.shape[1]), torch.zeros(acts.shape[1], dtype=torch.long))
        fired = np.flatnonzero(mx.numpy() > 0)
        at = atlas if atlas is not None and n in atlas.codes else None
        ranked = rank_features(fired, mx.numpy()[fired], at.mean_when_firing[n] if at else None,
                               at.density[n] if at else None, by)[:top]
        hits = []
        for r in ranked:
            tid = int(query_ids[int(where[r.index])])
            hits.append(SearchHit(sae=n, index=r.index, score=r.ratio if r.ratio is not None else r.value,
                                  activation=r.value, token=token_text(model.tokenizer, tid),
                                  label=at.label(n, r.index) if at else "",
                                  density=float(at.density[n][r.index]) if at else None,
                                  max_act=float(at.max_act[n][r.index]) if at else None, dense=r.dense))
        out[n] = tuple(hits)
    return out


def search_atlas(atlas: Atlas, query: str, top: int = 20) -> dict:
    """Features specific to the query's whole word on the atlas, by lift (see atlas.words.search_words)."""
    from app.engine.atlas.words import search_words

    return search_words(atlas, query, top)
