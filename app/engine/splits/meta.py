"""Meta-decomposition: a fine decoder direction as a sparse non-negative mix of coarse ones (greedy NNLS)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.optimize


@dataclass(frozen=True)
class MetaDecomposition:
    """target ≈ Σ coef · atom (unit directions); residual is ||target - mix|| / ||target||."""

    terms: tuple[tuple[int, float], ...]  # (atom index, coefficient >= 0), largest coefficient first
    residual: float
    cosine: float  # cos(target, mix)


def nonneg_decomposition(target, atoms, max_terms: int = 5, tol: float = 1e-6) -> MetaDecomposition:
    """Sparse non-negative mix of atom rows [N, d] ≈ target [d]: greedy OMP that adds the atom with the largest
    positive correlation with the residual, then refits all chosen coefficients with scipy's NNLS; stops at
    max_terms, when no atom correlates positively, or when the residual is below tol (relative)."""
    y = np.asarray(target, dtype=np.float64)
    A = np.asarray(atoms, dtype=np.float64)
    ny = float(np.linalg.norm(y))
    if ny == 0:
        return MetaDecomposition((), 0.0, 0.0)
    chosen: list[int] = []
    coef = np.zeros(0)
    r = y.copy()
    for _ in range(max_terms):
        corr = A @ r
        corr[chosen] = -np.inf
        j = int(np.argmax(corr))
        if not np.isfinite(corr[j]) or corr[j] <= tol * ny:
            break
        chosen.append(j)
        coef, _ = scipy.optimize.nnls(A[chosen].T, y)
        r = y - A[chosen].T @ coef
        if np.linalg.norm(r) <= tol * ny:
            break
    keep = [(j, float(c)) for j, c in zip(chosen, coef) if c > 0]
    keep.sort(key=lambda t: (-t[1], t[0]))
    mix = A[[j for j, _ in keep]].T @ np.array([c for _, c in keep]) if keep else np.zeros_like(y)
    nm = float(np.linalg.norm(mix))
    return MetaDecomposition(tuple(keep), float(np.linalg.norm(y - mix)) / ny, float(mix @ y) / (nm * ny) if nm else 0.0)


def meta_decomposition(fine_unit: np.ndarray, coarse_unit: np.ndarray, f: int, max_terms: int = 5) -> MetaDecomposition:
    """Fine feature f's unit decoder direction as a non-negative mix of unit coarse decoder directions."""
    return nonneg_decomposition(fine_unit[f], coarse_unit, max_terms)
