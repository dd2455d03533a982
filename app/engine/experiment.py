"""The steering experiment: does multi-resolution steering (coarse anchor + fine children) beat single-resolution?

Arms (each a per-row steering of batched generation, app/engine/batched.py):
- none; coarse (the anchor alone); fine (the children together); coarse+fine; random (a seeded random
  direction with the norm of the coarse+fine vector, additive only: the control).
- scale "activation": every feature at `strength x` its typical activation (atlas mean-when-firing when present,
  else its mean activation over the concept set's tokens where it fires); modes "add" (c*W_dec[f]) and "clamp".
- scale "norm": each arm's additive direction rescaled to the norm of the coarse arm at that strength, so a
  combined arm cannot win by pushing harder (random included).

Scores of every generation, read back WITHOUT steering (one plain forward over prompt + generated tokens):
- concept: a logistic-regression probe (L2, C=1, standardised features; concept vs contrast discovery prompts,
  residual mean-pooled over tokens, sinks excluded) at a layer other than the SAE's hook, applied to the mean
  residual of the generated tokens -> probability of "concept" in [0, 1];
- sae: fraction of generated tokens on which any of the concept's selective SAE features fires (shown apart);
- words: 1 when any word of an optional list occurs in the generated text (case-insensitive, whole words);
- logprob: mean log-probability per generated token under the unsteered model (nats); fluency ratio of a
  condition = exp(logprob - logprob of no steering) (1 = as fluent as unsteered; 0.5 = twice the perplexity);
- distinct2: distinct token bigrams / bigrams of the generation.
Intervals: percentile bootstrap over prompts (seeds averaged within a prompt), one resampling shared by every
condition so paired differences are consistent.
"""
from __future__ import annotations

import argparse
import contextlib
import math
import re
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from app.engine.analysis import sink_mask
from app.engine.batched import BatchRow, RowSteer, batched_generate, batched_supported
from app.engine.generation import stop_token_ids
from app.engine.prompts import encode_prompt
from app.engine.sampling import SamplingParams
from app.engine.steering import SteerFeature, SteerOptions

ARMS = ("none", "coarse", "fine", "coarse+fine", "random")
COMPARED = ("coarse", "fine", "coarse+fine")  # the arms the verdict ranks
CONCEPT_MAX_TOKENS = 64


@dataclass(frozen=True)
class ExperimentConfig:
    anchor: int  # coarse feature index
    children: tuple[int, ...]  # fine feature indices
    eval_prompts: tuple[str, ...]
    concept_prompts: tuple[str, ...]
    contrast_prompts: tuple[str, ...]
    strengths: tuple[float, ...] = (2.0, 4.0, 8.0)  # multiples of each feature's typical activation
    modes: tuple[str, ...] = ("add",)  # "add" and/or "clamp" for the activation-scale sweep
    matched_norm: bool = True  # also sweep every arm at the coarse arm's vector norm
    max_new_tokens: int = 32
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    n_seeds: int = 1  # sampled generations per prompt and condition (1 when greedy)
    seed: int = 0
    words: tuple[str, ...] = ()
    probe_layer: int | None = None  # default: probe_layer_for(n_layers, hook layer)
    chat: bool = False
    n_boot: int = 1000
    batch_size: int = 32
    sink_norm: float | None = None


@dataclass(frozen=True)
class Condition:
    arm: str
    mode: str  # "add" | "clamp" | "-" (none)
    scale: str  # "activation" | "norm" | "-"
    strength: float

    @property
    def key(self) -> str:
        return "none" if self.arm == "none" else f"{self.arm}|{self.mode}|{self.scale}|{self.strength:g}"


# ---------------------------------------------------------------- probe
@dataclass(frozen=True)
class Probe:
    """Logistic regression on standardised features: p = sigmoid(((x - mu) / sd) @ w + b)."""

    layer: int
    mu: torch.Tensor  # [d]
    sd: torch.Tensor  # [d]
    w: torch.Tensor  # [d]
    b: float
    c: float = 1.0
    holdout_accuracy: float | None = None
    n_train: int = 0

    def decision(self, x: torch.Tensor) -> torch.Tensor:
        z = (x.double() - self.mu) / self.sd
        return z @ self.w + self.b

    def prob(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.decision(x))


def fit_logistic(X: torch.Tensor, y: torch.Tensor, c: float = 1.0, iters: int = 50, tol: float = 1e-10) -> tuple[torch.Tensor, float]:
    """L2 logistic regression by Newton's method (float64): minimise C*sum(logloss) + ||w||^2/2, bias unpenalised
    (scikit-learn's LogisticRegression(C=c) objective). X [n, d], y [n] in {0, 1}; returns (w [d], b)."""
    X = X.double()
    y = y.double()
    n, d = X.shape
    Xa = torch.cat([X, torch.ones(n, 1, dtype=torch.float64)], 1)
    theta = torch.zeros(d + 1, dtype=torch.float64)
    reg = torch.ones(d + 1, dtype=torch.float64) / c
    reg[-1] = 0.0
    for _ in range(iters):
        p = torch.sigmoid(Xa @ theta)
        grad = Xa.T @ (p - y) + reg * theta
        H = (Xa * (p * (1 - p))[:, None]).T @ Xa + torch.diag(reg) + 1e-10 * torch.eye(d + 1, dtype=torch.float64)
        step = torch.linalg.solve(H, grad)
        theta = theta - step
        if float(step.abs().max()) < tol:
            break
    return theta[:d], float(theta[d])


def train_probe(X: torch.Tensor, y: torch.Tensor, layer: int, c: float = 1.0, holdout_every: int = 5) -> Probe:
    """Standardise, fit on every prompt; holdout accuracy from a fit without every `holdout_every`-th prompt."""
    X = X.double()
    y = y.double()

    def fit(Xs, ys):
        mu = Xs.mean(0)
        sd = Xs.std(0, unbiased=False).clamp_min(1e-6)
        w, b = fit_logistic((Xs - mu) / sd, ys, c)
        return mu, sd, w, b

    acc = None
    n = X.shape[0]
    test = torch.zeros(n, dtype=torch.bool)
    test[::holdout_every] = True
    if n >= 2 * holdout_every and len(set(y[~test].tolist())) == 2:
        mu, sd, w, b = fit(X[~test], y[~test])
        pred = (((X[test] - mu) / sd) @ w + b) > 0
        acc = float((pred.double() == y[test]).double().mean())
    mu, sd, w, b = fit(X, y)
    return Probe(layer, mu, sd, w, b, c, acc, n)


def probe_layer_for(n_layers: int, hook_layer: int) -> int:
    """A later layer than the SAE's hook (reads what the text is about, not the steered feature itself)."""
    if hook_layer + 1 < n_layers:
        return min(n_layers - 1, hook_layer + max(1, n_layers // 6))
    return max(0, hook_layer - 1)


# ---------------------------------------------------------------- statistics
def bootstrap_indices(n: int, n_boot: int, seed: int) -> np.ndarray:
    """[n_boot, n] resampled prompt indices (with replacement), seeded."""
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def bootstrap_ci(values: np.ndarray, idx: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of values [n] (NaN ignored) over the resamples idx [B, n]."""
    means = np.nanmean(np.asarray(values, dtype=np.float64)[idx], axis=1)
    a = (1 - level) / 2
    return float(np.nanquantile(means, a)), float(np.nanquantile(means, 1 - a))


def distinct_2(ids: Sequence[int]) -> float:
    """Distinct bigrams / bigrams (1.0 when fewer than 2 tokens: nothing repeats)."""
    grams = list(zip(ids[:-1], ids[1:]))
    return len(set(grams)) / len(grams) if grams else 1.0


def word_hit(text: str, words: Sequence[str]) -> float:
    """1.0 when any word occurs in text as a whole word (case-insensitive)."""
    for w in words:
        w = w.strip()
        if w and re.search(r"(?<!\w)" + re.escape(w) + r"(?!\w)", text, flags=re.IGNORECASE):
            return 1.0
    return 0.0


def fluency_at(concepts: Sequence[float], fluencies: Sequence[float], target: float) -> float:
    """Fluency where a curve (points in strength order, starting unsteered) first reaches `target` concept score,
    by linear interpolation; NaN when it never does."""
    c = list(concepts)
    f = list(fluencies)
    if c and c[0] >= target:
        return float(f[0])
    for i in range(len(c) - 1):
        if c[i] < target <= c[i + 1]:
            t = (target - c[i]) / (c[i + 1] - c[i])
            return float(f[i] + t * (f[i + 1] - f[i]))
    return float("nan")


# ---------------------------------------------------------------- residual reads
def read_back(model, hook_names: Sequence[str], id_lists: Sequence[Sequence[int]], batch_size: int = 16,
              logits: bool = False, batch_context=contextlib.nullcontext, progress: Callable[[int], None] | None = None):
    """Plain (unsteered) forward of right-padded sequences; per sequence {hook: resid [n_i, d]} (+ log-probs [n_i, V]
    of the next token when logits=True). No steering hook is attached here."""
    layers = [int(h.split(".")[1]) for h in hook_names]
    pad = getattr(model.tokenizer, "pad_token_id", None) or 0
    order = sorted(range(len(id_lists)), key=lambda i: len(id_lists[i]))
    res: list = [None] * len(id_lists)
    for s in range(0, len(order), batch_size):
        idx = order[s:s + batch_size]
        T = max(len(id_lists[i]) for i in idx)
        toks = torch.full((len(idx), T), pad, dtype=torch.int64)
        att = torch.zeros(len(idx), T, dtype=torch.int64)
        for b, i in enumerate(idx):
            toks[b, : len(id_lists[i])] = torch.as_tensor(list(id_lists[i]))
            att[b, : len(id_lists[i])] = 1
        with batch_context(), torch.inference_mode():
            kw = {} if logits else {"stop_at_layer": max(layers) + 1}
            lg, cache = model.run_with_cache(toks.to(model.cfg.device), names_filter=list(hook_names),
                                             attention_mask=att.to(model.cfg.device), **kw)
            for b, i in enumerate(idx):
                n = len(id_lists[i])
                item = {h: cache[h][b, :n].float().cpu() for h in hook_names}
                if logits:
                    item["logprobs"] = torch.log_softmax(lg[b, :n].float(), -1).cpu()
                res[i] = item
        if progress is not None:
            progress(len(idx))
    return res


def feature_acts(sae, resid: torch.Tensor, features: Sequence[int]) -> torch.Tensor:
    """[n, len(features)] activations of the given features (the SAE's own encoder)."""
    if resid.shape[0] == 0:
        return torch.zeros(0, len(features))
    return sae.encode(resid.to(sae.W_dec.dtype)).float()[:, list(features)].clamp_min(0)


# ---------------------------------------------------------------- the experiment
def conditions_for(cfg: ExperimentConfig) -> list[Condition]:
    conds = [Condition("none", "-", "-", 0.0)]
    for mode in cfg.modes:
        for s in cfg.strengths:
            for arm in ARMS[1:]:
                if arm == "random" and mode == "clamp":
                    continue  # a random direction has no SAE activation to clamp
                conds.append(Condition(arm, mode, "activation", float(s)))
    if cfg.matched_norm:
        for s in cfg.strengths:
            for arm in ARMS[1:]:
                conds.append(Condition(arm, "add", "norm", float(s)))
    return conds


def aliases(conds: Sequence[Condition]) -> dict[str, str]:
    """Conditions whose steering is identical to another's (the coarse arm at matched norm is the coarse arm at
    that strength: the norm is matched to it): key -> the key generated instead."""
    keys = {c.key for c in conds}
    out = {}
    for c in conds:
        if c.scale == "norm" and c.arm == "coarse":
            src = Condition("coarse", "add", "activation", c.strength).key
            if src in keys:
                out[c.key] = src
    return out


def random_direction(d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(int(seed) + 7919)
    v = torch.randn(d, generator=g, dtype=torch.float32)
    return v / v.norm()


def steer_for(cond: Condition, saes: dict, anchor: int, children: Sequence[int], typical: dict, rand_dir: torch.Tensor) -> tuple[RowSteer, float]:
    """(RowSteer, norm of its additive vector) for a condition; typical = {("coarse"|"fine", idx): activation}."""
    if cond.arm == "none":
        return RowSteer(), 0.0
    Wc, Wf = saes["coarse"].W_dec.float(), saes["fine"].W_dec.float()

    def vec(arm: str, s: float) -> torch.Tensor:
        v = torch.zeros(Wc.shape[1])
        if arm in ("coarse", "coarse+fine"):
            v = v + s * typical[("coarse", anchor)] * Wc[anchor]
        if arm in ("fine", "coarse+fine"):
            for j in children:
                v = v + s * typical[("fine", j)] * Wf[j]
        return v

    s = cond.strength
    if cond.scale == "norm":
        target = float(vec("coarse", s).norm())
        d = rand_dir if cond.arm == "random" else vec(cond.arm, 1.0)
        v = d / d.norm().clamp_min(1e-12) * target
        return RowSteer(v), target
    if cond.mode == "clamp":
        feats = []
        if cond.arm in ("coarse", "coarse+fine"):
            feats.append(SteerFeature("coarse", anchor, "clamp", s * typical[("coarse", anchor)]))
        if cond.arm in ("fine", "coarse+fine"):
            feats += [SteerFeature("fine", j, "clamp", s * typical[("fine", j)]) for j in children]
        return RowSteer(None, tuple(feats)), float("nan")
    if cond.arm == "random":
        v = rand_dir * float(vec("coarse+fine", s).norm())
    else:
        v = vec(cond.arm, s)
    return RowSteer(v), float(v.norm())


def typical_activations(saes: dict, feats: Sequence[tuple[str, int]], hook_resids: Sequence[torch.Tensor], atlas=None) -> tuple[dict, dict]:
    """Typical activation of each (sae, index): atlas mean-when-firing when present, else the mean activation over
    the concept set's tokens where the feature fires. Returns (values, sources)."""
    vals, src = {}, {}
    for name, idx in feats:
        v = None
        mwf = getattr(atlas, "mean_when_firing", None) if atlas is not None else None
        if mwf is not None:
            try:
                v = float(mwf[name][idx])
                src[(name, idx)] = "atlas mean when firing"
            except (KeyError, IndexError, TypeError):
                v = None
        if v is None or not v > 0:
            x = torch.cat([r for r in hook_resids if r.shape[0]]) if hook_resids else torch.zeros(0, 1)
            a = feature_acts(saes[name], x, [idx])[:, 0] if x.shape[0] else torch.zeros(0)
            fired = a[a > 0]
            if fired.numel():
                v, src[(name, idx)] = float(fired.mean()), "concept set mean when firing"
            else:
                v, src[(name, idx)] = None, "does not fire on the concept set"
        vals[(name, idx)] = v
    known = [v for v in vals.values() if v]
    fallback = float(np.median(known)) if known else 1.0
    for k, v in vals.items():
        if not v:
            vals[k] = fallback
            src[k] += f"; using the median of the others ({fallback:.3g})" if known else "; using 1.0"
    return vals, src


def selectivity_of(saes: dict, name: str, features: Sequence[int], concept_resids, contrast_resids) -> list[float]:
    """Discovery's selectivity (per-prompt max, mean over each set) of the given features."""
    def per_set(resids):
        m = torch.zeros(len(features))
        for r in resids:
            if r.shape[0]:
                m += feature_acts(saes[name], r, features).max(0).values
        return m / max(len(resids), 1)
    a, b = per_set(concept_resids), per_set(contrast_resids)
    tot = a + b
    return [float(x) if t > 0 else 0.0 for x, t in zip(torch.where(tot > 0, a / tot.clamp_min(1e-30), torch.zeros_like(a)), tot)]


def default_children(saes: dict, anchor: int, concept_resids, contrast_resids, n: int = 3, cos_threshold: float = 0.3,
                     min_selectivity: float = 0.5) -> list[int]:
    """The anchor's blue matches: fine features with decoder cosine >= cos_threshold, selective on the concept set
    (>= min_selectivity), best cosine first; if none qualifies, the n best cosines."""
    Wc = saes["coarse"].W_dec.float()[anchor]
    Wf = saes["fine"].W_dec.float()
    cos = (Wf @ Wc) / (Wf.norm(dim=-1) * Wc.norm()).clamp_min(1e-12)
    order = [int(i) for i in torch.argsort(cos, descending=True)[: max(4 * n, 16)]]
    cand = [i for i in order if float(cos[i]) >= cos_threshold]
    if cand:
        sel = selectivity_of(saes, "fine", cand, concept_resids, contrast_resids)
        keep = [i for i, s in zip(cand, sel) if s >= min_selectivity]
        if keep:
            return keep[:n]
    return order[:n]


def _kept(model, ids, resid_hook: torch.Tensor, sink_norm) -> torch.Tensor:
    return ~sink_mask(model, ids, resid_hook, sink_norm)


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
    children = tuple(cfg.children) or tuple(default_children(saes, cfg.anchor, hook_resids[:nc], hook_resids[nc:]))
    feats = [("coarse", cfg.anchor)] + [("fine", j) for j in children]
    typical, typical_src = typical_activations(saes, feats, hook_resids[:nc], atlas)
    sel_c = selectivity_of(saes, "coarse", [cfg.anchor], hook_resids[:nc], hook_resids[nc:])
    sel_f = selectivity_of(saes, "fine", list(children), hook_resids[:nc], hook_resids[nc:]) if children else []
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
            part = batched_generate(model, saes, hook_name, rows[s:s + chunk], cfg.max_new_tokens, stop, opts, batch_size=chunk)
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
    records = []
    for (pi, si, c), r, g, row, ids in zip(meta, reads, gens, rows, full):
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


def json_safe(obj):
    """Non-finite floats -> None, tuples -> lists, recursively (the result is stored and served as JSON)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def families(cfg: ExperimentConfig) -> list[tuple[str, str]]:
    """(mode, scale) families the verdict is given for; the first is the headline (matched norm when swept)."""
    out = [("add", "norm")] if cfg.matched_norm else []
    out += [(m, "activation") for m in cfg.modes]
    return out


def _per_prompt(records, key: str, metric: str, n_prompts: int) -> np.ndarray:
    """[n_prompts] metric of a condition, seeds averaged within a prompt (NaN when missing)."""
    sums = np.zeros(n_prompts)
    cnt = np.zeros(n_prompts)
    for r in records:
        if r["condition"] == key and r[metric] is not None and math.isfinite(r[metric]):
            sums[r["prompt"]] += r[metric]
            cnt[r["prompt"]] += 1
    with np.errstate(invalid="ignore"):
        return np.where(cnt > 0, sums / np.maximum(cnt, 1), np.nan)


def aggregate(records, conds, n_prompts: int, cfg: ExperimentConfig, steers: dict) -> list[dict]:
    """One row per condition: means and bootstrap 95 % intervals of every score, fluency ratio to no steering."""
    idx = bootstrap_indices(n_prompts, cfg.n_boot, cfg.seed)
    metrics = ["concept", "sae", "logprob", "distinct2"] + (["words"] if cfg.words else [])
    lp_none = _per_prompt(records, "none", "logprob", n_prompts)
    rows = []
    for c in conds:
        row = {"condition": c.key, "arm": c.arm, "mode": c.mode, "scale": c.scale, "strength": c.strength,
               "vector_norm": None if not math.isfinite(steers[c.key][1]) else round(steers[c.key][1], 4)}
        for m in metrics:
            v = _per_prompt(records, c.key, m, n_prompts)
            lo, hi = bootstrap_ci(v, idx)
            row[m] = round(float(np.nanmean(v)), 6) if np.isfinite(v).any() else None
            row[m + "_ci"] = [round(lo, 6), round(hi, 6)]
        lp = _per_prompt(records, c.key, "logprob", n_prompts)
        diffs = np.nanmean(lp[idx], 1) - np.nanmean(lp_none[idx], 1)
        row["fluency_ratio"] = round(math.exp(float(np.nanmean(lp) - np.nanmean(lp_none))), 6)
        row["fluency_ratio_ci"] = [round(math.exp(float(np.nanquantile(diffs, 0.025))), 6),
                                   round(math.exp(float(np.nanquantile(diffs, 0.975))), 6)]
        rows.append(row)
    return rows


def _curve(table, arm: str, mode: str, scale: str, strengths) -> list[dict]:
    by = {r["condition"]: r for r in table}
    pts = [by["none"]]
    for s in strengths:
        k = Condition(arm, mode, scale, float(s)).key
        if k in by:
            pts.append(by[k])
    return pts


def _verdict(table, cfg, family, n_prompts) -> dict:
    """The common target concept score of a family (the highest every compared arm reaches), or why there is none."""
    mode, scale = family
    arms = [a for a in COMPARED if len(_curve(table, a, mode, scale, cfg.strengths)) > 1]
    label = f"{'matched vector norm' if scale == 'norm' else 'strength in typical activations'}, {mode}"
    out = {"mode": mode, "scale": scale, "label": label, "target": None, "fluency": {}, "best": None,
           "runner_up": None, "diff": None, "diff_ci": None, "detectable": False}
    if not arms:
        out["text"] = f"{label}: no arm was run."
        return out
    none_c = table[0]["concept"]
    reach = {a: max(p["concept"] for p in _curve(table, a, mode, scale, cfg.strengths) if p["concept"] is not None) for a in arms}
    target = min(reach.values())
    if none_c is None or target <= none_c + 1e-9:
        low = min(reach, key=reach.get)
        out["text"] = (f"{label}: the concept score does not rise above no steering ({none_c:.3f}) for every arm "
                       f"({low} reaches at most {reach[low]:.3f}), so fluency cannot be compared at a common concept score.")
        return out
    out["target"] = round(target, 6)
    out["text"] = ""
    return out


def verdict_from_records(records, table, cfg: ExperimentConfig, family: tuple[str, str], n_prompts: int) -> dict:
    """The verdict with a paired bootstrap: resample prompts, rebuild each arm's curve (concept, logprob per
    strength), interpolate its fluency at the common target concept score, and take the best arm's lead."""
    out = _verdict(table, cfg, family, n_prompts)
    if out["target"] is None:
        return out
    mode, scale = family
    target = out["target"]
    arms = [a for a in COMPARED if len(_curve(table, a, mode, scale, cfg.strengths)) > 1]
    idx = bootstrap_indices(n_prompts, cfg.n_boot, cfg.seed + 1)
    keys = {a: [p["condition"] for p in _curve(table, a, mode, scale, cfg.strengths)] for a in arms}
    pp = {k: (_per_prompt(records, k, "concept", n_prompts), _per_prompt(records, k, "logprob", n_prompts))
          for a in arms for k in keys[a]}
    point, boot = {}, {}
    curves = {a: ([float(np.nanmean(pp[k][0])) for k in keys[a]], [float(np.nanmean(pp[k][1])) for k in keys[a]])
              for a in arms}
    # the target from these unrounded means: the table's rounded one can sit a hair above the weakest arm's own
    # maximum, which then "never reaches" it (NaN fluency for the arm that defines the target)
    target = min(max(c) for c, _ in curves.values())
    for a in arms:
        c, f = curves[a]
        point[a] = fluency_at(c, f, target)
        cb = np.stack([np.nanmean(pp[k][0][idx], 1) for k in keys[a]], 1)  # [B, points]
        fb = np.stack([np.nanmean(pp[k][1][idx], 1) for k in keys[a]], 1)
        boot[a] = np.array([fluency_at(cb[i], fb[i], target) for i in range(idx.shape[0])])
    ranked = sorted(arms, key=lambda a: -point[a] if math.isfinite(point[a]) else math.inf)
    best, second = ranked[0], ranked[1] if len(ranked) > 1 else None
    out["fluency"] = {a: (round(point[a], 6) if math.isfinite(point[a]) else None) for a in arms}
    out["best"], out["runner_up"] = best, second
    label = out["label"]
    if second is None:
        out["text"] = f"{label}: only {best} was run."
        return out
    d = boot[best] - boot[second]
    ok = np.isfinite(d)
    diff = point[best] - point[second]
    lo, hi = (float(np.quantile(d[ok], 0.025)), float(np.quantile(d[ok], 0.975))) if ok.mean() > 0.5 else (float("nan"), float("nan"))
    out["diff"], out["diff_ci"] = round(diff, 6), [round(lo, 6), round(hi, 6)]
    out["defined_fraction"] = round(float(ok.mean()), 4)
    flu = ", ".join(f"{a} {point[a]:.3f}" for a in ranked)
    if math.isfinite(lo) and lo > 0:
        out["detectable"] = True
        out["text"] = (f"{label}: at concept score {target:.3f} (the highest every arm reaches), {best} keeps the most "
                       f"fluency: mean log-prob per token {flu}; lead over {second} {diff:+.3f} nats "
                       f"[95% CI {lo:+.3f}, {hi:+.3f}] over {n_prompts} prompts.")
    else:
        out["text"] = (f"{label}: no difference detectable at this sample size: at concept score {target:.3f}, "
                       f"mean log-prob per token {flu}; {best} - {second} = {diff:+.3f} nats "
                       f"[95% CI {lo:+.3f}, {hi:+.3f}] over {n_prompts} prompts.")
    return out


def control_check(table, cfg: ExperimentConfig) -> dict:
    """Does the random direction raise the concept score? (at the strongest activation-scale strength)."""
    by = {r["condition"]: r for r in table}
    s = max(cfg.strengths) if cfg.strengths else None
    none = by["none"]
    out = {"none": none["concept"], "none_ci": none["concept_ci"]}
    for arm in ("random", "coarse+fine"):
        k = Condition(arm, "add", "activation", float(s)).key if s is not None else None
        if k in by:
            out[arm] = by[k]["concept"]
            out[arm + "_ci"] = by[k]["concept_ci"]
    if "random" in out and out["random"] is not None and none["concept"] is not None:
        rises = out["random_ci"][0] > none["concept_ci"][1]
        out["random_raises"] = bool(rises)
        out["text"] = (f"control: the random direction (norm of coarse+fine at {s:g}x) gives concept score "
                       f"{out['random']:.3f} [{out['random_ci'][0]:.3f}, {out['random_ci'][1]:.3f}] vs "
                       f"{none['concept']:.3f} unsteered: " + ("it RAISES the score (the probe reads pushing, not the concept)."
                                                              if rises else "no rise (the control behaves as a control)."))
    return out


# ---------------------------------------------------------------- report and CLI
def format_report(result: dict) -> str:
    """The verdicts, the control, the table and the timing as plain text (the CLI's output)."""
    lines = [f"anchor coarse:{result['anchor']}  children fine:{','.join(map(str, result['children']))}  "
             f"hook {result['hook_name']}  probe {result['probe']['hook']} (holdout accuracy "
             f"{result['probe']['holdout_accuracy']}, {result['probe']['n_train']} prompts)"]
    lines.append("typical activations: " + ", ".join(f"{t['sae']}:{t['index']}={t['value']:.3g} ({t['source']})"
                                                     for t in result["typical"]))
    lines.append(f"{result['n_prompts']} prompts x {result['n_seeds']} seed(s) x {len(result['conditions'])} conditions = "
                 f"{result['n_generations']} generations, {result['n_tokens']} tokens ({result['decoder']})")
    lines.append("")
    hdr = f"{'condition':34s} {'concept [95% CI]':24s} {'sae':>6s} {'logprob':>8s} {'fluency':>8s} {'dist-2':>6s} {'|v|':>8s}"
    lines.append(hdr)
    for r in result["table"]:
        ci = r["concept_ci"]
        conc = "-" if r["concept"] is None else f"{r['concept']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"
        sae = "-" if r["sae"] is None else f"{r['sae']:.3f}"
        lp = "-" if r["logprob"] is None else f"{r['logprob']:.3f}"
        vn = "clamp" if r["vector_norm"] is None else f"{r['vector_norm']:.1f}"
        fl = "-" if r["fluency_ratio"] is None else f"{r['fluency_ratio']:.3f}"
        d2 = "-" if r["distinct2"] is None else f"{r['distinct2']:.3f}"
        lines.append(f"{r['condition']:34s} {conc:24s} {sae:>6s} {lp:>8s} {fl:>8s} {d2:>6s} {vn:>8s}")
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

    def progress(done, total):
        now = time.perf_counter()
        if now - last[0] > 10 or done == total:
            last[0] = now
            print(f"  {done}/{total} ({now - t0:.0f} s)", flush=True)

    with eng.session(timeout=600):
        result = run_experiment(eng.model, eng.saes, eng.hook_name, cfg, atlas=getattr(eng, "atlas", None), progress=progress)
    print(format_report(result))
    print(f"model load {t_load:.1f} s; total {time.perf_counter() - t0:.1f} s")
    if a.out:
        import json

        with open(a.out, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    main()
