"""Attribution speed on the embedded profile, in one process: `attribution.attribute` (forward with grad recorded
after the hook, one backward from the target logit to the residual at the hook, both SAEs encoded, every
feature scored) against one plain forward pass over the same prompt (the baseline). Goal: <= 3x.

    .venv/bin/python bench/attribution.py [--tokens 64] [--reps 7] [--threads 2] [--json out.json]

Also timed (reported, no goal): the clamp-to-0 validation of the top 10 (10 more forwards through steering).
Runs are interleaved and medians reported (the CPU is shared: ratios, not absolutes, are the result). Without
trained SAEs, random TopK SAEs of the same widths and k are used (the cost depends only on the shapes).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.engine import attribution as attr  # noqa: E402
from app.engine.loading import load_model  # noqa: E402
from app.engine.profiles import get_profile  # noqa: E402
from bench.analyze import TEXT, load_saes  # noqa: E402
from bench.common import interleave, peak_rss_mb, summary  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    profile = get_profile("smollm2-135m")
    lm = load_model(profile, "cpu")
    model, tok = lm.model, lm.tokenizer
    saes, sae_kind = load_saes(profile, model.cfg.d_model)
    ids = tok.encode(TEXT, add_special_tokens=False)[: args.tokens]
    assert len(ids) == args.tokens, len(ids)
    toks = torch.tensor([ids])
    hook = profile.hook_name

    def forward():
        with torch.inference_mode():
            return model(toks, attention_mask=torch.ones_like(toks))[0, -1]

    def attribution():
        return attr.attribute(model, saes, hook, ids, top=20, sink_norm=profile.sink_norm)

    def attribution_validated():
        with torch.inference_mode():
            return attr.validate_by_ablation(model, saes, hook, attribution(), 10, profile.sink_norm)

    attribution_validated()  # warm-up
    times = interleave({"forward": forward, "attribution": attribution}, args.reps)
    times_v = interleave({"forward": forward, "attribution+validate10": attribution_validated}, max(1, args.reps // 3))
    res = summary(times, baseline="forward")
    res_v = summary(times_v, baseline="forward")
    res["runs"]["attribution+validate10"] = res_v["runs"]["attribution+validate10"]
    a = attribution_validated()
    res.update({"tokens": args.tokens, "threads": args.threads, "saes": sae_kind, "goal_ratio": 3.0,
                "correlation_top10": a.correlation, "peak_rss_mb": peak_rss_mb()})
    for name, r in res["runs"].items():
        print(f"{name:24s} p50 {r['p50_ms']:8.1f} ms  (min {r['min_ms']:.1f}, max {r['max_ms']:.1f})  x{r['ratio_p50']:.2f} of one forward")
    ok = res["runs"]["attribution"]["ratio_p50"] <= 3.0
    print(f"attribution / forward = {res['runs']['attribution']['ratio_p50']:.2f} (goal <= 3): {'OK' if ok else 'MISSED'}")
    print(f"SAEs: {sae_kind}; estimate-vs-ablation r over the top 10 on this text: {a.correlation:.3f}; peak RSS {res['peak_rss_mb']:.0f} MB")
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
