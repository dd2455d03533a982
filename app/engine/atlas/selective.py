"""The one rule that names a feature by its tokens: the tokens it fires on more than the corpus does."""
from __future__ import annotations

from typing import Callable, Iterable

import numpy as np


def token_key(raw: str) -> str:
    """How a token is written in a label: stripped, or a visible symbol for whitespace-only tokens."""
    return raw.strip() or (raw.replace(" ", "␣").replace("\n", "↵").replace("\t", "⇥") or "∅")


def selective_parts(counts: Iterable[tuple[int, int]], n_firing: int, base: np.ndarray, tok: Callable[[int], str],
                    max_parts: int = 3, min_count: int = 3, min_lift: float = 4.0) -> list[str]:
    """Label parts from (token id, firings on it) pairs: tokens with >= min_count firings and lift >= min_lift, where
    lift = (share of the feature's firings on the token) / (share of the corpus's positions holding it); equal keys
    (" the" / "the") merged; ranked by count x log(lift)."""
    scored: dict[str, list[float]] = {}  # key -> [count, lift]
    for t, c in counts:
        if c <= 0 or t < 0 or t >= len(base) or base[t] <= 0:
            continue
        lift = (c / n_firing) / base[t]
        key = token_key(tok(int(t)))
        if key in scored:
            scored[key][0] += c
            scored[key][1] = max(scored[key][1], lift)
        else:
            scored[key] = [float(c), lift]
    return [k for k, (c, lift) in sorted(scored.items(), key=lambda kv: -kv[1][0] * np.log(max(kv[1][1], 1.0)))
            if c >= min_count and lift >= min_lift][:max_parts]
