"""Concept discovery end to end on a profile (default: the embedded SmolLM2): tokens/s and wall time for the
shipped France vs neutral prompts (default 400: 200 + 200), against a baseline in the same process: the forward
stopped at the hook layer alone, in today's batches (16 prompts of similar lengths, right-padded), no SAE.

    .venv/bin/python bench/discover.py [--profile smollm2-135m] [--threads N] [--sizes 400] [--repeat 2] [--json out.json]

Contenders, run in interleaved rounds (the CPU is shared: ratios are the result):
- `forward, padded` (baseline): the batched forward to the hook, batches of 16 sorted by length;
- `forward, packed`: the same prompts packed into 128-token rows (positions restart per prompt, attention
  block-diagonal), 2 rows per forward, no SAE;
- `end to end` (ours): `collect_stats` (packed forward, both SAEs encoded, streaming per-prompt statistics)
  + `summarize` (tables and the chunked coarse -> fine mapping);
- `end to end, padded`: the same with today's padded batches (what the packing moved).
Goals (issue 17): end to end >= 1,000 tokens/s and <= 1.1x the forward alone; the tables equal the padded
path's (same rows in the same order).
"""
from __future__ import annotations

import argparse
import json
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
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--sizes", default="400")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    from app.engine.engine import Engine

    eng = Engine.build(a.profile, a.device)
    fr = disc.parse_prompt_lines((DATA_DIR / "prompts" / "france.txt").read_text())
    ne = disc.parse_prompt_lines((DATA_DIR / "prompts" / "neutral.txt").read_text())
    print(f"profile {eng.profile.name} on {eng.device}, torch threads {torch.get_num_threads()}, "
          f"SAEs {', '.join(f'{n} {s.cfg.d_sae}' for n, s in eng.saes.items())}, batch {a.batch_size}, "
          f"packed rows {disc.PACK_ROW_TOKENS} x {disc.PACK_ROWS_PER_BATCH}")
    m, saes, hook, sink = eng.model, eng.saes, eng.hook_name, eng.profile.sink_norm
    w = disc.encode_prompt_set(eng.tokenizer, fr[:8] + ne[:8])
    disc.collect_stats(m, saes, hook, w, 8, sink, a.batch_size, eng.session)  # warm-up

    out = {"profile": eng.profile.name, "threads": torch.get_num_threads(), "sizes": {}}
    for n in [int(x) for x in a.sizes.split(",")]:
        prompts = fr[: n // 2] + ne[: n - n // 2]
        ids = disc.encode_prompt_set(eng.tokenizer, prompts, prepend_bos=eng.profile.prepend_bos, max_tokens=256)
        ntok = sum(map(len, ids))
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        rows = disc.pack_rows([len(i) for i in ids], disc.PACK_ROW_TOKENS)
        padded_tokens = sum(len(ids[order[min(s + a.batch_size, n) - 1]]) * len(order[s:s + a.batch_size])
                            for s in range(0, n, a.batch_size))

        def forward_padded():
            for s in range(0, n, a.batch_size):
                with eng.session():
                    disc.resid_at_hook(m, hook, [ids[i] for i in order[s:s + a.batch_size]])

        def forward_packed():
            for s in range(0, len(rows), disc.PACK_ROWS_PER_BATCH):
                with eng.session():
                    disc.packed_resid_at_hook(m, hook, [[ids[i] for i in row] for row in rows[s:s + disc.PACK_ROWS_PER_BATCH]])

        results = {}

        def end_to_end(pack):
            def run():
                st = disc.collect_stats(m, saes, hook, ids, n // 2, sink, a.batch_size, eng.session,
                                        pack_tokens=disc.PACK_ROW_TOKENS if pack else None)
                results[pack] = disc.summarize(st, saes, disc.DiscoveryParams(), prompts)
            return run

        fns = {"forward, padded": forward_padded, "forward, packed": forward_packed,
               "end to end": end_to_end(True), "end to end, padded": end_to_end(False)}
        times = {k: [] for k in fns}
        for _ in range(a.repeat):
            for k, fn in fns.items():
                t0 = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - t0)
        same = all([r["index"] for r in results[True]["tables"][s]] == [r["index"] for r in results[False]["tables"][s]]
                   for s in results[True]["tables"])
        same_map = (results[True]["mapping"] or {}).get("fine") == (results[False]["mapping"] or {}).get("fine")
        best = {k: min(v) for k, v in times.items()}
        base = best["forward, padded"]
        row = {"prompts": n, "tokens": ntok, "padded_tokens": padded_tokens, "packed_rows": len(rows),
               "tables_equal_padded": bool(same and same_map),
               "runs": {k: {"best_s": round(v, 3), "tokens_per_s": round(ntok / v, 1), "ratio_to_forward_padded": round(v / base, 3),
                            "all_s": [round(t, 3) for t in times[k]]} for k, v in best.items()}}
        out["sizes"][str(n)] = row
        print(f"{n} prompts, {ntok} tokens ({padded_tokens} with padding in batches of {a.batch_size}; {len(rows)} packed rows)")
        for k, r in row["runs"].items():
            print(f"  {k:20s} {r['best_s']:8.2f} s  {r['tokens_per_s']:7.0f} tok/s  x{r['ratio_to_forward_padded']:.3f} of the padded forward")
        print(f"  tables equal to the padded path's: {row['tables_equal_padded']}")
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
