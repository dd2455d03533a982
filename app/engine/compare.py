"""Two prompts side by side: both SAEs' features that differ most, both next-token distributions, the logit
difference of two chosen tokens in each.

Token-aligned when the prompts have the same length (the chosen position, default the last, in both); otherwise
each prompt's last position. "Summed" compares Σ_pos a_f over each prompt's decomposed positions (position 0 and
sink positions are left out, as everywhere in the app).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from app.engine.analysis.core import _final_logits
from app.engine.patching import cached_run


@dataclass(frozen=True)
class FeatureDiff:
    sae: str
    index: int
    a: float  # activation (or summed activation) in prompt A
    b: float
    diff: float  # a - b


@dataclass(frozen=True)
class Comparison:
    aligned: bool
    position_a: int
    position_b: int
    at_position: tuple[FeatureDiff, ...]  # largest |diff| first, both SAEs
    summed: tuple[FeatureDiff, ...]
    next_a: tuple[tuple[int, float], ...]  # (id, prob) at each prompt's last position
    next_b: tuple[tuple[int, float], ...]
    logit_diff_a: float | None  # logit[answer] - logit[wrong] at the last position
    logit_diff_b: float | None


def _keep(x: torch.Tensor, sink_norm: float | None) -> torch.Tensor:
    keep = torch.arange(x.shape[0], device=x.device) > 0
    if sink_norm is not None:
        keep &= x.float().norm(dim=-1) <= sink_norm
    return keep


def _top(a: torch.Tensor, b: torch.Tensor, sae: str, top: int) -> list[FeatureDiff]:
    d = a - b
    k = min(top, d.numel())
    idx = d.abs().topk(k).indices.tolist()
    return [FeatureDiff(sae, int(i), float(a[i]), float(b[i]), float(d[i])) for i in idx if d[i] != 0]


def compare_prompts(model, saes: dict, hook_name: str, ids_a, ids_b, position: int | None = None,
                    tokens: tuple[int, int] | None = None, top: int = 10, top_next: int = 10,
                    sink_norm: float | None = None) -> Comparison:
    """Run both prompts once each; see the module docstring."""
    aligned = len(ids_a) == len(ids_b)
    if aligned:
        pa = pb = len(ids_a) - 1 if position is None else int(position)
    else:
        pa, pb = len(ids_a) - 1, len(ids_b) - 1
    runs = []
    for ids in (ids_a, ids_b):
        acts, resid = cached_run(model, ids, [hook_name])
        logits = _final_logits(model, resid[:, -1:])[0, -1].float()
        runs.append((acts[hook_name], logits))
    at, summed = [], []
    for name, sae in saes.items():
        (xa, _), (xb, _) = runs
        fa, fb = sae.encode(xa.float()), sae.encode(xb.float())
        at += _top(fa[pa], fb[pb], name, top)
        sa = (fa * _keep(xa, sink_norm)[:, None]).sum(0)
        sb = (fb * _keep(xb, sink_norm)[:, None]).sum(0)
        summed += _top(sa, sb, name, top)
    at.sort(key=lambda f: -abs(f.diff))
    summed.sort(key=lambda f: -abs(f.diff))
    nexts, lds = [], []
    for _, logits in runs:
        probs = logits.softmax(-1)
        pv, pi = probs.topk(min(top_next, probs.numel()))
        nexts.append(tuple((int(i), float(v)) for v, i in zip(pv.tolist(), pi.tolist())))
        lds.append(float(logits[tokens[0]] - logits[tokens[1]]) if tokens is not None else None)
    return Comparison(aligned, int(pa), int(pb), tuple(at[:top]), tuple(summed[:top]), nexts[0], nexts[1],
                      lds[0], lds[1])
