"""Concept discovery from the command line (the seed's France experiment, for any profile and prompt sets).

    python -m app.training.concepts --profile smollm2-135m [--concept data/prompts/france.txt]
                                    [--contrast data/prompts/neutral.txt] [--top 15] [--n-coarse 8]

Prints, for each SAE, the top features by selectivity (selectivity, fire rate on both sets, mean activation),
then for the top coarse features the fine features with decoder cosine >= the threshold (all fine features
scanned in chunks), and the seed's GO criterion: some coarse feature with selectivity >= 0.9 and some coarse
feature with >= 3 fine features above the cosine threshold. Same engine functions as /discover.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

import torch

from app.engine import decomposition as dec
from app.engine import discovery as disc
from app.engine.profiles import DATA_DIR


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="smollm2-135m")
    ap.add_argument("--device", default=None)
    ap.add_argument("--concept", type=Path, default=DATA_DIR / "prompts" / "france.txt")
    ap.add_argument("--contrast", type=Path, default=DATA_DIR / "prompts" / "neutral.txt")
    ap.add_argument("--aggregate", choices=disc.AGGREGATES, default="max")
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--min-fire-rate", type=float, default=0.25)
    ap.add_argument("--n-coarse", type=int, default=8)
    ap.add_argument("--cos", type=float, default=0.3)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (1 is faster on a shared, busy CPU)")
    ap.add_argument("--json", type=Path, default=None,
                    help="also write the GO verdict and the steering anchor (JSON; python -m app.cli.artifacts reads it)")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)

    from app.engine.engine import Engine

    with contextlib.redirect_stdout(sys.stderr):  # transformer-lens prints while loading; stdout is the report
        eng = Engine.build(a.profile, a.device)
    concept = disc.parse_prompt_lines(a.concept.read_text(encoding="utf-8"))
    contrast = disc.parse_prompt_lines(a.contrast.read_text(encoding="utf-8"))
    print(f"profile {eng.profile.name} · hook {eng.hook_name} · SAEs "
          + ", ".join(f"{n} {s.cfg.d_sae}" for n, s in eng.saes.items())
          + f" · {len(concept)} concept ({a.concept.name}) vs {len(contrast)} contrast ({a.contrast.name}) prompts")
    ids = disc.encode_prompt_set(eng.tokenizer, concept + contrast, prepend_bos=eng.profile.prepend_bos, max_tokens=256)

    def progress(done, total):
        print(f"\r  {done}/{total} prompts", end="", file=sys.stderr, flush=True)

    st = disc.collect_stats(eng.model, eng.saes, eng.hook_name, ids, len(concept), sink_norm=eng.profile.sink_norm,
                            batch_size=a.batch_size, batch_context=eng.session, progress=progress)
    print(file=sys.stderr)
    print(f"{st.n_positions} tokens ({st.n_tokens_used} after the sink mask) in {st.seconds:.1f} s = "
          f"{st.n_positions / st.seconds:.0f} tokens/s")
    t0 = time.perf_counter()
    res = disc.summarize(st, eng.saes, disc.DiscoveryParams(aggregate=a.aggregate, top_k=a.top, min_fire_rate=a.min_fire_rate,
                                                            n_coarse=a.n_coarse, n_fine=30), concept + contrast)
    print(f"tables + mapping in {time.perf_counter() - t0:.2f} s\n")
    print("selectivity = mean_concept / (mean_concept + mean_contrast) over per-prompt "
          f"{a.aggregate} activations (sinks excluded); fire = share of prompts with max activation > 0\n")
    for name, rows in res["tables"].items():
        print(f"== {name} SAE ({res['widths'][name]} features): top {a.top} by selectivity "
              f"(fire rate on concept >= {a.min_fire_rate}), plus the loudest")
        print(f"{'feature':>8} {'select.':>7} {'fire C':>6} {'fire N':>6} {'mean C':>7} {'mean N':>7}  flag   fires most on")
        for r in rows:
            print(f"{r['index']:>8} {r['selectivity']:7.3f} {r['fire_concept']:6.2f} {r['fire_contrast']:6.2f} "
                  f"{r['mean_concept']:7.2f} {r['mean_contrast']:7.2f}  {'noisy' if r['noisy'] else '     '}  "
                  f"{(r['top_prompt'] or '')[:60]}")
        print()
    m = res["mapping"]
    scan = m["scan"]
    print(f"== coarse -> fine: fine features (of all {scan['n_fine']}) with decoder cosine >= {a.cos}")
    sel = {r["index"]: r for r in res["tables"]["coarse"]}
    best_sel, best_n = 0.0, 0
    anchors = []  # (selectivity x concept fire rate, coarse) of mapped, not noisy, features with >= 3 fine matches
    for i, c in enumerate(m["coarse"]):
        hits = [(f, v) for f, v in scan["matches"][i] if v >= a.cos]
        if len(hits) >= 3 and not sel[c]["noisy"]:
            anchors.append((sel[c]["selectivity"] * sel[c]["fire_concept"], c))
        corr = {f: m["corr"][i][m["fine"].index(f)] for f, _ in hits if f in m["fine"]}
        s = sel[c]["selectivity"]
        best_sel, best_n = max(best_sel, s), max(best_n, len(hits))
        print(f"C-{c:<6} selectivity {s:.3f}  max cosine {scan['max_cosine'][i]:.3f}  {len(hits)} above {a.cos}: "
              + ", ".join(f"F-{f} cos {v:.2f}" + (f" corr {corr[f]:.2f} [{dec.classify(corr[f], v, a.cos)}]" if f in corr else "")
                          for f, v in hits[:8]))
    top_sel = max((r["selectivity"] for r in res["tables"]["coarse"] if not r["noisy"]), default=0.0)
    go = top_sel >= 0.9 and best_n >= 3
    print(f"\nGO criterion: max coarse selectivity {top_sel:.3f} (need >= 0.9); most fine features above {a.cos} "
          f"for a mapped coarse feature: {best_n} (need >= 3) -> {'GO' if go else 'NO-GO'}")
    if a.json is not None:
        anchor = max(anchors)[1] if anchors else None
        a.json.write_text(json.dumps({"go": go, "anchor": anchor, "rule": "mapped, not noisy, >= 3 fine features above "
                                      f"cosine {a.cos}; largest selectivity x concept fire rate"}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
