"""The atlas and its records (Atlas, FeatureAtlas, Example, ...) and its token labels."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from app.engine.atlas.selective import selective_parts, token_key

ATLAS_VERSION = 2  # 2: compact (examples with their contexts, word index, label scores; no full codes)
EX_LEFT, EX_RIGHT = 16, 6  # context stored around each example's activating token
SAE_ORDER = ("coarse", "fine")
VALUE_DTYPE = np.float16  # stored activations; summaries are computed from the same rounded values


@dataclass(frozen=True)
class Example:
    """One context around a feature's activating token: per-token activations of that feature."""

    window: int
    position: int  # activating token, index within the window
    start: int  # window index of the first context token shown
    token_ids: tuple[int, ...]
    tokens: tuple[str, ...]
    acts: tuple[float, ...]  # the feature's activation at each context token (0 at invalid positions)
    activation: float  # at the activating token


@dataclass(frozen=True)
class Neighbour:
    sae: str
    index: int
    cosine: float  # decoder-direction cosine
    label: str


@dataclass(frozen=True)
class TokenStat:
    token_id: int
    token: str
    count: int  # firings on this token
    mean_act: float  # mean activation when firing on it


@dataclass(frozen=True)
class FeatureAtlas:
    """Everything the atlas knows about one feature."""

    sae: str
    index: int
    label: str
    density: float  # share of valid tokens where it fires
    n_firing: int
    mean_when_firing: float
    max_act: float
    hist_edges: tuple[float, ...]  # n_bins + 1 edges over [0, max_act]
    hist_counts: tuple[int, ...]
    top_tokens: tuple[TokenStat, ...]
    examples: tuple[Example, ...]
    quantiles: tuple[tuple[str, tuple[Example, ...]], ...]  # (band name, examples), strongest band first
    neighbours: dict  # sae name -> tuple[Neighbour, ...], nearest first


@dataclass(frozen=True)
class SearchHit:
    sae: str
    index: int
    score: float  # what the ranking used
    activation: float  # on the query (text search) or the feature's max in the atlas (atlas search)
    token: str  # the query token it fired on most (text search) or the matching token (atlas search)
    label: str
    density: float | None
    max_act: float | None
    dense: bool = False  # fires on more than ranking.DENSE_DENSITY of the atlas's tokens
    share: float | None = None  # atlas search: share of the feature's firings that are on the query word
    top_share: float | None = None  # atlas search: share of its top examples with the word next to the activation


@dataclass(frozen=True)
class PairIndependence:
    """Was the coarse/fine pair initialised together? Same-index decoder cosines vs a random baseline."""

    mean_same_index_cosine: float  # mean over i < d_coarse of cos(W_dec_coarse[i], W_dec_fine[i])
    share_best_is_same: float  # share of (checked) coarse features whose best fine match is index i
    n_checked: int  # coarse features checked for the best match (all, or an evenly spaced sample)
    threshold: float

    @property
    def initialised_together(self) -> bool:
        return self.mean_same_index_cosine > self.threshold


@dataclass(frozen=True)
class Atlas:
    fingerprint: str  # engine/SAE fingerprint it was built for (stale detection)
    tokens: np.ndarray  # [T] int32 token ids of the atlas corpus, windows concatenated
    ctx: int  # window length: window w covers tokens[w*ctx:(w+1)*ctx]
    valid: np.ndarray  # [T] bool: position counted (not position 0 / sink / special)
    codes: dict  # "coarse"/"fine" -> scipy.sparse.csr_matrix [S, d_sae] float32: the first S tokens only (co-firing)
    density: dict  # name -> [d_sae] share of valid tokens where the feature fires (> 0)
    mean_when_firing: dict  # name -> [d_sae]
    max_act: dict  # name -> [d_sae]
    summaries: dict = field(default_factory=dict)  # name -> {array name: np.ndarray} (see summarise)
    token_strings: dict = field(default_factory=dict)  # token id -> decoded string (ids in the corpus)
    meta: dict = field(default_factory=dict)  # corpus, build parameters, timings
    words: dict = field(default_factory=dict)  # word index: "words" (sorted), "n_pos", "first" (see compact.py)
    label_parts: dict = field(default_factory=dict)  # name -> per feature, its label parts made on 3 windows in 4
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def n_windows(self) -> int:
        return len(self.tokens) // self.ctx

    @property
    def n_valid(self) -> int:
        return int(self.valid.sum())

    def width(self, sae: str) -> int:
        return int(len(self.summaries[sae]["n_firing"]))

    def tok(self, token_id: int) -> str:
        return self.token_strings.get(int(token_id), f"<{int(token_id)}>")

    def label(self, sae: str, index: int) -> str:
        """Label from the tokens it fires on more than the corpus does (see token_label), memoised."""
        key = ("label", sae)
        if key not in self._cache:
            self._cache[key] = {}
        memo = self._cache[key]
        if index not in memo:
            memo[index] = token_label(self, sae, index)
        return memo[index]

    def neighbours(self, sae: str, index: int, other: str | None = None) -> tuple[Neighbour, ...]:
        s = self.summaries[sae]
        which = "same" if other in (None, sae) else "other"
        target = sae if which == "same" or other is None else other
        if f"nb_{which}_idx" not in s:
            return ()
        idx, cos = s[f"nb_{which}_idx"][index], s[f"nb_{which}_cos"][index]
        return tuple(Neighbour(target, int(i), float(c), self.label(target, int(i))) for i, c in zip(idx, cos) if i >= 0)

    def example(self, sae: str, index: int, row: int, left: int = 16, right: int = 6) -> Example:
        """The context around token `row` (a global position in the co-firing sample: row < codes[sae].shape[0])
        with the feature's activation at each token."""
        if not 0 <= int(row) < self.codes[sae].shape[0]:
            raise IndexError(f"row {row} is outside the co-firing sample (0..{self.codes[sae].shape[0] - 1})")
        w, pos = divmod(int(row), self.ctx)
        start, stop = max(0, pos - left), min(self.ctx, pos + right + 1)
        g0 = w * self.ctx
        col = self.codes[sae][g0 + start: g0 + stop, index].toarray().ravel()
        return self._example(w, pos, start, stop, col)

    def _example(self, w: int, pos: int, start: int, stop: int, col: np.ndarray) -> Example:
        ids = self.tokens[w * self.ctx + start: w * self.ctx + stop]
        return Example(window=w, position=pos, start=start, token_ids=tuple(int(i) for i in ids),
                       tokens=tuple(self.tok(i) for i in ids), acts=tuple(float(a) for a in col),
                       activation=float(col[pos - start]))

    def stored_example(self, row: int, acts: np.ndarray, left: int = 16, right: int = 6) -> Example:
        """An example from its stored context activations (acts [EX_LEFT + 1 + EX_RIGHT] around `row`)."""
        left, right = min(left, EX_LEFT), min(right, EX_RIGHT)
        w, pos = divmod(int(row), self.ctx)
        start, stop = max(0, pos - left), min(self.ctx, pos + right + 1)
        col = np.asarray(acts[start - pos + EX_LEFT: stop - pos + EX_LEFT], dtype=np.float32)
        return self._example(w, pos, start, stop, col)

    def feature(self, sae: str, index: int, left: int = 16, right: int = 6) -> FeatureAtlas:
        """Examples, quantile examples, histogram, tokens and neighbours of one feature."""
        s = self.summaries[sae]
        width = self.width(sae)
        if not 0 <= index < width:
            raise IndexError(f"feature index {index} does not exist: SAE {sae} has {width} features (0..{width - 1})")
        mx = float(self.max_act[sae][index])
        edges = tuple(float(e) for e in np.linspace(0.0, mx, s["hist"].shape[1] + 1)) if mx > 0 else ()
        toks = tuple(TokenStat(int(t), self.tok(t), int(c), float(m))
                     for t, c, m in zip(s["tok_ids"][index], s["tok_counts"][index], s["tok_mean"][index]) if c > 0)
        ex = tuple(self.stored_example(r, a, left, right)
                   for r, a in zip(s["top_rows"][index], s["top_ctx"][index]) if r >= 0)
        q, qa = s["quant_rows"][index], s["quant_ctx"][index]
        nq = q.shape[0]
        bands = []
        for b in range(nq):
            rows = [(r, a) for r, a in zip(q[b], qa[b]) if r >= 0]
            if rows:
                name = f"ranks {100 * b // nq}–{100 * (b + 1) // nq}%"
                bands.append((name, tuple(self.stored_example(r, a, left, right) for r, a in rows)))
        nbs = {sae: self.neighbours(sae, index)}
        for other in self.codes:
            if other != sae:
                nbs[other] = self.neighbours(sae, index, other)
        return FeatureAtlas(sae=sae, index=index, label=self.label(sae, index),
                            density=float(self.density[sae][index]), n_firing=int(s["n_firing"][index]),
                            mean_when_firing=float(self.mean_when_firing[sae][index]), max_act=mx,
                            hist_edges=edges, hist_counts=tuple(int(c) for c in s["hist"][index]) if mx > 0 else (),
                            top_tokens=toks, examples=ex, quantiles=tuple(bands), neighbours=nbs)


EARLY_POSITIONS = 8  # positions 1..7 of a window: where SmolLM2's residual norm is still settling after the sink
POSITION_ARTEFACT_SHARE = 0.5  # a feature whose top examples sit there this often (base rate ~5 %) reads position


def position_artefacts(atlas: Atlas, sae: str, early: int = EARLY_POSITIONS,
                       min_share: float = POSITION_ARTEFACT_SHARE, min_examples: int = 5) -> np.ndarray:
    """Indices of the features whose top examples (>= min_examples) sit at window positions 1..early-1 at least
    min_share of the time: activations that track position, not content."""
    rows = np.asarray(atlas.summaries[sae]["top_rows"])
    pos = np.where(rows >= 0, rows % atlas.ctx, -1)
    n = (rows >= 0).sum(1)
    share = ((pos >= 1) & (pos < early)).sum(1) / np.maximum(n, 1)
    return np.flatnonzero((n >= min_examples) & (share >= min_share))


def token_base_rates(atlas: Atlas) -> np.ndarray:
    """[max token id + 1] share of the atlas's valid positions holding each token (memoised)."""
    if "base_rates" not in atlas._cache:
        counts = np.bincount(atlas.tokens[atlas.valid], minlength=int(atlas.tokens.max()) + 1).astype(np.float64)
        atlas._cache["base_rates"] = counts / max(counts.sum(), 1.0)
    return atlas._cache["base_rates"]


def token_label(atlas: Atlas, sae: str, index: int, max_parts: int = 3, min_count: int = 3, min_lift: float = 4.0,
                max_context: int = 2, min_window_share: float = 1 / 3, min_window_lift: float = 5.0) -> str:
    """A label from what the feature fires on *more than the corpus does*, e.g. "au · French · Roman (in: France)".

    Tokens: among the feature's top tokens, those with >= min_count firings and lift >= min_lift, where lift =
    (share of the feature's firings on the token) / (share of the corpus's valid positions holding it); ranked by
    count x log(lift), so punctuation a feature merely co-fires on ("." on every sentence end) does not name it
    (selective.selective_parts). Context: tokens present in >= min_window_share of its top-example windows and
    >= min_window_lift times as often as in a random window, for features that track a topic rather than a token.
    """
    s = atlas.summaries[sae]
    n = int(s["n_firing"][index])
    if n == 0:
        return "(never fires on the atlas corpus)"
    base = token_base_rates(atlas)
    parts = selective_parts(zip(s["tok_ids"][index], s["tok_counts"][index]), n, base, atlas.tok,
                            max_parts, min_count, min_lift)
    windows = np.unique(np.asarray(s["top_rows"][index])[np.asarray(s["top_rows"][index]) >= 0] // atlas.ctx)
    context: list[str] = []
    if len(windows) >= 3:
        rows = (windows[:, None] * atlas.ctx + np.arange(atlas.ctx)[None, :]).ravel()
        toks = np.where(atlas.valid[rows], atlas.tokens[rows], -1).reshape(len(windows), atlas.ctx)
        toks.sort(axis=1)  # distinct tokens per window: the first of each run in the sorted row
        first = np.ones_like(toks, dtype=bool)
        first[:, 1:] = toks[:, 1:] != toks[:, :-1]
        ids, k = np.unique(toks[first & (toks >= 0)], return_counts=True)
        share = k / len(windows)
        chance = -np.expm1(atlas.ctx * np.log1p(-np.minimum(base[ids], 1 - 1e-12)))  # a random window holds it
        lift = share / np.maximum(chance, 1e-12)
        keep = (share >= min_window_share) & (lift >= min_window_lift)
        for t in ids[keep][np.argsort(-lift[keep], kind="stable")]:
            key = token_key(atlas.tok(t))
            if key not in parts and key not in context and any(ch.isalnum() for ch in key):
                context.append(key)
            if len(context) == max_context:
                break
    label = " · ".join(parts) if parts else "(no selective token)"
    return f"{label} (in: {' · '.join(context)})" if context else label


def _assemble(fingerprint, tokens, ctx, valid, codes, summaries, strings, meta, words=None, label_parts=None) -> Atlas:
    n_valid = max(1, int(valid.sum()))
    density = {n: s["n_firing"] / n_valid for n, s in summaries.items()}
    mean = {n: s["mean_when_firing"] for n, s in summaries.items()}
    mx = {n: s["max_act"] for n, s in summaries.items()}
    return Atlas(fingerprint=fingerprint, tokens=tokens, ctx=ctx, valid=valid, codes=codes, density=density,
                 mean_when_firing=mean, max_act=mx, summaries=summaries, token_strings=strings, meta=meta,
                 words=words or {}, label_parts=label_parts or {})
