"""Texts pushed along random directions: the zero-shot measure's "pushed" contrast preface, and its validation.

Contrast-set prompts are generated from while adding a random direction (one per prompt and strength, none of them the
run's random arm) at every vector norm the run's random arm uses. Half of the prompts give the preface's texts; the
other half, generated unsteered as well, check that pushing alone does not raise the measure (paired per prompt).
"""
from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from app.engine.batched import BatchRow, RowSteer, batched_generate
from app.engine.cancellation import Cancelled
from app.engine.experiment.arms import ExperimentConfig, random_direction
from app.engine.experiment.stats import bootstrap_ci, bootstrap_indices
from app.engine.generation import stop_token_ids
from app.engine.prompts import encode_prompt
from app.engine.sampling import SamplingParams
from app.engine.steering import SteerOptions

SEED_OFFSET = 1_000_003  # direction seeds cfg.seed + SEED_OFFSET + ...: never the run's random arm (cfg.seed)


@dataclass(frozen=True)
class Pushes:
    """Generated token ids: preface[i][j] for preface prompt i at norms[j]; check_none[i] and check[i][j] likewise."""

    norms: tuple[float, ...]
    preface_prompts: tuple[str, ...]
    check_prompts: tuple[str, ...]
    preface: tuple[tuple[tuple[int, ...], ...], ...]
    preface_texts: tuple[str, ...]  # the preface prompts' pushed texts, prompt by prompt, norm by norm (non-empty)
    check_none: tuple[tuple[int, ...], ...]
    check: tuple[tuple[tuple[int, ...], ...], ...]

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "Pushes":
        ids = lambda rows: tuple(tuple(int(t) for t in r) for r in rows)  # noqa: E731
        return cls(tuple(d["norms"]), tuple(d["preface_prompts"]), tuple(d["check_prompts"]),
                   tuple(ids(r) for r in d["preface"]), tuple(d["preface_texts"]), ids(d["check_none"]),
                   tuple(ids(r) for r in d["check"]))


def split_prompts(prompts: Sequence[str], n: int) -> tuple[list[str], list[str]]:
    """Up to n preface prompts and n check prompts, alternating through 2n evenly spaced prompts of the set."""
    m = min(n, len(prompts) // 2)
    if m <= 0:
        return [], []
    step = len(prompts) / (2 * m)
    picked = [prompts[int(i * step)] for i in range(2 * m)]
    return picked[0::2], picked[1::2]


def n_rows(n_prompts: int, n_norms: int, n: int) -> int:
    """Generation rows push_texts runs for a contrast set of n_prompts (progress totals)."""
    m = min(n, n_prompts // 2)
    return 0 if m <= 0 or n_norms == 0 else m * n_norms + m * (n_norms + 1)


def push_texts(model, saes: dict, hook_name: str, cfg: ExperimentConfig, prompts: Sequence[str], norms: Sequence[float],
               batch_context=contextlib.nullcontext, cancel=None, progress: Callable[[int], None] | None = None) -> Pushes:
    """Generate the pushed texts (cfg's temperature, top-p, token budget, seed) from cfg.measure_pushed preface prompts
    and as many check prompts of `prompts`, at every vector norm in `norms` (each prompt and norm its own direction)."""
    tok = model.tokenizer
    pre, chk = split_prompts(prompts, cfg.measure_pushed)
    norms = tuple(float(v) for v in norms)
    rows, d = [], model.cfg.d_model
    for i, p in enumerate(pre + chk):
        ids = tuple(encode_prompt(tok, p, chat=cfg.chat).token_ids)
        params = SamplingParams(temperature=cfg.temperature, top_p=cfg.top_p, seed=cfg.seed + i)
        if i >= len(pre):
            rows.append(BatchRow(ids, RowSteer(), params))
        for j, v in enumerate(norms):
            direction = random_direction(d, cfg.seed + SEED_OFFSET + i * len(norms) + j)
            rows.append(BatchRow(ids, RowSteer(direction * v), params))
    out = []
    opts, stop, chunk = SteerOptions(sink_norm=cfg.sink_norm), stop_token_ids(tok), max(cfg.batch_size, 1)
    for s in range(0, len(rows), chunk):
        if cancel is not None and cancel.is_set():
            raise Cancelled("cancelled")
        with batch_context(), torch.inference_mode():
            out += batched_generate(model, saes, hook_name, rows[s:s + chunk], cfg.max_new_tokens, stop, opts,
                                    batch_size=chunk, cancel=cancel)
        if progress is not None:
            progress(len(rows[s:s + chunk]))
    k, n = 0, len(norms)
    preface, check_none, check = [], [], []
    for _ in pre:
        preface.append(tuple(tuple(g.ids) for g in out[k:k + n]))
        k += n
    texts = tuple(g.text.strip() for g in out[:k] if g.text.strip())
    for _ in chk:
        check_none.append(tuple(out[k].ids))
        check.append(tuple(tuple(g.ids) for g in out[k + 1:k + 1 + n]))
        k += n + 1
    return Pushes(norms, tuple(pre), tuple(chk), tuple(preface), texts, tuple(check_none), tuple(check))


def check_rise(none_scores: np.ndarray, pushed_scores: np.ndarray, norms: Sequence[float], n_boot: int, seed: int) -> dict:
    """Pushed minus unsteered measure on the check prompts (none_scores [m], pushed_scores [m, norms]), paired per
    prompt, per norm: mean, 95 % bootstrap interval over prompts, and whether it holds 0 or lies above it."""
    m = len(none_scores)
    idx = bootstrap_indices(m, n_boot, seed)
    per = []
    for j, v in enumerate(norms):
        d = np.asarray(pushed_scores, dtype=np.float64)[:, j] - np.asarray(none_scores, dtype=np.float64)
        lo, hi = bootstrap_ci(d, idx) if m else (float("nan"), float("nan"))
        mean = float(np.nanmean(d)) if np.isfinite(d).any() else float("nan")
        per.append({"vector_norm": round(float(v), 6), "rise": round(mean, 6), "ci": [round(lo, 6), round(hi, 6)],
                    "contains": bool(lo <= 0 <= hi), "raises": bool(lo > 0)})
    return {"n_prompts": m, "per_norm": per, "raises": any(p["raises"] for p in per),
            "contains_all": all(p["contains"] for p in per)}
