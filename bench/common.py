"""Shared bench helpers: interleaved timing (background load hits every contender alike), medians, peak RSS."""
from __future__ import annotations

import resource
import statistics
import time
from typing import Callable


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (Linux ru_maxrss is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def interleave(fns: dict[str, Callable[[], object]], reps: int,
               clock: Callable[[], float] = time.perf_counter,
               before_round: Callable[[int], object] | None = None) -> dict[str, list[float]]:
    """Run each function once per round, `reps` rounds; -> seconds per run for each name (by `clock`).

    before_round(r) (untimed) runs first in each round: e.g. it sets that round's fresh prompt."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(reps):
        if before_round is not None:
            before_round(r)
        for name, fn in fns.items():
            t0 = clock()
            fn()
            times[name].append(clock() - t0)
    return times


def summary(times: dict[str, list[float]], baseline: str) -> dict:
    """p50/min/max in ms per contender, and the ratio of medians to the baseline's, plus the per-round ratios' median."""
    base = statistics.median(times[baseline])
    runs = {}
    for name, ts in times.items():
        paired = [t / b for t, b in zip(ts, times[baseline])]
        runs[name] = {"p50_ms": 1000 * statistics.median(ts), "min_ms": 1000 * min(ts), "max_ms": 1000 * max(ts),
                      "ratio_p50": statistics.median(ts) / base, "ratio_paired_median": statistics.median(paired),
                      "runs_ms": [round(1000 * t, 1) for t in ts]}
    return {"baseline": baseline, "runs": runs}
