"""Concept discovery end to end on a profile (default: the embedded SmolLM2): tokens/s and wall time for the
shipped France vs neutral prompts at 100, 200 and 400 prompts (half concept, half contrast), to show the cost
grows linearly; against a baseline in the same process: the same batched forward stopped at the hook layer,
without the SAEs.

    .venv/bin/python bench/discover.py [--profile smollm2-135m] [--threads N] [--batch-size 16] [--repeat 1]

Target (issue 5): >= 1,000 tokens/s end to end (forward stopped at the hook, both SAEs encoded, stats and
the chunked coarse -> fine mapping included).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.engine import discovery as disc  # noqa: E402
from app.engine.profiles import DATA_DIR  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--profile", default="smollm2-135m")
    ap.add_argument("--device", default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--sizes", default="100,200,400")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    from app.engine.engine import Engine

    eng = Engine.build(a.profile, a.device)
    fr = disc.parse_prompt_lines((DATA_DIR / "prompts" / "france.txt").read_text())
    ne = disc.parse_prompt_lines((DATA_DIR / "prompts" / "neutral.txt").read_text())
    print(f"profile {eng.profile.name} on {eng.device}, torch threads {torch.get_num_threads()}, "
          f"SAEs {', '.join(f'{n} {s.cfg.d_sae}' for n, s in eng.saes.items())}, batch {a.batch_size}")
    # warm-up
    w = disc.encode_prompt_set(eng.tokenizer, fr[:8] + ne[:8])
    disc.collect_stats(eng.model, eng.saes, eng.hook_name, w, 8, eng.profile.sink_norm, a.batch_size, eng.session)

    print(f"{'prompts':>7} {'tokens':>7} {'forward-only s':>14} {'tok/s':>7} {'end-to-end s':>12} {'tok/s':>7} {'ratio':>6} {'s/100 prompts':>13}")
    rows = []
    for n in [int(x) for x in a.sizes.split(",")]:
        prompts = fr[: n // 2] + ne[: n - n // 2]
        ids = disc.encode_prompt_set(eng.tokenizer, prompts, prepend_bos=eng.profile.prepend_bos, max_tokens=256)
        ntok = sum(map(len, ids))
        best_f = best_e = float("inf")
        for _ in range(a.repeat):
            # baseline: the same batches to the hook, no SAE
            t0 = time.perf_counter()
            order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
            for s in range(0, len(ids), a.batch_size):
                with eng.session():
                    disc.resid_at_hook(eng.model, eng.hook_name, [ids[i] for i in order[s:s + a.batch_size]])
            best_f = min(best_f, time.perf_counter() - t0)
            t0 = time.perf_counter()
            st = disc.collect_stats(eng.model, eng.saes, eng.hook_name, ids, n // 2, eng.profile.sink_norm, a.batch_size, eng.session)
            disc.summarize(st, eng.saes, disc.DiscoveryParams(), prompts)
            best_e = min(best_e, time.perf_counter() - t0)
        rows.append((n, ntok, best_f, best_e))
        print(f"{n:>7} {ntok:>7} {best_f:>14.2f} {ntok / best_f:>7.0f} {best_e:>12.2f} {ntok / best_e:>7.0f} "
              f"{best_e / best_f:>6.2f} {100 * best_e / n:>13.2f}")
    if len(rows) > 1:
        (n0, t0n, _, e0), (n1, t1n, _, e1) = rows[0], rows[-1]
        print(f"scaling: {n1 / n0:.1f}x prompts ({t1n / t0n:.2f}x tokens) -> {e1 / e0:.2f}x end-to-end time")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
