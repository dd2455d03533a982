"""How well a feature's label predicts it: precision, recall and F1 of "a label token is here" -> "it fires".

The label is made (selective.selective_parts, the rule the card's label uses) from the atlas windows w with
w % SCORE_EVERY != SCORE_EVERY - 1, and scored on the others, which it never saw. A position is predicted to fire
when its token is written like one of the label's parts (" French" and "French" are one part); it fires when the
feature's activation there is > 0. Only valid positions count (no position 0, sink or special token). The parts and
the three counts are computed at build time from the full codes (compact.label_scores); this reads them.
"""
from __future__ import annotations

from dataclasses import dataclass

from app.engine.atlas.compact import SCORE_EVERY
from app.engine.atlas.core import Atlas

__all__ = ["SCORE_EVERY", "LabelScore", "label_score"]


@dataclass(frozen=True)
class LabelScore:
    parts: tuple[str, ...]  # the label's token parts, made from the label windows
    precision: float | None  # of the positions holding a label token (held-out windows), the share where it fires
    recall: float | None  # of the positions where it fires (held-out windows), the share holding a label token
    f1: float | None
    n_predicted: int
    n_firing: int
    n_both: int


def label_score(atlas: Atlas, sae: str, index: int) -> LabelScore:
    """The detection score of one feature's label (see the module docstring)."""
    s = atlas.summaries[sae]
    parts = tuple(atlas.label_parts[sae][index])
    n_pred, n_fire, n_both = int(s["ls_pred"][index]), int(s["ls_fire"][index]), int(s["ls_both"][index])
    precision = n_both / n_pred if n_pred else None
    recall = n_both / n_fire if n_fire and parts else None
    f1 = (2 * precision * recall / (precision + recall) if precision and recall else 0.0) \
        if precision is not None and recall is not None else None
    return LabelScore(parts, precision, recall, f1, n_pred, n_fire, n_both)
