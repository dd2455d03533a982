"""Progress that tells the truth: an ETA from the measured rate of each phase (sets, generation, scoring).

A phase not yet started is estimated from the measured rate of the phase before it times a prior cost ratio;
the running phase's rate counts the time since its last checkpoint, so a stalled chunk raises the ETA instead of
leaving a stale "2 s" on screen.
"""
from __future__ import annotations

import time
from typing import Callable, Sequence

# seconds per unit relative to a unit of the "sets" phase (measured on SmolLM2-135M, 2 CPU threads: a set prompt
# read 0.046 s, a generation row of 32 tokens in batches of 32 0.28 s (pushed rows alike), a text read once for the
# probe or under one zero-shot preface 0.17 s)
PRIOR_COST = {"sets": 1.0, "pushes": 6.0, "validate": 3.5, "generate": 6.0, "score": 3.5}


class PhaseClock:
    """Units done per phase and their wall time; `report(done, total, eta_s=..., phase=...)` at every tick."""

    def __init__(self, phases: Sequence[tuple[str, int]], report: Callable | None = None,
                 prior: dict[str, float] | None = None, now: Callable[[], float] = time.perf_counter):
        self.names = [p for p, _ in phases]
        self.total = {p: int(n) for p, n in phases}
        self.done = {p: 0 for p in self.names}
        self.spent = {p: 0.0 for p in self.names}
        self.prior = {**PRIOR_COST, **(prior or {})}
        self.report, self.now = report, now
        self.current: str | None = None
        self.t_phase = self.t_tick = now()

    def start(self, phase: str) -> None:
        t = self.now()
        if self.current is not None:
            self.spent[self.current] = t - self.t_phase
        self.current, self.t_phase, self.t_tick = phase, t, t

    def tick(self, k: int = 1) -> None:
        self.done[self.current] += k  # type: ignore[index]
        self.t_tick = self.now()
        if self.report is not None:
            self.report(sum(self.done.values()), sum(self.total.values()), eta_s=self.eta_s(), phase=self.current)

    def rate(self, phase: str) -> float | None:
        """Measured seconds per unit of a phase (the running one counts time since its last tick), else None."""
        if phase == self.current:
            el = self.now() - self.t_phase
            return el / self.done[phase] if self.done[phase] else None
        return self.spent[phase] / self.done[phase] if self.done[phase] else None

    def eta_s(self) -> float | None:
        """Seconds left: remaining units of every phase times its measured rate (or the prior ratio to a measured
        phase); None before anything was measured."""
        known = {p: r for p in self.names if (r := self.rate(p)) is not None}
        if not known:
            return None
        ref, ref_rate = list(known.items())[-1]  # the latest measured phase: closest in cost to what comes next
        left = 0.0
        for p in self.names:
            r = known.get(p, ref_rate * self.prior.get(p, 1.0) / self.prior.get(ref, 1.0))
            left += max(self.total[p] - self.done[p], 0) * r
        if self.current is not None and self.done[self.current] < self.total[self.current]:
            # the unit in flight: at least what it has run so far beyond one unit's rate is not "left" yet
            left = max(left, known.get(self.current, 0.0))
        return left
