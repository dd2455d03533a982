"""One coarse feature's split map: its fine children, their co-firing, and absorption holes."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from app.engine.splits.index import SplitIndex


@dataclass(frozen=True)
class FineMatch:
    """One fine feature seen from coarse feature c (counts over the counted corpus tokens)."""

    fine: int
    cosine: float  # decoder cosine to c
    n_fine: int  # tokens where the fine feature fires
    n_both: int  # tokens where both fire
    p_fine_given_coarse: float  # n_both / n_coarse
    p_coarse_given_fine: float  # n_both / n_fine (0 when the fine feature never fires)
    jaccard: float  # n_both / (n_coarse + n_fine - n_both)
    child: bool  # cosine >= child_cos


@dataclass(frozen=True)
class Hole:
    """A corpus token where the split leaks: `feature` fired there with `activation` (its own units)."""

    position: int  # index into the atlas corpus
    sae: str  # "coarse" (coarse fired, no child did) | "fine" (a child fired, the coarse feature did not)
    feature: int
    activation: float
    relative: float  # activation / that feature's max over the corpus


@dataclass(frozen=True)
class SplitMap:
    coarse: int
    n_tokens: int  # counted corpus tokens
    n_coarse: int  # tokens where c fires
    child_cos: float
    by_cosine: tuple[FineMatch, ...]  # best decoder cosine first
    by_cofiring: tuple[FineMatch, ...]  # best Jaccard first (only fine features that fire with c)
    children: tuple[FineMatch, ...]  # every fine feature with cosine >= child_cos, best cosine first
    coverage: float  # fraction of c's firing tokens where at least one child fires (nan if c never fires)
    strong_frac: float
    n_holes: int  # tokens where c >= strong_frac * max(c) and no child fires
    holes: tuple[Hole, ...]  # the strongest of them
    n_reverse_holes: int  # tokens where a child >= strong_frac * its max and c is silent
    reverse_holes: tuple[Hole, ...]


def fine_matches(ix: SplitIndex, c: int, fine_idx: np.ndarray, cos: np.ndarray, n_both_all: np.ndarray,
                 child_cos: float) -> tuple[FineMatch, ...]:
    n_c = int(ix.coarse_count[c])
    out = []
    for f in fine_idx:
        f = int(f)
        nb, nf = int(n_both_all[f]), int(ix.fine_count[f])
        union = n_c + nf - nb
        out.append(FineMatch(f, float(cos[f]), nf, nb, nb / n_c if n_c else 0.0, nb / nf if nf else 0.0,
                             nb / union if union else 0.0, bool(cos[f] >= child_cos)))
    return tuple(out)


def split_map(ix: SplitIndex, c: int, child_cos: float = 0.5, top: int = 20, strong_frac: float = 0.3,
              n_examples: int = 12, max_children: int = 50) -> SplitMap:
    """Children, co-firing, coverage and absorption holes of coarse feature c over the index's tokens."""
    cos = ix.fine_unit @ ix.coarse_unit[c]  # [Df]
    rows_c, acts_c = ix.coarse_rows(c)
    sub = ix.fine[rows_c]  # fine codes on the tokens where c fires
    n_both = np.bincount(sub.indices, minlength=ix.fine.shape[1])
    n_c, Df = int(rows_c.size), ix.fine.shape[1]

    k = min(top, Df)
    by_cos = np.argsort(-cos, kind="stable")[:k]
    cofiring = np.flatnonzero(n_both)
    if cofiring.size:
        jac = n_both[cofiring] / (n_c + ix.fine_count[cofiring] - n_both[cofiring])
        cofiring = cofiring[np.lexsort((cofiring, -jac))][:k]
    child_idx = np.flatnonzero(cos >= child_cos)
    child_idx = child_idx[np.argsort(-cos[child_idx], kind="stable")]

    # Coverage and holes use every child (not only the ones listed).
    child_fires = (sub[:, child_idx].getnnz(axis=1) > 0) if child_idx.size else np.zeros(n_c, dtype=bool)
    coverage = float(child_fires.mean()) if n_c else float("nan")
    mx_c = float(ix.coarse_max[c])
    strong = acts_c >= strong_frac * mx_c if mx_c > 0 else np.zeros(n_c, dtype=bool)
    hole_rows = np.flatnonzero(strong & ~child_fires)
    order = hole_rows[np.argsort(-acts_c[hole_rows], kind="stable")][:n_examples]
    holes = tuple(Hole(int(ix.rows[rows_c[i]]), "coarse", c, float(acts_c[i]), float(acts_c[i]) / mx_c) for i in order)

    # Reverse: a child fires strongly where c is silent; per token keep the child with the largest relative activation.
    best_rel: dict[int, tuple[float, int, float]] = {}
    silent = np.ones(ix.n_tokens, dtype=bool)
    silent[rows_c] = False
    for fj in child_idx:
        f = int(fj)
        r, a = ix.fine_rows(f)
        mx = float(ix.fine_max[f])
        if mx <= 0:
            continue
        rel = a / mx
        keep = (rel >= strong_frac) & silent[r]
        for row, rv, av in zip(r[keep].tolist(), rel[keep].tolist(), a[keep].tolist()):
            if row not in best_rel or rv > best_rel[row][0]:
                best_rel[row] = (rv, f, av)
    rev = sorted(best_rel.items(), key=lambda kv: (-kv[1][0], kv[0]))
    reverse = tuple(Hole(int(ix.rows[row]), "fine", f, float(av), float(rv)) for row, (rv, f, av) in rev[:n_examples])

    return SplitMap(
        coarse=c, n_tokens=ix.n_tokens, n_coarse=n_c, child_cos=child_cos,
        by_cosine=fine_matches(ix, c, by_cos, cos, n_both, child_cos),
        by_cofiring=fine_matches(ix, c, cofiring, cos, n_both, child_cos),
        children=fine_matches(ix, c, child_idx[:max_children], cos, n_both, child_cos),
        coverage=coverage, strong_frac=strong_frac,
        n_holes=int(hole_rows.size), holes=holes, n_reverse_holes=len(rev), reverse_holes=reverse,
    )
