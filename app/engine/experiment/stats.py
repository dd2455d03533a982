"""The experiment's statistics: bootstrap intervals, text scores, fluency at a target, JSON safety."""
from __future__ import annotations

import math
import re
from typing import Sequence

import numpy as np


def bootstrap_indices(n: int, n_boot: int, seed: int) -> np.ndarray:
    """[n_boot, n] resampled prompt indices (with replacement), seeded."""
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def bootstrap_ci(values: np.ndarray, idx: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of values [n] (NaN ignored) over the resamples idx [B, n]."""
    means = np.nanmean(np.asarray(values, dtype=np.float64)[idx], axis=1)
    a = (1 - level) / 2
    return float(np.nanquantile(means, a)), float(np.nanquantile(means, 1 - a))


def distinct_2(ids: Sequence[int]) -> float:
    """Distinct bigrams / bigrams (1.0 when fewer than 2 tokens: nothing repeats)."""
    grams = list(zip(ids[:-1], ids[1:]))
    return len(set(grams)) / len(grams) if grams else 1.0


def word_hit(text: str, words: Sequence[str]) -> float:
    """1.0 when any word occurs in text as a whole word (case-insensitive)."""
    for w in words:
        w = w.strip()
        if w and re.search(r"(?<!\w)" + re.escape(w) + r"(?!\w)", text, flags=re.IGNORECASE):
            return 1.0
    return 0.0


def fluency_at(concepts: Sequence[float], fluencies: Sequence[float], target: float) -> float:
    """Fluency where a curve (points in strength order, starting unsteered) first reaches `target` concept score,
    by linear interpolation; NaN when it never does."""
    c = list(concepts)
    f = list(fluencies)
    if c and c[0] >= target:
        return float(f[0])
    for i in range(len(c) - 1):
        if c[i] < target <= c[i + 1]:
            t = (target - c[i]) / (c[i + 1] - c[i])
            return float(f[i] + t * (f[i + 1] - f[i]))
    return float("nan")


def json_safe(obj):
    """Non-finite floats -> None, tuples -> lists, recursively (the result is stored and served as JSON)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj
