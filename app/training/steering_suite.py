"""The steering experiment across concepts, as one resumable command (re-run it on a new SAE pair unchanged):

    python -m app.training.steering_suite [--profile smollm2-135m] [--concepts france,cooking,programming]
        [--prompts 100] [--seeds 2] [--tokens 24] [--strengths 2,4,8] [--out docs] [--checkpoint data/cache/steering-suite]

Per concept: Discover on its prompt sets (the app's GO/NO-GO rule, app/engine/decomposition.go_no_go_rows) picks the
first GO coarse feature and its blue matches (decoder cosine and activation correlation >= 0.3, as "Test steering"
does); the experiment then runs on held-out evaluation prompts (data/prompts/eval_open.txt) with the zero-shot concept
measure, validated on held-out concept vs neutral texts. Writes docs/steering-experiment-<concept>.{json,txt}; then
`python -m app.training.steering_report` writes docs/steering-experiment.md from them. Every finished chunk of
generations and scores is kept under --checkpoint, so a killed run continues where it stopped.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from app.engine import decomposition as dec
from app.engine import discovery as disc
from app.engine.experiment.arms import ExperimentConfig
from app.engine.experiment.cli import format_report
from app.engine.experiment.runner import run_experiment
from app.engine.profiles import DATA_DIR

# concept -> (discovery concept set, discovery contrast set, held-out concept texts, held-out neutral texts)
CONCEPTS = {
    "france": ("france", "neutral", "france_heldout", "neutral_heldout"),
    "cooking": ("cooking", "neutral_glosses", "cooking_heldout", "neutral_heldout"),
    "programming": ("programming", "neutral_glosses", "programming_heldout", "neutral_heldout"),
}


def read_set(name: str) -> list[str]:
    return disc.parse_prompt_lines((DATA_DIR / "prompts" / f"{name}.txt").read_text(encoding="utf-8"))


def discover_anchor(eng, concept: list[str], contrast: list[str], threshold: float = 0.3, limit: int = 8) -> dict:
    """Discover on the engine's pair: the first mapped coarse feature with GO and its blue matches (or why none)."""
    ids = disc.encode_prompt_set(eng.tokenizer, concept + contrast, prepend_bos=eng.profile.prepend_bos, max_tokens=256)
    st = disc.collect_stats(eng.model, eng.saes, eng.hook_name, ids, len(concept), sink_norm=eng.profile.sink_norm,
                            batch_size=16, batch_context=eng.session)
    res = disc.summarize(st, eng.saes, disc.DiscoveryParams(), concept + contrast)
    m = res["mapping"]
    scan = m["scan"]
    rows = dec.go_no_go_rows(m["coarse"], scan["matches"], scan["max_cosine"], scan["floor"], threshold)
    sel = {r["index"]: r["selectivity"] for r in res["tables"]["coarse"]}
    for r in rows:
        if r.go:
            i = m["coarse"].index(r.coarse)
            blue = [(c, f) for f, c, k in zip(m["fine"], m["cos"][i], m["corr"][i]) if c >= threshold and k >= threshold]
            children = [f for _, f in sorted(blue, key=lambda t: -t[0])][:limit] or [f for f, _ in r.above[:3]]
            return {"go": True, "anchor": r.coarse, "children": children, "n_above": r.n_above,
                    "selectivity": sel.get(r.coarse), "rows": [[x.coarse, x.n_above, x.go] for x in rows]}
    return {"go": False, "rows": [[x.coarse, x.n_above, x.go] for x in rows]}


def main(argv=None) -> int:
    from app.engine.engine import Engine

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="smollm2-135m")
    ap.add_argument("--concepts", default="france,cooking,programming")
    ap.add_argument("--eval-set", default="eval_open")
    ap.add_argument("--prompts", type=int, default=100)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--tokens", type=int, default=24)
    ap.add_argument("--strengths", default="2,4,8")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--label", default="", help="written into each result (e.g. 'smaller run: 30 prompts')")
    ap.add_argument("--out", type=Path, default=Path("docs"))
    ap.add_argument("--checkpoint", type=Path, default=DATA_DIR / "cache" / "steering-suite")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    eng = Engine.build(a.profile, device="cpu")
    evalp = read_set(a.eval_set)[: a.prompts]
    for name in [c.strip() for c in a.concepts.split(",") if c.strip()]:
        cset, nset, hc, hn = CONCEPTS[name]
        concept, contrast = read_set(cset), read_set(nset)
        tc = time.perf_counter()
        disc_file = a.checkpoint / f"discovery-{name}-{eng.fingerprint}-{disc.prompt_set_hash(concept, contrast)}.json"
        if disc_file.exists():  # resumable: a re-run on the same pair and sets skips discovery
            found = json.loads(disc_file.read_text(encoding="utf-8"))
        else:
            found = discover_anchor(eng, concept, contrast)
            a.checkpoint.mkdir(parents=True, exist_ok=True)
            disc_file.write_text(json.dumps(found), encoding="utf-8")
        print(f"{name}: discovery {time.perf_counter() - tc:.0f} s: " + (
            f"GO, anchor C-{found['anchor']}, children {found['children']}" if found["go"] else "NO-GO"), flush=True)
        if not found["go"]:
            (a.out / f"steering-experiment-{name}.txt").write_text(f"{name}: NO-GO on this pair; nothing to steer.\n")
            continue
        cfg = ExperimentConfig(
            anchor=found["anchor"], children=tuple(found["children"]), eval_prompts=tuple(evalp),
            concept_prompts=tuple(concept), contrast_prompts=tuple(contrast),
            strengths=tuple(float(x) for x in a.strengths.split(",")), modes=(), matched_norm=True,
            max_new_tokens=a.tokens, temperature=a.temperature, n_seeds=a.seeds, seed=0, batch_size=a.batch_size,
            sink_norm=eng.profile.sink_norm, measure="zeroshot", validation_concept=tuple(read_set(hc)[:100]),
            validation_contrast=tuple(read_set(hn)[:100]), concept_name=cset, contrast_name=nset)
        last = [0.0]

        def progress(done, total, eta_s=None, phase=None, name=name, tc=tc, last=last):
            now = time.perf_counter()
            if now - last[0] > 30 or done == total:
                last[0] = now
                eta = "…" if eta_s is None else f"{eta_s:.0f} s"
                print(f"  {name} {phase} {done}/{total} ({now - tc:.0f} s, ETA {eta})", flush=True)

        result = run_experiment(eng.model, eng.saes, eng.hook_name, cfg, atlas=getattr(eng, "atlas", None),
                                progress=progress, batch_context=eng.session, checkpoint=str(a.checkpoint))
        result.update({"concept": name, "discovery": found, "profile": eng.profile.name, "fingerprint": eng.fingerprint,
                       "eval_set": a.eval_set, "temperature": a.temperature, "max_new_tokens": a.tokens,
                       "label": a.label, "wall_s": round(time.perf_counter() - tc, 1)})
        a.out.mkdir(parents=True, exist_ok=True)
        (a.out / f"steering-experiment-{name}.json").write_text(json.dumps(result, indent=1), encoding="utf-8")
        head = (f"concept {name}: sets {cset} vs {nset}; Discover GO on {eng.profile.name}: anchor "
                f"C-{found['anchor']} (selectivity {found['selectivity']:.3f}, {found['n_above']} fine features at "
                f"cosine >= 0.3); measure {result['measure']['name']}, held-out AUC {result['measure']['auc']}"
                + (f"\n{a.label}" if a.label else ""))
        (a.out / f"steering-experiment-{name}.txt").write_text(head + "\n" + format_report(result) + "\n", encoding="utf-8")
        print(head, flush=True)
    print(f"total {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
