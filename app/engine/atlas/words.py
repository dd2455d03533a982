"""Whole-word search over the atlas: which positions hold a query word, and which features are specific to it.

A query matches a word, never the inside of one: "Paris" matches " Paris" and "Paris," but not "comparison";
"anger" does not match "dangerous". Matching runs on the atlas text itself (each window's tokens concatenated), so
a word split over several tokens (" Christ" + "mas") matches every token it spans.
"""
from __future__ import annotations

import re

import numpy as np

from app.engine.atlas.core import Atlas, SearchHit
from app.engine.ranking import DENSE_DENSITY

MIN_MATCHED_FIRINGS = 3  # a feature must fire on the query at least this often to be listed
MIN_LIFT = 4.0  # and this many times more often than on a random position (else the column stays empty)
MIN_SHARE = 0.02  # and the word must be at least this share of all its firings (else the word is incidental to it)


def _text_index(atlas: Atlas) -> tuple[str, np.ndarray]:
    """(casefolded corpus text with a newline between windows, [T] start offset of each token), memoised."""
    key = ("text_index",)
    if key not in atlas._cache:
        parts, starts, off = [], np.zeros(len(atlas.tokens), np.int64), 0
        for i, t in enumerate(atlas.tokens):
            if i and i % atlas.ctx == 0:
                parts.append("\n")
                off += 1
            s = atlas.tok(int(t)).casefold()
            starts[i] = off
            parts.append(s)
            off += len(s)
        atlas._cache[key] = ("".join(parts), starts)
    return atlas._cache[key]


def word_pattern(query: str) -> re.Pattern | None:
    """The query's words as one phrase, bounded by non-word characters on both sides (None for an empty query)."""
    words = query.casefold().split()
    if not words:
        return None
    return re.compile(r"(?<!\w)" + r"\s+".join(re.escape(w) for w in words) + r"(?!\w)")


def matching_positions(atlas: Atlas, query: str) -> np.ndarray:
    """Sorted global positions of valid tokens that are part of a whole-word match of the query."""
    pat = word_pattern(query)
    if pat is None:
        return np.zeros(0, np.int64)
    text, starts = _text_index(atlas)
    hits: list[np.ndarray] = []
    for m in pat.finditer(text):
        a, b = m.span()
        first = int(np.searchsorted(starts, a, side="right")) - 1
        last = int(np.searchsorted(starts, b, side="left")) - 1
        hits.append(np.arange(first, last + 1))
    if not hits:
        return np.zeros(0, np.int64)
    pos = np.unique(np.concatenate(hits))
    return pos[atlas.valid[pos]]


def search_words(atlas: Atlas, query: str, top: int = 20) -> dict[str, tuple[SearchHit, ...]]:
    """Features that fire on the query's word, ranked by lift: P(fires | word) / P(fires) on the atlas.

    score = lift; activation = the feature's mean activation on the matched positions; only features with at least
    MIN_MATCHED_FIRINGS firings on the word, lift >= MIN_LIFT and share >= MIN_SHARE are listed (an empty column
    beats noise).
    """
    pos = matching_positions(atlas, query)
    out: dict[str, tuple[SearchHit, ...]] = {}
    n_valid = max(1, atlas.n_valid)
    for n, codes in atlas.codes.items():
        if len(pos) == 0:
            out[n] = ()
            continue
        sub = codes[pos]
        fired = np.bincount(sub.indices, minlength=codes.shape[1])  # firings on the word, per feature
        summed = np.bincount(sub.indices, weights=sub.data, minlength=codes.shape[1])
        p_word = fired / len(pos)
        p_all = np.maximum(atlas.density[n], 1.0 / n_valid)
        lift = p_word / p_all
        share = fired / np.maximum(atlas.summaries[n]["n_firing"], 1)
        cand = np.flatnonzero((fired >= MIN_MATCHED_FIRINGS) & (lift >= MIN_LIFT) & (share >= MIN_SHARE))
        order = cand[np.lexsort((cand, -fired[cand], -lift[cand]))][:top]
        tok = atlas.tok(int(atlas.tokens[pos[0]]))
        out[n] = tuple(SearchHit(sae=n, index=int(f), score=float(lift[f]), activation=float(summed[f] / fired[f]),
                                 token=tok, label=atlas.label(n, int(f)), density=float(atlas.density[n][f]),
                                 max_act=float(atlas.max_act[n][f]), dense=bool(atlas.density[n][f] > DENSE_DENSITY),
                                 share=float(share[f])) for f in order)
    return out
