"""The zero-shot measure's setup and checks: held-out texts for its AUC, the pushed contrast preface (pushes.py) and
the check that pushing along other random directions does not raise it."""
from __future__ import annotations

import math

from app.engine.experiment import pushes as pushes_mod
from app.engine.experiment.arms import CONCEPT_MAX_TOKENS, ExperimentConfig
from app.engine.experiment.checkpoint import config_key
from app.engine.experiment.zeroshot import auc, zeroshot_scores


def validation_texts(cfg: ExperimentConfig, zs) -> tuple[list[str], list[str], str]:
    """Held-out concept and contrast texts for the measure's AUC, and where they come from."""
    if cfg.validation_concept and cfg.validation_contrast:
        return list(cfg.validation_concept), list(cfg.validation_contrast), "held-out sets given with the run"
    listed = set(zs.contrast_examples).union(*(ex for _, _, ex in zs.extra))
    vc = [p for p in cfg.concept_prompts if p not in zs.concept_examples][: cfg.n_validation]
    vn = [p for p in cfg.contrast_prompts if p not in listed][: cfg.n_validation]
    return vc, vn, "concept and contrast prompts not listed in the measure's prefaces"


def random_norms_guess(cfg: ExperimentConfig, conds) -> int:
    """How many distinct vector norms the random arm will use (its norms need the typical activations, known later):
    one per strength and scale it runs at (progress totals only)."""
    return len({(c.scale, c.strength) for c in conds if c.arm == "random"})


def measure_checks(model, saes: dict, hook_name: str, cfg: ExperimentConfig, zs, k: int, max_preface: int, conds,
                   steers: dict, n_push: int, val_texts: list[str], n_val_concept: int, gen_cache, clock,
                   batch_context, cancel):
    """-> (the measure with its pushed preface, held-out AUC, the push check or None). Pushes are generated at the
    random arm's vector norms (steers: condition key -> (RowSteer, norm)) and checkpointed with the generations;
    val_texts are the held-out concept texts (the first n_val_concept) then the contrast texts."""
    tok = model.tokenizer
    clock.start("pushes")
    norms = sorted({round(v, 6) for c in conds if c.arm == "random" for v in [steers[c.key][1]] if math.isfinite(v) and v > 0})
    pushes = None
    if n_push and norms:  # checkpointed with the generations: a re-run that changes only the measure reuses them
        push_name = f"pushes-{cfg.measure_pushed}-{config_key(norms)}"
        got_push = gen_cache.get(push_name) if gen_cache else None
        if got_push is not None:
            pushes = pushes_mod.Pushes.from_json(got_push)
            clock.tick(n_push)
        else:
            pushes = pushes_mod.push_texts(model, saes, hook_name, cfg, list(cfg.contrast_prompts), norms, batch_context,
                                           cancel, clock.tick)
            if gen_cache:
                gen_cache.put(push_name, pushes.to_json())
    if pushes is not None and pushes.preface_texts:
        zs = zs.with_contrast("pushed", tok, pushes.preface_texts, k, max_preface)
    clock.start("validate")
    enc_text = lambda t: tuple(tok.encode(" " + t.strip(), add_special_tokens=False)[:CONCEPT_MAX_TOKENS])  # noqa: E731
    check_texts = [] if pushes is None else list(pushes.check_none) + [t for row in pushes.check for t in row]
    vs = zeroshot_scores(model, zs, [enc_text(t) for t in val_texts] + check_texts, batch_size=cfg.batch_size,
                         batch_context=batch_context, progress=clock.tick)
    nv = len(val_texts)
    measure_auc = auc(vs[:n_val_concept], vs[n_val_concept:nv])
    push_check = None
    if pushes is not None and pushes.check:
        m = len(pushes.check_none)
        push_check = pushes_mod.check_rise(vs[nv:nv + m], vs[nv + m:].reshape(m, len(pushes.norms)), pushes.norms,
                                           cfg.n_boot, cfg.seed + 2)
        push_check.update({"preface_prompts": list(pushes.preface_prompts), "check_prompts": list(pushes.check_prompts)})
    return zs, measure_auc, push_check
