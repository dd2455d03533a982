"""Whole-word search over the atlas: which positions hold a query word, and which features are specific to it.

A query matches a word, never the inside of one: "Paris" matches " Paris" and "Paris," but not "comparison";
"anger" does not match "dangerous". Matching runs on the atlas text itself (each window's tokens concatenated), so
a word split over several tokens (" Christ" + "mas") matches every token it spans.
"""
from __future__ import annotations

import bisect
import re

import numpy as np

from app.engine.atlas.core import Atlas, SearchHit
from app.engine.ranking import DENSE_DENSITY

MIN_MATCHED_FIRINGS = 3  # a feature must fire on the query at least this often to be listed
MIN_LIFT = 4.0  # and this many times more often than on a random position (else the column stays empty)
MIN_SHARE = 0.02  # and the word must be at least this share of all its firings (else the word is incidental to it)
WORD_RE = re.compile(r"\w+")  # a word of the corpus text (atlas.compact indexes these)


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


def _word_hits(atlas: Atlas, n: str, word: str) -> tuple[int, dict[int, tuple[float, int, float]]]:
    """(valid positions holding the word, {feature: (lift, firings on it, summed activation)}) from the stored pairs."""
    words = atlas.words.get("words", [])
    i = bisect.bisect_left(words, word)
    if i == len(words) or words[i] != word:
        return 0, {}
    s = atlas.summaries[n]
    lo, hi = np.searchsorted(s["word_w"], [i, i + 1])
    n_pos = int(atlas.words["n_pos"][i])
    n_valid = max(1, atlas.n_valid)
    out = {}
    for f, c, sm in zip(s["word_f"][lo:hi].tolist(), s["word_count"][lo:hi].tolist(), s["word_sum"][lo:hi].tolist()):
        out[f] = ((c / n_pos) / max(float(atlas.density[n][f]), 1.0 / n_valid), c, sm)
    return n_pos, out


def search_words(atlas: Atlas, query: str, top: int = 20) -> dict[str, tuple[SearchHit, ...]]:
    """Features that fire on the query's word, ranked by lift: P(fires | word) / P(fires) on the atlas.

    score = lift; activation = the feature's mean activation on the word's positions; only features with at least
    MIN_MATCHED_FIRINGS firings on the word, lift >= MIN_LIFT and share >= MIN_SHARE are listed (an empty column
    beats noise). Read from the word pairs stored at build time (compact.word_pairs, the same filters). A query of
    several words (or with punctuation) lists the features stored for every one of its words, scored by the
    smallest lift.
    """
    parts = WORD_RE.findall(query.casefold())
    out: dict[str, tuple[SearchHit, ...]] = {}
    for n in atlas.summaries:
        if not parts or "word_w" not in atlas.summaries[n]:
            out[n] = ()
            continue
        per = [_word_hits(atlas, n, w) for w in parts]
        common = set(per[0][1]).intersection(*(set(h) for _, h in per[1:]))
        rows = []
        for f in common:
            lift, c, sm = min((h[f] for _, h in per), key=lambda x: x[0])
            rows.append((f, lift, c, sm))
        rows.sort(key=lambda r: (-r[1], -r[2], r[0]))
        first = int(atlas.words["first"][bisect.bisect_left(atlas.words["words"], parts[0])]) if rows else -1
        tok = atlas.tok(int(atlas.tokens[first])) if first >= 0 else ""
        n_firing = atlas.summaries[n]["n_firing"]
        out[n] = tuple(SearchHit(sae=n, index=int(f), score=float(lift), activation=float(sm / c), token=tok,
                                 label=atlas.label(n, int(f)), density=float(atlas.density[n][f]),
                                 max_act=float(atlas.max_act[n][f]), dense=bool(atlas.density[n][f] > DENSE_DENSITY),
                                 share=float(c / max(int(n_firing[f]), 1))) for f, lift, c, sm in rows[:top])
    return out
