"""run_experiment: every condition on every eval prompt, scored without steering, aggregated."""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import asdict
from typing import Callable

import numpy as np
import torch

from app.engine.batched import BatchRow, batched_generate, batched_supported
from app.engine.cancellation import Cancelled
from app.engine.experiment import pushes as pushes_mod
from app.engine.experiment.arms import (
    CONCEPT_MAX_TOKENS,
    SCORING_ONLY,
    ExperimentConfig,
    aliases,
    conditions_for,
    random_direction,
    steer_for,
)
from app.engine.experiment.checkpoint import ChunkCache, config_key
from app.engine.experiment.measure import measure_checks, random_norms_guess, validation_texts
from app.engine.experiment.probe import probe_layer_for, train_probe
from app.engine.experiment.progress import PhaseClock
from app.engine.experiment.reads import (
    _kept,
    default_children,
    feature_acts,
    read_back,
    selectivity_of,
    typical_activations,
)
from app.engine.experiment.scoring import aggregate, control_check, families, verdict_from_records
from app.engine.experiment.stats import distinct_2, json_safe, word_hit
from app.engine.experiment.zeroshot import CAP_NATS, MEASURE_RULE, make_zeroshot, zeroshot_scores
from app.engine.generation import stop_token_ids
from app.engine.prompts import encode_prompt
from app.engine.sampling import SamplingParams
from app.engine.steering import SteerOptions


def run_experiment(model, saes: dict, hook_name: str, cfg: ExperimentConfig, atlas=None,
                   progress: Callable[..., None] | None = None, cancel=None,
                   batch_context=contextlib.nullcontext, checkpoint: str | None = None) -> dict:
    """Run every condition on every eval prompt (and seed), score, aggregate; returns a JSON-ready dict.

    progress(done, total, eta_s=..., phase=...) in work units (a set prompt read, a generation, a generation scored
    by each measure) with the ETA from each phase's measured rate; batch_context() wraps each chunk of model work (a
    job passes engine.background_session); checkpoint: a folder where finished chunks are kept (a re-run resumes)."""
    t0 = time.perf_counter()
    tok = model.tokenizer
    n_layers = model.cfg.n_layers
    hook_layer = int(hook_name.split(".")[1])
    probe_layer = cfg.probe_layer if cfg.probe_layer is not None else probe_layer_for(n_layers, hook_layer)
    if probe_layer == hook_layer:
        raise ValueError("probe_layer must differ from the SAE's hook layer")
    probe_hook = f"blocks.{probe_layer}.hook_resid_post"
    conds = conditions_for(cfg)
    alias = aliases(conds)
    seeds = [cfg.seed + k for k in range(cfg.n_seeds if cfg.temperature > 0 else 1)]
    preface_contrast = cfg.measure_contrast or cfg.contrast_prompts
    k = cfg.preface_k if cfg.validation_concept else min(cfg.preface_k, max(1, min(len(cfg.concept_prompts), len(preface_contrast)) // 2))
    max_preface = model.cfg.n_ctx - max(cfg.max_new_tokens, CONCEPT_MAX_TOKENS) - 1
    zs = make_zeroshot(tok, cfg.concept_prompts, preface_contrast, k=k,  # small sets: half left for the AUC
                       max_tokens=max_preface)
    if cfg.measure_contrast:  # the discovery contrast set as a preface of its own: its style is not the concept's
        zs = zs.with_contrast("contrast set", tok, cfg.contrast_prompts, k, max_preface)
    val_c, val_n, val_src = validation_texts(cfg, zs)
    n_sets = len(cfg.concept_prompts) + len(cfg.contrast_prompts)
    n_rows = len(cfg.eval_prompts) * len(seeds) * len([c for c in conds if c.key not in alias])
    push_norms = random_norms_guess(cfg, conds)
    n_push = pushes_mod.n_rows(len(cfg.contrast_prompts), push_norms, cfg.measure_pushed) if cfg.measure == "zeroshot" else 0
    n_contrasts = len(zs.contrasts) + (1 if n_push else 0)
    n_check = len(pushes_mod.split_prompts(cfg.contrast_prompts, cfg.measure_pushed)[1]) * (push_norms + 1) if n_push else 0
    clock = PhaseClock([("sets", n_sets), ("pushes", n_push), ("validate", (1 + n_contrasts) * (len(val_c) + len(val_n) + n_check)),
                        ("generate", n_rows), ("score", (2 + n_contrasts) * n_rows)], report=progress)
    # scores: everything decides them, the measure's rule included
    cache = ChunkCache(checkpoint, config_key({**asdict(cfg), "measure_rule": MEASURE_RULE})) if checkpoint else None
    gen_cache = ChunkCache(checkpoint, "gen-" + config_key({k: v for k, v in asdict(cfg).items() if k not in SCORING_ONLY})) \
        if checkpoint else None  # generations: what a measure changes leaves them as they are

    def check():  # between the steps no chunk of model work marks: a cancelled job stops here too
        if cancel is not None and cancel.is_set():
            raise Cancelled("cancelled")

    # 1. concept / contrast sets: probe, typical activations
    clock.start("sets")
    set_ids = [tuple(tok.encode(p, add_special_tokens=False)[:CONCEPT_MAX_TOKENS]) for p in cfg.concept_prompts + cfg.contrast_prompts]
    reads = read_back(model, [hook_name, probe_hook], set_ids, batch_size=cfg.batch_size, batch_context=batch_context, progress=clock.tick)
    hook_resids, pooled, labels = [], [], []
    for k, (ids, r) in enumerate(zip(set_ids, reads)):
        keep = _kept(model, ids, r[hook_name], cfg.sink_norm) if len(ids) else torch.zeros(0, dtype=torch.bool)
        hook_resids.append(r[hook_name][keep])
        pooled.append(r[probe_hook][keep].mean(0) if bool(keep.any()) else torch.zeros(r[probe_hook].shape[-1]))
        labels.append(1.0 if k < len(cfg.concept_prompts) else 0.0)
    del reads
    nc = len(cfg.concept_prompts)
    probe = train_probe(torch.stack(pooled), torch.tensor(labels), probe_layer)
    children = tuple(cfg.children) or tuple(default_children(saes, cfg.anchor, hook_resids[:nc], hook_resids[nc:], check=check))
    feats = [("coarse", cfg.anchor)] + [("fine", j) for j in children]
    check()
    typical, typical_src = typical_activations(saes, feats, hook_resids[:nc], atlas)
    sel_c = selectivity_of(saes, "coarse", [cfg.anchor], hook_resids[:nc], hook_resids[nc:], check)
    sel_f = selectivity_of(saes, "fine", list(children), hook_resids[:nc], hook_resids[nc:], check) if children else []
    rand_dir = random_direction(model.cfg.d_model, cfg.seed)
    steers = {c.key: steer_for(c, saes, cfg.anchor, children, typical, rand_dir) for c in conds}

    # 1b. the measure: texts pushed along other random directions at the random arm's norms (a contrast preface of
    # their own, and a check that pushing does not raise the measure); the held-out AUC
    zs, measure_auc, push_check = measure_checks(model, saes, hook_name, cfg, zs, k, max_preface, conds, steers, n_push,
                                                 val_c + val_n, len(val_c), gen_cache, clock, batch_context, cancel)
    t_sets = time.perf_counter() - t0

    # 2. generation: every (prompt, seed, condition) a row
    eval_ids = [encode_prompt(tok, p, chat=cfg.chat).token_ids for p in cfg.eval_prompts]
    rows, meta = [], []
    for pi, ids in enumerate(eval_ids):
        for si, seed in enumerate(seeds):
            params = SamplingParams(temperature=cfg.temperature, top_p=cfg.top_p, seed=seed)
            for c in conds:
                if c.key not in alias:
                    rows.append(BatchRow(tuple(ids), steers[c.key][0], params))
                    meta.append((pi, si, c))
    opts = SteerOptions(sink_norm=cfg.sink_norm)
    stop = stop_token_ids(tok)
    gens: list[dict] = []
    clock.start("generate")
    t1 = time.perf_counter()
    chunk = max(cfg.batch_size, 1)
    n_read = 0  # generations read back from the checkpoint (their time was spent by the run that made them)
    for s in range(0, len(rows), chunk):
        if cancel is not None and cancel.is_set():
            raise Cancelled("cancelled")
        part = gen_cache.get(f"gen-{s}") if gen_cache else None
        if part is not None:
            n_read += len(part)
        else:
            with batch_context(), torch.inference_mode():
                out = batched_generate(model, saes, hook_name, rows[s:s + chunk], cfg.max_new_tokens, stop, opts, batch_size=chunk,
                                       cancel=cancel)
            part = [{"ids": list(g.ids), "text": g.text, "finish": g.finish_reason} for g in out]
            if gen_cache:
                gen_cache.put(f"gen-{s}", part)
        gens += part
        clock.tick(len(part))
    t_gen = time.perf_counter() - t1
    n_tokens = sum(len(g["ids"]) for g in gens)

    # 3. scoring without steering: fluency, probe and SAE features (one read), the zero-shot measure (a read per preface)
    clock.start("score")
    t2 = time.perf_counter()
    sel_feats = {"coarse": [cfg.anchor], "fine": list(children)}
    records: list[dict] = []
    for s in range(0, len(rows), chunk):
        check()
        got = cache.get(f"score-{s}") if cache else None
        if got is None:
            got = _score_chunk(model, saes, hook_name, probe_hook, probe, zs, rows[s:s + chunk], gens[s:s + chunk],
                               sel_feats, cfg, batch_context, clock.tick, gen_cache, f"score-{s}-")
            if cache:
                cache.put(f"score-{s}", got)
        else:
            clock.tick((2 + len(zs.contrasts)) * len(got))
        for (pi, si, c), g, sc in zip(meta[s:s + chunk], gens[s:s + chunk], got):
            records.append({
                "prompt": pi, "seed": si, "condition": c.key, "arm": c.arm, "mode": c.mode, "scale": c.scale,
                "strength": c.strength, "text": g["text"], "n_tokens": len(g["ids"]), "finish": g["finish"],
                "concept": sc["zeroshot"] if cfg.measure == "zeroshot" else sc["probe"], "zeroshot": sc["zeroshot"],
                "probe": sc["probe"], "sae": sc["sae"], "words": word_hit(g["text"], cfg.words) if cfg.words else None,
                "logprob": sc["logprob"], "distinct2": distinct_2(g["ids"]), "token_ids": g["ids"],
            })
    by_key = {c.key: c for c in conds}
    for dup, src in alias.items():  # identical steering: share the generations
        c = by_key[dup]
        records += [{**r, "condition": dup, "arm": c.arm, "mode": c.mode, "scale": c.scale, "strength": c.strength}
                    for r in records if r["condition"] == src]
    t_score = time.perf_counter() - t2

    order = {c.key: i for i, c in enumerate(conds)}
    records.sort(key=lambda r: (order[r["condition"]], r["prompt"], r["seed"]))

    # 4. aggregate with a shared bootstrap over prompts
    agg = aggregate(records, conds, len(eval_ids), cfg, steers)
    verdicts = [verdict_from_records(records, agg, cfg, family, len(eval_ids)) for family in families(cfg)]
    control = control_check(agg, cfg)
    secs = time.perf_counter() - t0
    contrasts = [cfg.measure_contrast_name or "other topics" if cfg.measure_contrast else cfg.contrast_name] + [n for n, _, _ in zs.extra]
    measure = {
        "name": cfg.measure,
        "description": ("zero-shot: mean over the generated tokens of log p(token | concept preface) minus the highest "
                        f"log p(token | contrast preface) ({', '.join(contrasts)}), each token clipped to [0, {CAP_NATS:g}] "
                        f"nats (tokens a contrast explains better count 0); read without steering; prefaces list up to "
                        f"{len(zs.concept_examples)} texts of each set"
                        if cfg.measure == "zeroshot" else
                        f"probe: logistic regression at layer {probe_layer} on the concept vs contrast prompts (probability)"),
        "auc": None if not math.isfinite(measure_auc) else round(measure_auc, 4),
        "auc_probe": None,
        "n_validation": [len(val_c), len(val_n)], "validation_source": val_src,
        "concept_examples": list(zs.concept_examples), "contrast_examples": list(zs.contrast_examples),
        "contrasts": [{"name": n, "examples": list(ex)} for n, ex in zip(contrasts, [zs.contrast_examples, *(ex for _, _, ex in zs.extra)])],
        "pushes": push_check,
        "random_raises": control.get("random_raises"),
    }
    return json_safe({
        "anchor": cfg.anchor, "children": list(children), "hook_name": hook_name,
        "concept_name": cfg.concept_name, "contrast_name": cfg.contrast_name, "measure": measure,
        "measure_contrast_name": cfg.measure_contrast_name if cfg.measure_contrast else cfg.contrast_name,
        "probe": {"layer": probe_layer, "hook": probe_hook, "holdout_accuracy": probe.holdout_accuracy,
                  "n_train": probe.n_train, "c": probe.c},
        "typical": [{"sae": k[0], "index": k[1], "value": round(v, 6), "source": typical_src[k]} for k, v in typical.items()],
        "selectivity": {"coarse": {str(cfg.anchor): round(sel_c[0], 6)},
                        "fine": {str(j): round(s, 6) for j, s in zip(children, sel_f)}},
        "conditions": [c.key for c in conds], "n_prompts": len(eval_ids), "n_seeds": len(seeds),
        "n_generations": len(gens), "n_tokens": n_tokens,
        "decoder": "fast-batched" if batched_supported(model) else "sequential",
        "table": agg, "verdicts": verdicts, "verdict": verdicts[0]["text"] if verdicts else "", "control": control,
        "generations": [{k: (round(v, 6) if isinstance(v, float) and math.isfinite(v) else v) for k, v in rec.items()} for rec in records],
        "seconds": round(secs, 3), "seconds_sets": round(t_sets, 3), "seconds_generate": round(t_gen, 3),
        "seconds_score": round(t_score, 3),
        "tokens_per_s": round(n_tokens / t_gen, 1) if t_gen > 0 and n_read < len(gens) else None,
        "n_generations_from_checkpoint": n_read,
    })


def _score_chunk(model, saes, hook_name, probe_hook, probe, zs, rows, gens, sel_feats, cfg, batch_context, tick,
                 lp_cache=None, lp_name: str = "") -> list[dict]:
    """Scores of a chunk of generations, read without steering: log-prob, probe, SAE fire share, zero-shot (each
    preface's per-token log-probs kept in lp_cache, next to the generations they are of)."""
    full = [tuple(r.prompt_ids) + tuple(g["ids"]) for r, g in zip(rows, gens)]
    reads = read_back(model, [hook_name, probe_hook], full, batch_size=cfg.batch_size, logits=True,
                      batch_context=batch_context, progress=tick)
    zsc = zeroshot_scores(model, zs, [g["ids"] for g in gens], batch_size=cfg.batch_size,
                          batch_context=batch_context, progress=tick, cache=lp_cache, name=lp_name)
    out = []
    for r, g, row, ids, z in zip(reads, gens, rows, full, zsc):
        P, n = len(row.prompt_ids), len(g["ids"])
        logprob = float("nan")
        if n:
            gen_ids = torch.as_tensor(g["ids"], dtype=torch.int64)
            logprob = float(r["logprobs"][P - 1: P - 1 + n].gather(1, gen_ids[:, None])[:, 0].mean())
        keep = _kept(model, ids, r[hook_name], cfg.sink_norm)
        keep[:P] = False
        pr, sae_score = float("nan"), float("nan")
        if bool(keep.any()):
            pr = float(probe.prob(r[probe_hook][keep].mean(0)))
            fires = torch.zeros(int(keep.sum()), dtype=torch.bool)
            for name, fl in sel_feats.items():
                if fl:
                    fires |= (feature_acts(saes[name], r[hook_name][keep], fl) > 0).any(1)
            sae_score = float(fires.float().mean())
        out.append({"logprob": logprob, "probe": pr, "sae": sae_score,
                    "zeroshot": float(z) if np.isfinite(z) else float("nan")})
    return out
