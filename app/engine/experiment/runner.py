"""run_experiment: every condition on every eval prompt, scored without steering, aggregated."""
from __future__ import annotations

import contextlib
import math
import time
from typing import Callable

import torch

from app.engine.batched import BatchRow, batched_generate, batched_supported
from app.engine.experiment.arms import (
    CONCEPT_MAX_TOKENS,
    ExperimentConfig,
    aliases,
    conditions_for,
    random_direction,
    steer_for,
)
from app.engine.experiment.probe import probe_layer_for, train_probe
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
from app.engine.generation import stop_token_ids
from app.engine.prompts import encode_prompt
from app.engine.sampling import SamplingParams
from app.engine.steering import SteerOptions


def run_experiment(model, saes: dict, hook_name: str, cfg: ExperimentConfig, atlas=None,
                   progress: Callable[[int, int], None] | None = None, cancel=None,
                   batch_context=contextlib.nullcontext) -> dict:
    """Run every condition on every eval prompt (and seed), score, aggregate; returns a JSON-ready dict.

    progress(done, total) in work units (one per concept/contrast prompt read, generation, generation scored);
    batch_context() wraps each chunk of model work (a job passes engine.background_session)."""
    t0 = time.perf_counter()
    tok = model.tokenizer
    n_layers = model.cfg.n_layers
    hook_layer = int(hook_name.split(".")[1])
    probe_layer = cfg.probe_layer if cfg.probe_layer is not None else probe_layer_for(n_layers, hook_layer)
    if probe_layer == hook_layer:
        raise ValueError("probe_layer must differ from the SAE's hook layer")
    probe_hook = f"blocks.{probe_layer}.hook_resid_post"
    conds = conditions_for(cfg)
    seeds = [cfg.seed + k for k in range(cfg.n_seeds if cfg.temperature > 0 else 1)]
    n_sets = len(cfg.concept_prompts) + len(cfg.contrast_prompts)
    n_gen = len(cfg.eval_prompts) * len(seeds) * len([c for c in conds if c.key not in aliases(conds)])
    total = n_sets + 2 * n_gen
    done = 0

    def tick(k: int):
        nonlocal done
        done += k
        if progress is not None:
            progress(done, total)

    def check():  # between the steps no chunk of model work marks: a cancelled job stops here too
        tick(0)
        if cancel is not None and cancel.is_set():
            raise RuntimeError("cancelled")

    # 1. concept / contrast sets: probe features and typical activations
    set_ids = [tuple(tok.encode(p, add_special_tokens=False)[:CONCEPT_MAX_TOKENS]) for p in cfg.concept_prompts + cfg.contrast_prompts]
    reads = read_back(model, [hook_name, probe_hook], set_ids, batch_size=cfg.batch_size, batch_context=batch_context, progress=tick)
    hook_resids, pooled, labels = [], [], []
    for k, (ids, r) in enumerate(zip(set_ids, reads)):
        keep = _kept(model, ids, r[hook_name], cfg.sink_norm) if len(ids) else torch.zeros(0, dtype=torch.bool)
        hook_resids.append(r[hook_name][keep])
        pooled.append(r[probe_hook][keep].mean(0) if bool(keep.any()) else torch.zeros(r[probe_hook].shape[-1]))
        labels.append(1.0 if k < len(cfg.concept_prompts) else 0.0)
    nc = len(cfg.concept_prompts)
    probe = train_probe(torch.stack(pooled), torch.tensor(labels), probe_layer)
    children = tuple(cfg.children) or tuple(default_children(saes, cfg.anchor, hook_resids[:nc], hook_resids[nc:], check=check))
    feats = [("coarse", cfg.anchor)] + [("fine", j) for j in children]
    check()
    typical, typical_src = typical_activations(saes, feats, hook_resids[:nc], atlas)
    sel_c = selectivity_of(saes, "coarse", [cfg.anchor], hook_resids[:nc], hook_resids[nc:], check)
    sel_f = selectivity_of(saes, "fine", list(children), hook_resids[:nc], hook_resids[nc:], check) if children else []
    t_sets = time.perf_counter() - t0

    # 2. generation: every (prompt, seed, condition) a row
    eval_ids = [encode_prompt(tok, p, chat=cfg.chat).token_ids for p in cfg.eval_prompts]
    rand_dir = random_direction(model.cfg.d_model, cfg.seed)
    steers = {c.key: steer_for(c, saes, cfg.anchor, children, typical, rand_dir) for c in conds}
    alias = aliases(conds)
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
    gens = []
    t1 = time.perf_counter()
    chunk = max(cfg.batch_size, 1)
    for s in range(0, len(rows), chunk):
        if cancel is not None and cancel.is_set():
            raise RuntimeError("cancelled")
        with batch_context(), torch.inference_mode():
            part = batched_generate(model, saes, hook_name, rows[s:s + chunk], cfg.max_new_tokens, stop, opts, batch_size=chunk,
                                    cancel=cancel)
        gens += part
        tick(len(part))
    t_gen = time.perf_counter() - t1
    n_tokens = sum(len(g.tokens) for g in gens)

    # 3. scoring without steering
    t2 = time.perf_counter()
    full = [tuple(r.prompt_ids) + g.ids for r, g in zip(rows, gens)]
    reads = read_back(model, [hook_name, probe_hook], full, batch_size=cfg.batch_size, logits=True,
                      batch_context=batch_context, progress=tick)
    sel_feats = {"coarse": [cfg.anchor], "fine": list(children)}
    records: list[dict] = []
    for (pi, si, c), r, g, row, ids in zip(meta, reads, gens, rows, full):
        check()
        P, n = len(row.prompt_ids), len(g.tokens)
        gen_ids = torch.as_tensor(g.ids, dtype=torch.int64)
        if n:
            lp = r["logprobs"][P - 1: P - 1 + n].gather(1, gen_ids[:, None])[:, 0]
            logprob = float(lp.mean())
        else:
            logprob = float("nan")
        keep = _kept(model, ids, r[hook_name], cfg.sink_norm)
        keep[:P] = False
        if bool(keep.any()):
            concept = float(probe.prob(r[probe_hook][keep].mean(0)))
            fires = torch.zeros(int(keep.sum()), dtype=torch.bool)
            for name, fl in sel_feats.items():
                if fl:
                    fires |= (feature_acts(saes[name], r[hook_name][keep], fl) > 0).any(1)
            sae_score = float(fires.float().mean())
        else:
            concept, sae_score = float("nan"), float("nan")
        records.append({
            "prompt": pi, "seed": si, "condition": c.key, "arm": c.arm, "mode": c.mode, "scale": c.scale,
            "strength": c.strength, "text": g.text, "n_tokens": n, "finish": g.finish_reason,
            "concept": concept, "sae": sae_score, "words": word_hit(g.text, cfg.words) if cfg.words else None,
            "logprob": logprob, "distinct2": distinct_2(list(g.ids)), "token_ids": list(g.ids),
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
    return json_safe({
        "anchor": cfg.anchor, "children": list(children), "hook_name": hook_name,
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
        "seconds_score": round(t_score, 3), "tokens_per_s": round(n_tokens / t_gen, 1) if t_gen > 0 else None,
    })
