"""The steering experiment: does multi-resolution steering (coarse anchor + fine children) beat single-resolution?"""
from __future__ import annotations

import argparse
import contextlib
import sys
import time
from typing import Sequence

import torch

from app.engine.experiment.arms import ExperimentConfig
from app.engine.experiment.runner import run_experiment


def format_report(result: dict) -> str:
    """The verdicts, the control, the table and the timing as plain text (the CLI's output)."""
    lines = [f"anchor coarse:{result['anchor']}  children fine:{','.join(map(str, result['children']))}  "
             f"hook {result['hook_name']}  probe {result['probe']['hook']} (holdout accuracy "
             f"{result['probe']['holdout_accuracy']}, {result['probe']['n_train']} prompts)"]
    ms = result.get("measure") or {}
    lines.append(f"concept set {result.get('concept_name')} vs contrast set {result.get('contrast_name')}; concept measure "
                 f"{ms.get('name')}: {ms.get('description')}; held-out AUC {ms.get('auc')} "
                 f"({ms.get('n_validation')}, {ms.get('validation_source')})")
    if ms.get("pushes"):
        pc = ms["pushes"]
        lines.append(f"pushing along other random directions ({pc['n_prompts']} contrast prompts not in the prefaces), "
                     "pushed - unsteered: " + "; ".join(
                         f"norm {p['vector_norm']:.3g}: {p['rise']:+.3f} [{p['ci'][0]:.3f}, {p['ci'][1]:.3f}] "
                         + ("contains 0" if p["contains"] else "above 0" if p["raises"] else "below 0")
                         for p in pc["per_norm"]))
    lines.append("typical activations: " + ", ".join(f"{t['sae']}:{t['index']}={t['value']:.3g} ({t['source']})"
                                                     for t in result["typical"]))
    lines.append(f"{result['n_prompts']} prompts x {result['n_seeds']} seed(s) x {len(result['conditions'])} conditions = "
                 f"{result['n_generations']} generations, {result['n_tokens']} tokens ({result['decoder']})")
    lines.append("")
    hdr = (f"{'condition':26s} {'concept [95% CI] half-width':33s} {'probe':>6s} {'sae':>6s} "
           f"{'logprob [95% CI] half-width':33s} {'fluency':>8s} {'dist-2':>6s} {'|v|':>6s}")
    lines.append(hdr)
    for r in result["table"]:
        ci = r["concept_ci"]
        conc = "-" if r["concept"] is None else f"{r['concept']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}] {r.get('concept_hw') or 0:.3f}"
        lci = r["logprob_ci"]
        pr = "-" if r.get("probe") is None else f"{r['probe']:.3f}"
        sae = "-" if r["sae"] is None else f"{r['sae']:.3f}"
        lp = "-" if r["logprob"] is None else f"{r['logprob']:.3f} [{lci[0]:.3f}, {lci[1]:.3f}] {r.get('logprob_hw') or 0:.3f}"
        vn = "clamp" if r["vector_norm"] is None else f"{r['vector_norm']:.1f}"
        fl = "-" if r["fluency_ratio"] is None else f"{r['fluency_ratio']:.3f}"
        d2 = "-" if r["distinct2"] is None else f"{r['distinct2']:.3f}"
        lines.append(f"{r['condition']:26s} {conc:33s} {pr:>6s} {sae:>6s} {lp:33s} {fl:>8s} {d2:>6s} {vn:>6s}")
    lines.append("")
    for v in result["verdicts"]:
        lines.append("VERDICT " + v["text"])
    if result["control"].get("text"):
        lines.append(result["control"]["text"])
    lines.append(f"wall time {result['seconds']:.1f} s (sets {result['seconds_sets']:.1f}, generate {result['seconds_generate']:.1f} "
                 f"at {result['tokens_per_s']} tok/s, score {result['seconds_score']:.1f})")
    return "\n".join(lines)


def _feature_arg(text: str, sae: str) -> list[int]:
    name, _, idx = text.partition(":") if ":" in text else (sae, "", text)
    if name != sae:
        raise argparse.ArgumentTypeError(f"expected {sae}:N[,M...], got {text!r}")
    return [int(x) for x in idx.split(",") if x.strip()]


def main(argv: Sequence[str] | None = None) -> dict:
    """python -m app.engine.experiment --profile smollm2-135m --anchor coarse:N [--children fine:a,b,c]"""
    from app.engine.discovery import parse_prompt_lines
    from app.engine.engine import Engine
    from app.engine.profiles import DATA_DIR

    ap = argparse.ArgumentParser(prog="python -m app.engine.experiment", description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="smollm2-135m")
    ap.add_argument("--anchor", required=True, help="coarse:N")
    ap.add_argument("--children", default="", help="fine:a,b,c (default: the anchor's blue matches, selective on the concept set)")
    ap.add_argument("--concept-set", default="france")
    ap.add_argument("--contrast-set", default="neutral")
    ap.add_argument("--eval-set", default="eval_neutral")
    ap.add_argument("--prompts", type=int, default=16, help="evaluation prompts (the first N of --eval-set)")
    ap.add_argument("--strengths", default="2,4,8", help="multiples of each feature's typical activation")
    ap.add_argument("--modes", default="add", help="add and/or clamp, comma-separated")
    ap.add_argument("--no-matched-norm", action="store_true")
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--words", default="", help="optional word list, comma-separated (e.g. France,French,Paris)")
    ap.add_argument("--probe-layer", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=None, help="write the full result JSON here")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):  # transformer-lens prints while loading; stdout is the report
        eng = Engine.build(a.profile, device="cpu")
    sets = {n: parse_prompt_lines((DATA_DIR / "prompts" / f"{n}.txt").read_text(encoding="utf-8"))
            for n in (a.concept_set, a.contrast_set, a.eval_set)}
    cfg = ExperimentConfig(
        anchor=_feature_arg(a.anchor, "coarse")[0], children=tuple(_feature_arg(a.children, "fine")) if a.children else (),
        eval_prompts=tuple(sets[a.eval_set][: a.prompts]), concept_prompts=tuple(sets[a.concept_set]),
        contrast_prompts=tuple(sets[a.contrast_set]), strengths=tuple(float(x) for x in a.strengths.split(",")),
        modes=tuple(m.strip() for m in a.modes.split(",") if m.strip()), matched_norm=not a.no_matched_norm,
        max_new_tokens=a.tokens, temperature=a.temperature, n_seeds=a.seeds, seed=a.seed,
        words=tuple(w.strip() for w in a.words.split(",") if w.strip()), probe_layer=a.probe_layer,
        batch_size=a.batch_size, sink_norm=eng.profile.sink_norm)
    t_load = time.perf_counter() - t0
    last = [0.0]

    def progress(done, total, eta_s=None, phase=None):
        now = time.perf_counter()
        if now - last[0] > 10 or done == total:
            last[0] = now
            print(f"  {phase} {done}/{total} ({now - t0:.0f} s, ETA {'…' if eta_s is None else f'{eta_s:.0f} s'})", file=sys.stderr, flush=True)

    with eng.session(timeout=600):
        result = run_experiment(eng.model, eng.saes, eng.hook_name, cfg, atlas=getattr(eng, "atlas", None), progress=progress)
    print(format_report(result))
    print(f"model load {t_load:.1f} s; total {time.perf_counter() - t0:.1f} s")
    if a.out:
        import json

        with open(a.out, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)
    return result
