"""The compact atlas: what the views need, precomputed from the full codes at build time, so the codes can go.

Kept (sizes for T corpus tokens, F features): token ids and valid bits (T), the per-feature summaries, and
- each top / quantile example's context activations: [F, n, EX_LEFT + 1 + EX_RIGHT] fp16 (the feature's
  activation at every context token around the example's activating token; 0 outside the window);
- the word index: every whole word of the corpus text (maximal \\w+ runs, casefolded), the valid positions it
  covers and, per SAE, the (word, feature) pairs that word search can list (>= words.MIN_MATCHED_FIRINGS firings
  on the word, lift >= words.MIN_LIFT, share >= words.MIN_SHARE: the search's own filters, so nothing it would
  show is dropped) with their firing count and summed activation;
- each feature's label detection score (label_score: parts made on 3 windows in 4, counts on the 4th);
- the codes of the first `cofire_tokens` tokens only (whole windows): the co-firing sample the split map reads.
"""
from __future__ import annotations

import re
from dataclasses import replace
from typing import Callable

import numpy as np
import scipy.sparse as sp

from app.engine.atlas.core import ATLAS_VERSION, EX_LEFT, EX_RIGHT
from app.engine.atlas.selective import selective_parts, token_key
from app.engine.atlas.words import MIN_LIFT, MIN_MATCHED_FIRINGS, MIN_SHARE

SCORE_EVERY = 4  # label_score: one window in four is held out from the label and scores it
WORD = re.compile(r"\w+")


def corpus_text(tokens: np.ndarray, ctx: int, tok: Callable[[int], str]) -> tuple[str, np.ndarray]:
    """(casefolded corpus text with a newline between windows, [T] start offset of each token)."""
    strs = {int(t): tok(int(t)).casefold() for t in np.unique(tokens)}
    parts, starts, off = [], np.zeros(len(tokens), np.int64), 0
    for i, t in enumerate(tokens.tolist()):
        if i and i % ctx == 0:
            parts.append("\n")
            off += 1
        s = strs[t]
        starts[i] = off
        parts.append(s)
        off += len(s)
    return "".join(parts), starts


def word_index(tokens: np.ndarray, valid: np.ndarray, ctx: int, tok: Callable[[int], str]) -> dict:
    """{"words": sorted distinct words, "pos": [P] valid positions, "word": [P] word id} (each (pos, word) once),
    "n_pos": [W] valid positions per word, "first": [W] first such position (-1 if none)}."""
    text, starts = corpus_text(tokens, ctx, tok)
    spans = [(m.start(), m.end(), m.group()) for m in WORD.finditer(text)]
    if not spans:
        z = np.zeros(0, np.int64)
        return {"words": [], "pos": z, "word": z, "n_pos": z, "first": z}
    a = np.fromiter((s[0] for s in spans), np.int64, len(spans))
    b = np.fromiter((s[1] for s in spans), np.int64, len(spans))
    words, wid = np.unique(np.array([s[2] for s in spans]), return_inverse=True)
    first = np.searchsorted(starts, a, side="right") - 1
    last = np.searchsorted(starts, b, side="left") - 1
    n = last - first + 1
    pos = np.repeat(first, n) + (np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n))
    word = np.repeat(wid.ravel(), n)
    keep = valid[pos]
    key = np.unique(word[keep].astype(np.int64) * len(tokens) + pos[keep])
    word, pos = key // len(tokens), key % len(tokens)
    n_pos = np.bincount(word, minlength=len(words))
    firstpos = np.full(len(words), -1, np.int64)
    o = np.flatnonzero(np.r_[True, word[1:] != word[:-1]]) if len(word) else np.zeros(0, np.int64)
    firstpos[word[o]] = pos[o]
    return {"words": [str(w) for w in words], "pos": pos, "word": word, "n_pos": n_pos, "first": firstpos}


def word_pairs(codes: sp.csr_matrix, index: dict, n_firing: np.ndarray, density: np.ndarray, n_valid: int,
               min_fired: int, min_lift: float, min_share: float) -> dict:
    """(word, feature) pairs word search can list: arrays word, feature, count, sum (sorted by word, feature)."""
    W, T = len(index["words"]), codes.shape[0]
    P = sp.csr_matrix((np.ones(len(index["pos"]), np.float32), (index["word"], index["pos"])), shape=(W, T))
    fired = (P @ (codes > 0).astype(np.float32)).tocoo()
    summed = (P @ codes).tocsr()
    w, f, c = fired.row.astype(np.int64), fired.col.astype(np.int64), np.rint(fired.data).astype(np.int64)
    lift = (c / np.maximum(index["n_pos"][w], 1)) / np.maximum(density[f], 1.0 / max(n_valid, 1))
    share = c / np.maximum(n_firing[f], 1)
    ok = (c >= min_fired) & (lift >= min_lift) & (share >= min_share)
    w, f, c = w[ok], f[ok], c[ok]
    o = np.lexsort((f, w))
    w, f, c = w[o], f[o], c[o]
    s = np.asarray(summed[w, f]).ravel() if len(w) else np.zeros(0)
    return {"word_w": w.astype(np.int32), "word_f": f.astype(np.int32), "word_count": c.astype(np.int32),
            "word_sum": s.astype(np.float32)}


def _feature_token_counts(codes: sp.csr_matrix, tokens: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, ...]:
    """(feature, token, count) of firings on the given rows' tokens, sorted by feature then token."""
    sub = codes[rows].tocoo()
    f = sub.col.astype(np.int64)
    t = tokens[rows[sub.row]].astype(np.int64)
    V = int(tokens.max()) + 1 if len(tokens) else 1
    k, cnt = np.unique(f * V + t, return_counts=True)
    return k // V, k % V, cnt


def label_scores(codes: sp.csr_matrix, tokens: np.ndarray, valid: np.ndarray, ctx: int,
                 tok: Callable[[int], str]) -> tuple[list[list[str]], dict]:
    """Every feature's label parts (made on windows w % SCORE_EVERY != SCORE_EVERY - 1) and its counts on the
    others: (parts per feature, {"ls_pred", "ls_fire", "ls_both": [F] int32})."""
    F = codes.shape[1]
    held = (np.arange(len(tokens)) // ctx) % SCORE_EVERY == SCORE_EVERY - 1
    lab, sco = np.flatnonzero(valid & ~held), np.flatnonzero(valid & held)
    size = int(tokens.max()) + 1 if len(tokens) else 1
    base = np.bincount(tokens[lab], minlength=size).astype(np.float64)
    base /= max(base.sum(), 1.0)
    score_counts = np.bincount(tokens[sco], minlength=size)
    keys = {int(t): token_key(tok(int(t))) for t in np.flatnonzero(np.bincount(tokens, minlength=size))}
    ids_of: dict[str, list[int]] = {}
    for t in np.flatnonzero(score_counts):
        ids_of.setdefault(keys[int(t)], []).append(int(t))
    lab_f, lab_t, lab_c = _feature_token_counts(codes, tokens, lab)
    n_lab = np.bincount(lab_f, weights=lab_c, minlength=F)
    # only tokens whose key can pass both rules matter (a key's count is summed, its lift is the max of its tokens)
    key_names, key_id = np.unique(np.array([keys.get(int(t), "") for t in range(size)], dtype=object).astype(str),
                                  return_inverse=True)
    lift = (lab_c / np.maximum(n_lab[lab_f], 1)) / np.maximum(base[lab_t], 1e-300)
    grp = lab_f * len(key_names) + key_id.ravel()[lab_t]
    ug, ginv = np.unique(grp, return_inverse=True)
    gcount = np.bincount(ginv.ravel(), weights=lab_c, minlength=len(ug))
    glift = np.zeros(len(ug))
    np.maximum.at(glift, ginv.ravel(), lift)
    keep = ((gcount >= 3) & (glift >= 4.0))[ginv.ravel()]
    parts: list[list[str]] = [[] for _ in range(F)]
    kf, kt, kc = lab_f[keep], lab_t[keep], lab_c[keep]
    bounds = np.searchsorted(kf, np.arange(F + 1))
    label_pairs: list[tuple[int, int]] = []
    for f in np.flatnonzero(np.diff(bounds)):
        s, e = bounds[f], bounds[f + 1]
        parts[f] = selective_parts(zip(kt[s:e].tolist(), kc[s:e].tolist()), max(1, int(n_lab[f])), base,
                                   lambda t: tok(int(t)))
        for p in parts[f]:
            label_pairs.extend((int(f), t) for t in ids_of.get(p, []))
    sco_f, sco_t, sco_c = _feature_token_counts(codes, tokens, sco)
    fire = np.bincount(sco_f, weights=sco_c, minlength=F).astype(np.int64)
    pred = np.zeros(F, np.int64)
    both = np.zeros(F, np.int64)
    if label_pairs:
        lp = np.unique(np.array(label_pairs, np.int64), axis=0)
        np.add.at(pred, lp[:, 0], score_counts[lp[:, 1]])
        V = size
        hit = np.isin(sco_f * V + sco_t, lp[:, 0] * V + lp[:, 1])
        both = np.bincount(sco_f[hit], weights=sco_c[hit], minlength=F).astype(np.int64)
    return parts, {"ls_pred": pred.astype(np.int32), "ls_fire": fire.astype(np.int32), "ls_both": both.astype(np.int32)}


def context_acts(codes: sp.csr_matrix, rows: np.ndarray, ctx: int) -> np.ndarray:
    """rows [F, ...] global positions (-1: none) -> [F, ..., EX_LEFT + 1 + EX_RIGHT] fp16: feature f's activation
    at each context token around its row (0 outside the row's window and for -1 rows)."""
    F = codes.shape[1]
    csc = codes.tocsc()
    csc.sort_indices()
    T = codes.shape[0]
    keys = np.repeat(np.arange(F, dtype=np.int64), np.diff(csc.indptr)) * T + csc.indices
    off = np.arange(-EX_LEFT, EX_RIGHT + 1)
    r = rows[..., None].astype(np.int64)
    pos = r % ctx + off
    ok = (r >= 0) & (pos >= 0) & (pos < ctx)
    f = np.broadcast_to(np.arange(F).reshape((F,) + (1,) * (rows.ndim)), ok.shape)
    qk = f[ok] * T + ((r // ctx) * ctx + pos)[ok]  # only real context tokens are looked up
    out = np.zeros(ok.shape, np.float16)
    if len(keys) and len(qk):
        at = np.minimum(np.searchsorted(keys, qk), len(keys) - 1)
        out[ok] = np.where(keys[at] == qk, csc.data[at], 0.0)
    return out


def compact(atlas, cofire_tokens: int):
    """The compact form of a full-codes Atlas (see the module docstring)."""
    words = word_index(atlas.tokens, atlas.valid, atlas.ctx, atlas.tok)
    keep_rows = min(len(atlas.tokens), max(0, cofire_tokens) // atlas.ctx * atlas.ctx)
    summaries, parts, codes = {}, {}, {}
    for n, c in atlas.codes.items():
        s = dict(atlas.summaries[n])
        s["top_ctx"] = context_acts(c, s["top_rows"], atlas.ctx)
        s["quant_ctx"] = context_acts(c, s["quant_rows"], atlas.ctx)
        s.update(word_pairs(c, words, s["n_firing"], atlas.density[n], atlas.n_valid, MIN_MATCHED_FIRINGS, MIN_LIFT,
                            MIN_SHARE))
        parts[n], counts = label_scores(c, atlas.tokens, atlas.valid, atlas.ctx, atlas.tok)
        s.update(counts)
        summaries[n] = s
        codes[n] = c[:keep_rows]
    index = {"words": words["words"], "n_pos": words["n_pos"], "first": words["first"]}
    meta = {**atlas.meta, "cofire_tokens": keep_rows, "version": ATLAS_VERSION}
    return replace(atlas, codes=codes, summaries=summaries, words=index, label_parts=parts, meta=meta, _cache={})


def upgrade(folder, cofire_tokens: int = 131_072):
    """A version-1 atlas folder (every token's codes) in the compact form, without running the model; None when the
    folder holds no atlas or one that is already compact."""
    from app.engine.atlas.storage import load_atlas, read_meta

    meta = read_meta(folder)
    if meta is None or meta.get("version", 1) >= ATLAS_VERSION:
        return None
    old = load_atlas(folder)
    small = compact(old, cofire_tokens)
    small.meta["upgraded_from_version"] = meta.get("version", 1)
    return small
