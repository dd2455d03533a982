"""The attention panel in Analyze against an analysis of the same prompt, on the embedded profile, in one process.

    .venv/bin/python bench/attention.py [--tokens 32] [--reps 7] [--threads 2] [--json out.json]

Goal (issue 27): the panel costs <= 0.3x an analysis of the same prompt. Every round takes a new prompt (windows
of data/prompts/*.txt) and a new ResidualCache; contenders interleave:
- `analysis (features + lens)`: baseline, what the Analyze page computes (analysis.analyze keeping every layer's
  residual, then the logit lens from them);
- `attention panel after the analysis`: what opening the panel costs then: each block's ln1 + attention alone on the
  residuals that round's analysis kept (heads.head_patterns(resid=...)), the response (patterns to 4 decimals,
  pydantic) and the canvas payload (app/viz/attention.attention_panel);
- `attention panel, cold (one forward)`: no analysis of the prompt before (its residuals not kept): one
  transformer-lens forward with pattern hooks, as the panel's first version did every time.
The load average is printed with the figures; with --threads 1 the clock is the process's CPU time.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.api.patching.schemas import AttentionResponse  # noqa: E402
from app.engine import analysis as an  # noqa: E402
from app.engine import heads as hd  # noqa: E402
from app.engine.loading import load_model  # noqa: E402
from app.engine.profiles import get_profile  # noqa: E402
from app.engine.tokens import token_texts  # noqa: E402
from app.viz.attention import attention_panel  # noqa: E402
from bench.analyze import fresh_prompts, load_saes  # noqa: E402
from bench.common import interleave, peak_rss_mb, summary  # noqa: E402


def panel(model, tok, ids, resid) -> dict:
    """What POST /fragments/attention computes for a prompt: patterns + DLA, the response, the canvas payload."""
    hp = hd.head_patterns(model, ids, None, resid=resid)
    pats = np.round(hp.patterns.astype(np.float64), 4)
    resp = AttentionResponse(profile="bench", tokens=token_texts(tok, ids), n_layers=pats.shape[0],
                             n_heads=pats.shape[1], patterns=pats.tolist(), dla=hp.dla.tolist(),
                             target=tok.decode([hp.target]), target_id=hp.target,
                             top_next=[(tok.decode([i]), p) for i, p in hp.top_next],
                             top_next_ids=[i for i, _ in hp.top_next])
    return attention_panel({}, resp.model_dump())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=32, help="prompt length (the panel takes up to 32)")
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    profile = get_profile("smollm2-135m")
    lm = load_model(profile, "cpu")
    model, tok = lm.model, lm.tokenizer
    saes, sae_kind = load_saes(profile, model.cfg.d_model)
    warm, *prompts = fresh_prompts(tok, args.tokens, args.reps + 1)
    state: dict = {"ids": warm}

    def analysis():
        cache = an.ResidualCache()
        key = cache.key("bench", state["ids"])
        an.analyze(model, saes, profile.hook_name, state["ids"], top_k=10, sink_norm=profile.sink_norm,
                   resid_cache=cache, cache_key=key)
        an.logit_lens(model, state["ids"], top=5, resid_cache=cache, cache_key=key)
        state["stack"] = cache.get(key)

    def after_analysis():
        return panel(model, tok, state["ids"], state["stack"])

    def cold():
        return panel(model, tok, state["ids"], None)

    fns = {"analysis (features + lens)": analysis, "attention panel after the analysis": after_analysis,
           "attention panel, cold (one forward)": cold}
    load_before = os.getloadavg()
    clock = time.process_time if args.threads == 1 else time.perf_counter  # 1 thread: CPU time, as on a quiet core
    with torch.inference_mode():
        for _ in range(2):
            for f in fns.values():
                f()

        def next_prompt(r: int) -> None:
            state["ids"] = prompts[r]

        times = interleave(fns, args.reps, clock=clock, before_round=next_prompt)
    res = summary(times, baseline="analysis (features + lens)")
    res.update({"clock": "process CPU time" if clock is time.process_time else "wall", "tokens": args.tokens,
                "threads": args.threads, "saes": sae_kind, "goal_ratio": 0.3,
                "load_average_before": load_before, "load_average_after": os.getloadavg(), "cpus": os.cpu_count(),
                "peak_rss_mb": peak_rss_mb()})
    for name, r in res["runs"].items():
        print(f"{name:38s} p50 {r['p50_ms']:8.1f} ms  (min {r['min_ms']:.1f}, max {r['max_ms']:.1f})  "
              f"x{r['ratio_p50']:.3f} of the analysis (paired x{r['ratio_paired_median']:.3f})")
    print(f"{args.tokens}-token prompts, a new one per round; goal: the panel <= 0.3x the analysis; SAEs: {sae_kind}; "
          f"clock: {res['clock']}; load average before {load_before}, after {res['load_average_after']} on {os.cpu_count()} CPUs, "
          f"{args.threads} threads")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
