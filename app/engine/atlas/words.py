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
TOP_CHECKED = 10  # ranking: of this many of its strongest atlas examples (what its card opens with) ...
NEAR_LEFT, NEAR_RIGHT = 8, 2  # ... the share with the word within 8 tokens before to 2 after the activating token
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


def window_matches(atlas: Atlas, window: int, pattern: re.Pattern) -> np.ndarray:
    """Sorted global positions of valid tokens in one atlas window that are part of a whole-word match of pattern
    (the same positions matching_positions finds there: windows are matched apart)."""
    w0 = window * atlas.ctx
    if "casefolded" not in atlas._cache:
        atlas._cache["casefolded"] = {}
    fold = atlas._cache["casefolded"]
    ids = atlas.tokens[w0: w0 + atlas.ctx].tolist()
    for t in ids:
        if t not in fold:
            fold[t] = atlas.tok(t).casefold()
    strs = [fold[t] for t in ids]
    starts = np.cumsum([0] + [len(x) for x in strs[:-1]])
    hits = [np.arange(np.searchsorted(starts, m.start(), side="right") - 1, np.searchsorted(starts, m.end(), side="left"))
            for m in pattern.finditer("".join(strs))]
    pos = w0 + np.unique(np.concatenate(hits)) if hits else np.zeros(0, np.int64)
    return pos[atlas.valid[pos]]


def top_example_share(atlas: Atlas, sae: str, index: int, pattern: re.Pattern, k: int = TOP_CHECKED,
                      memo: dict | None = None) -> float | None:
    """Of the feature's k strongest atlas examples, the share with a whole-word match of `pattern` within NEAR_LEFT
    tokens before to NEAR_RIGHT after the activating token (in its window); None if it has no example. `memo`
    keeps each window's matches across the features of one query."""
    memo = {} if memo is None else memo
    rows = np.asarray(atlas.summaries[sae]["top_rows"][index])
    rows = rows[rows >= 0][:k]
    if not len(rows):
        return None
    hit = 0
    for r in rows.tolist():
        w = r // atlas.ctx
        if w not in memo:
            memo[w] = window_matches(atlas, w, pattern)
        m = memo[w]
        hit += bool(((m >= r - NEAR_LEFT) & (m <= r + NEAR_RIGHT)).any())
    return hit / len(rows)


def search_words(atlas: Atlas, query: str, top: int = 20) -> dict[str, tuple[SearchHit, ...]]:
    """Features that fire on the query's word, the most specific first.

    Listed: features with at least MIN_MATCHED_FIRINGS firings on the word, lift = P(fires | word) / P(fires) >=
    MIN_LIFT and share of their firings on the word >= MIN_SHARE (an empty column beats noise); read from the word
    pairs stored at build time (compact.word_pairs, the same filters). Ranked by how specific their strongest
    activations are to the word (top_share: of their TOP_CHECKED top examples, the share with the word next to the
    activation), then by lift over all their firings: a rare feature can have a large lift from a few firings on the
    word and top examples about something else ("Paris" in a treaty feature whose examples say "London"). score =
    lift; activation = the mean activation on the word's positions. A query of several words (or with punctuation)
    lists the features stored for every one of its words, scored by the smallest lift.
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
        pat = word_pattern(" ".join(parts))
        memo: dict = {}
        near = {f: top_example_share(atlas, n, int(f), pat, memo=memo) for f, *_ in rows} if pat is not None else {}
        rows.sort(key=lambda r: (-(near.get(r[0]) or 0.0), -r[1], -r[2], r[0]))
        first = int(atlas.words["first"][bisect.bisect_left(atlas.words["words"], parts[0])]) if rows else -1
        tok = atlas.tok(int(atlas.tokens[first])) if first >= 0 else ""
        n_firing = atlas.summaries[n]["n_firing"]
        out[n] = tuple(SearchHit(sae=n, index=int(f), score=float(lift), activation=float(sm / c), token=tok,
                                 label=atlas.label(n, int(f)), density=float(atlas.density[n][f]),
                                 max_act=float(atlas.max_act[n][f]), dense=bool(atlas.density[n][f] > DENSE_DENSITY),
                                 share=float(c / max(int(n_firing[f]), 1)), top_share=near.get(f))
                   for f, lift, c, sm in rows[:top])
    return out
