"""How well a feature's label predicts it: precision, recall and F1 of "a label token is here" -> "it fires".

The label is made (selective.selective_parts, the rule the card's label uses) from the atlas windows w with
w % SCORE_EVERY != SCORE_EVERY - 1, and scored on the others, which it never saw. A position is predicted to fire
when its token is written like one of the label's parts (" French" and "French" are one part); it fires when the
feature's activation there is > 0. Only valid positions count (no position 0, sink or special token).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from app.engine.atlas.core import Atlas
from app.engine.atlas.selective import selective_parts, token_key

SCORE_EVERY = 4  # one window in four is held out from the label and scores it


@dataclass(frozen=True)
class LabelScore:
    parts: tuple[str, ...]  # the label's token parts, made from the label windows
    precision: float | None  # of the positions holding a label token (held-out windows), the share where it fires
    recall: float | None  # of the positions where it fires (held-out windows), the share holding a label token
    f1: float | None
    n_predicted: int
    n_firing: int
    n_both: int


def _splits(atlas: Atlas) -> tuple[np.ndarray, np.ndarray]:
    """([T] bool label positions, [T] bool score positions), valid positions only."""
    w = np.arange(len(atlas.tokens)) // atlas.ctx
    held = w % SCORE_EVERY == SCORE_EVERY - 1
    return atlas.valid & ~held, atlas.valid & held


def _context(atlas: Atlas) -> dict:
    """Per atlas (memoised): splits, label-split base rates, score-split token counts, key -> token ids."""
    key = ("label_score_ctx",)
    if key not in atlas._cache:
        lab, sco = _splits(atlas)
        size = int(atlas.tokens.max()) + 1 if len(atlas.tokens) else 1
        base = np.bincount(atlas.tokens[lab], minlength=size).astype(np.float64)
        base /= max(base.sum(), 1.0)
        score_counts = np.bincount(atlas.tokens[sco], minlength=size)
        ids_of: dict[str, list[int]] = {}
        for t in np.flatnonzero(score_counts):
            ids_of.setdefault(token_key(atlas.tok(int(t))), []).append(int(t))
        atlas._cache[key] = {"label": lab, "score": sco, "base": base, "score_counts": score_counts, "ids_of": ids_of,
                             "csc": {}}
    return atlas._cache[key]


def label_score(atlas: Atlas, sae: str, index: int) -> LabelScore:
    """The detection score of one feature's label (see the module docstring)."""
    ctx = _context(atlas)
    csc = ctx["csc"].get(sae)
    if csc is None:
        csc = ctx["csc"][sae] = atlas.codes[sae].tocsc()
    rows = csc.indices[csc.indptr[index]: csc.indptr[index + 1]]
    rows = rows[csc.data[csc.indptr[index]: csc.indptr[index + 1]] > 0]
    lab_rows, sco_rows = rows[ctx["label"][rows]], rows[ctx["score"][rows]]
    ids, counts = np.unique(atlas.tokens[lab_rows], return_counts=True)
    parts = selective_parts(zip(ids.tolist(), counts.tolist()), max(1, len(lab_rows)), ctx["base"], atlas.tok)
    label_ids = np.array(sorted({t for p in parts for t in ctx["ids_of"].get(p, [])}), dtype=np.int64)
    n_pred = int(ctx["score_counts"][label_ids].sum()) if len(label_ids) else 0
    n_fire = int(len(sco_rows))
    n_both = int(np.isin(atlas.tokens[sco_rows], label_ids).sum()) if len(label_ids) else 0
    precision = n_both / n_pred if n_pred else None
    recall = n_both / n_fire if n_fire and parts else None
    f1 = (2 * precision * recall / (precision + recall) if precision and recall else 0.0) \
        if precision is not None and recall is not None else None
    return LabelScore(tuple(parts), precision, recall, f1, n_pred, n_fire, n_both)
