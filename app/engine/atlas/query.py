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
                   relative: bool = False) -> dict:
    """Features that fire on the query tokens (run after `prefix_ids`, so no query token is position 0).

    score = max activation over the query's non-sink positions; with relative=True and an atlas, divided by
    the feature's max activation on the atlas corpus (features that fire near their strongest rank first).
    -> {sae name: tuple[SearchHit, ...]} best first.
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
        score = mx.clone()
        if relative and atlas is not None and n in atlas.max_act:
            ref = torch.as_tensor(atlas.max_act[n]).float()
            score = torch.where(ref > 0, mx / ref.clamp_min(1e-12), torch.zeros_like(mx))
        fired = int((mx > 0).sum())
        k = min(top, fired)
        if k == 0:
            out[n] = ()
            continue
        # ties: lower index first (stable order on -score)
        order = np.argsort(-score.numpy(), kind="stable")[:k]
        hits = []
        for f in order:
            f = int(f)
            tid = int(query_ids[int(where[f])])
            hits.append(SearchHit(sae=n, index=f, score=float(score[f]), activation=float(mx[f]),
                                  token=token_text(model.tokenizer, tid),
                                  label=atlas.label(n, f) if atlas is not None else "",
                                  density=float(atlas.density[n][f]) if atlas is not None else None,
                                  max_act=float(atlas.max_act[n][f]) if atlas is not None else None))
        out[n] = tuple(hits)
    return out


def _norm(s: str) -> str:
    return " ".join(s.casefold().split())


def search_atlas(atlas: Atlas, query: str, top: int = 20) -> dict:
    """Features whose top tokens or top examples' activating tokens contain the query (case-insensitive).

    score = share of the feature's firings on matching top tokens, plus 0.5 x the share of its top examples
    whose activating token (with the 3 tokens before it) contains the query. -> {sae: tuple[SearchHit, ...]}.
    """
    qn = _norm(query)
    if not qn:
        return {n: () for n in atlas.codes}
    words = qn.split()
    lookup = np.zeros(max(atlas.token_strings, default=0) + 2, bool)  # token id -> matches (index -1: padding)
    for i, s in atlas.token_strings.items():
        t = _norm(s)
        lookup[i] = bool(t) and (qn in t or t in words)
    out = {}
    for n in atlas.codes:
        s = atlas.summaries[n]
        tid, tcnt = s["tok_ids"], s["tok_counts"]
        m = lookup[np.clip(tid, -1, len(lookup) - 2)] & (tid >= 0)
        nf = np.maximum(s["n_firing"], 1)
        tok_score = (tcnt * m).sum(1) / nf
        snippets = _snippets(atlas, n)
        ex_score = np.array([sum(qn in sn for sn in sns) / max(1, len(sns)) for sns in snippets]) if len(snippets) else 0
        score = tok_score + 0.5 * ex_score
        cand = np.flatnonzero(score > 0)
        order = cand[np.lexsort((cand, -atlas.max_act[n][cand], -score[cand]))][:top]
        hits = []
        for f in order:
            f = int(f)
            mt = next((atlas.tok(t) for t, ok in zip(tid[f], m[f]) if ok), "")
            hits.append(SearchHit(sae=n, index=f, score=float(score[f]), activation=float(atlas.max_act[n][f]),
                                  token=mt, label=atlas.label(n, f), density=float(atlas.density[n][f]),
                                  max_act=float(atlas.max_act[n][f])))
        out[n] = tuple(hits)
    return out


def _snippets(atlas: Atlas, sae: str, before: int = 3) -> list[list[str]]:
    """Per feature: the normalised text of each top example's activating token and the `before` tokens before
    it (built once per atlas and SAE, then cached)."""
    key = ("snippets", sae)
    if key not in atlas._cache:
        rows = atlas.summaries[sae]["top_rows"]
        strings = atlas.token_strings
        toks = atlas.tokens
        ctx = atlas.ctx
        out = []
        for fr in rows:
            sns = []
            for r in fr:
                if r < 0:
                    continue
                w0 = (int(r) // ctx) * ctx
                ids = toks[max(w0, int(r) - before): int(r) + 1]
                sns.append(_norm("".join(strings.get(int(i), "") for i in ids)))
            out.append(sns)
        atlas._cache[key] = out
    return atlas._cache[key]
