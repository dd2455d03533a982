"""The whole fine dictionary against the coarse one: reconstruction vs novel (SAE stitching)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from app.engine.splits.index import SplitIndex


@dataclass(frozen=True)
class StitchSummary:
    """Reconstruction vs novel fine features, and per coarse feature its children and their coverage."""

    threshold: float
    bin_edges: tuple[float, ...]  # histogram of each fine feature's max cosine to the coarse dictionary
    counts: tuple[int, ...]
    n_reconstruction: int  # fine features with max cosine >= threshold (splits or copies of coarse ones)
    n_novel: int
    n_children: np.ndarray  # [Dc] fine features with cosine >= child_cos to each coarse feature
    coverage: np.ndarray  # [Dc] fraction of each coarse feature's firing tokens where one of those fires (nan: never fires)
    child_cos: float


def stitch_summary(ix: SplitIndex, threshold: float = 0.7, child_cos: float = 0.5, bins: int = 50) -> StitchSummary:
    """The whole-dictionary view: max-cosine histogram over [0, 1] (negative maxima land in the first bin),
    children counts and coverage for every coarse feature (one chunked cosine pass + one sparse product)."""
    mc = ix.max_cos
    edges = np.linspace(0.0, 1.0, bins + 1)
    counts, _ = np.histogram(np.clip(mc, 0.0, 1.0), bins=edges)
    # M[f, c] = 1 when fine f is a child of coarse c; rows of fine firing x M = which coarse parents have a child firing.
    Dc = ix.coarse_unit.shape[0]
    ri_parts, ci_parts = [], []
    for s in range(0, ix.fine_unit.shape[0], ix.chunk):
        r, cc = np.nonzero(ix.fine_unit[s:s + ix.chunk] @ ix.coarse_unit.T >= child_cos)
        ri_parts.append(r + s)
        ci_parts.append(cc)
    ri = np.concatenate(ri_parts) if ri_parts else np.zeros(0, dtype=np.int64)
    ci = np.concatenate(ci_parts) if ci_parts else np.zeros(0, dtype=np.int64)
    M = sp.csr_matrix((np.ones(ri.size, dtype=np.float32), (ri, ci)), shape=(ix.fine_unit.shape[0], Dc))
    n_children = np.bincount(ci, minlength=Dc)
    fine_fire = ix.fine.copy()
    fine_fire.data = np.ones_like(fine_fire.data)
    coarse_fire = ix.coarse.tocsr(copy=True)
    coarse_fire.data = np.ones_like(coarse_fire.data)
    covered = coarse_fire.multiply((fine_fire @ M) > 0)  # [T', Dc]: c fires and one of its children fires
    n_cov = np.asarray(sp.csr_matrix(covered).getnnz(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        coverage = np.where(ix.coarse_count > 0, n_cov / np.maximum(ix.coarse_count, 1), np.nan)
    n_rec = int((mc >= threshold).sum())
    return StitchSummary(threshold, tuple(float(e) for e in edges), tuple(int(x) for x in counts), n_rec,
                         int(mc.shape[0] - n_rec), n_children, coverage, child_cos)
