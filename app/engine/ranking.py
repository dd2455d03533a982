"""How features are ordered wherever they are listed: by how unusual an activation is for that feature.

A feature's *typical* activation is its mean activation when it fires on the atlas corpus; an activation's
*ratio* is the activation over that. Features that fire on more than DENSE_DENSITY of the atlas's tokens are
*dense* (position, punctuation and "any text" features): they are marked and listed after the rest, unless the
user asks for plain activation order. Without an atlas there is no typical activation, and the order is by
activation.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np

DENSE_DENSITY = 0.10
RankBy = Literal["unusual", "activation"]


@dataclass(frozen=True)
class RankedFeature:
    index: int
    value: float  # the raw activation
    ratio: float | None  # value / typical activation when firing (None without an atlas)
    dense: bool  # fires on more than DENSE_DENSITY of the atlas's tokens


def rank_features(indices: Sequence[int] | np.ndarray, values: Sequence[float] | np.ndarray, typical: np.ndarray | None,
                  density: np.ndarray | None, by: RankBy = "unusual",
                  dense_density: float = DENSE_DENSITY) -> tuple[RankedFeature, ...]:
    """The features in display order. unusual: non-dense first, then by ratio, activation, index; activation:
    by activation, then index (dense ones still marked)."""
    rows = []
    for i, v in zip(indices, values):
        i, v = int(i), float(v)
        t = float(typical[i]) if typical is not None else 0.0
        ratio = v / t if typical is not None and t > 0 else None
        dense = bool(density is not None and float(density[i]) > dense_density)
        rows.append(RankedFeature(i, v, ratio, dense))
    if by == "unusual" and typical is not None:
        rows.sort(key=lambda r: (r.dense, -(r.ratio or 0.0), -r.value, r.index))
    else:
        rows.sort(key=lambda r: (-r.value, r.index))
    return tuple(rows)


@dataclass(frozen=True)
class RankedMixed:
    sae: str
    index: int
    value: float  # the raw activation
    ratio: float | None
    dense: bool


def rank_mixed(cands: Sequence[tuple[str, int, float]], typical: dict | None, density: dict | None,
               by: RankBy = "unusual", dense_density: float = DENSE_DENSITY) -> tuple[RankedMixed, ...]:
    """Features of several SAEs (sae, index, activation) in one display order, as rank_features orders one SAE's;
    typical / density: {sae: [d_sae] array} (None, or an SAE missing: no ratio, not dense)."""
    rows = []
    for s, i, v in cands:
        t = typical.get(s) if typical else None
        d = density.get(s) if density else None
        r = rank_features([i], [v], t, d, by, dense_density)[0]
        rows.append(RankedMixed(s, r.index, r.value, r.ratio, r.dense))
    if by == "unusual" and typical:
        rows.sort(key=lambda r: (r.dense, -(r.ratio or 0.0), -r.value, r.sae, r.index))
    else:
        rows.sort(key=lambda r: (-r.value, r.sae, r.index))
    return tuple(rows)


def dense_last(items: Sequence, dense: Sequence[bool]) -> list:
    """Items in their own order (a view's own score: attribution, selectivity), the dense ones after the rest."""
    return [x for x, d in zip(items, dense) if not d] + [x for x, d in zip(items, dense) if d]
