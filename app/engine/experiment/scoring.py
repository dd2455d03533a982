"""Aggregation with a shared bootstrap over prompts, the verdicts and the random-direction control."""
from __future__ import annotations

import math

import numpy as np

from app.engine.experiment.arms import COMPARED, Condition, ExperimentConfig
from app.engine.experiment.stats import bootstrap_ci, bootstrap_indices, fluency_at


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
        v = r.get(metric)
        if r["condition"] == key and v is not None and math.isfinite(v):
            sums[r["prompt"]] += v
            cnt[r["prompt"]] += 1
    with np.errstate(invalid="ignore"):
        return np.where(cnt > 0, sums / np.maximum(cnt, 1), np.nan)


def aggregate(records, conds, n_prompts: int, cfg: ExperimentConfig, steers: dict) -> list[dict]:
    """One row per condition: means and bootstrap 95 % intervals of every score, fluency ratio to no steering."""
    idx = bootstrap_indices(n_prompts, cfg.n_boot, cfg.seed)
    metrics = ["concept", "zeroshot", "probe", "sae", "logprob", "distinct2"] + (["words"] if cfg.words else [])
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
            row[m + "_hw"] = round((hi - lo) / 2, 6) if math.isfinite(hi - lo) else None
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
           "runner_up": None, "diff": None, "diff_ci": None, "detectable": False,
           "defined_fraction": None, "diff_hw": None, "mde": None}
    if not arms:
        out["text"] = f"{label}: no arm was run."
        return out
    none_c = table[0]["concept"]
    reach = {a: max(p["concept"] for p in _curve(table, a, mode, scale, cfg.strengths) if p["concept"] is not None) for a in arms}
    target = min(reach.values())
    if none_c is None or target <= none_c + 1e-9:
        low = min(reach, key=lambda a: reach[a])
        out["text"] = (f"{label}: the mean concept score of some arm never exceeds the unsteered {none_c:.3f} "
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
    hw = (hi - lo) / 2 if math.isfinite(lo) and math.isfinite(hi) else float("nan")
    # smallest difference this run could detect (two-sided 5 %, 80 % power): (1.96 + 0.84) standard errors
    mde = 2.8 * (hi - lo) / (2 * 1.96) if math.isfinite(hw) else float("nan")
    out["diff_hw"] = round(hw, 6) if math.isfinite(hw) else None
    out["mde"] = round(mde, 6) if math.isfinite(mde) else None
    at = (f"at concept score {target:.3f} (the highest every arm reaches; each arm's log-prob there is interpolated "
          f"linearly between its measured strengths)")
    if math.isfinite(lo) and lo > 0:
        out["detectable"] = True
        out["text"] = (f"{label}: {at}, {best} keeps the most fluency: mean log-prob per token {flu}; lead over "
                       f"{second} {diff:+.3f} nats [95% CI {lo:+.3f}, {hi:+.3f}; half-width {hw:.3f}] over {n_prompts} prompts.")
    else:
        out["text"] = (f"{label}: not detectable at this sample size: {at}, mean log-prob per token {flu}; {best} - "
                       f"{second} = {diff:+.3f} nats [95% CI {lo:+.3f}, {hi:+.3f}; half-width {hw:.3f}] over {n_prompts} "
                       f"prompts; the smallest difference this run could detect (80% power) is about {mde:.3f} nats.")
    return out


def control_check(table, cfg: ExperimentConfig) -> dict:
    """Does a random direction raise the concept score? At every strength and scale the run used: it "raises" where
    the random arm's interval lies above the unsteered mean; "contains" where the interval holds the unsteered mean."""
    none = next(r for r in table if r["condition"] == "none")
    out: dict = {"none": none["concept"], "none_ci": none["concept_ci"], "per_strength": []}
    nv = none["concept"]
    for r in table:
        if r["arm"] != "random" or r["concept"] is None or nv is None:
            continue
        lo, hi = r["concept_ci"]
        out["per_strength"].append({"condition": r["condition"], "scale": r["scale"], "strength": r["strength"],
                                    "concept": r["concept"], "ci": [lo, hi], "contains": bool(lo <= nv <= hi),
                                    "raises": bool(lo > nv), "max_rise": round(hi - nv, 6)})
    ps = out["per_strength"]
    if not ps:
        return out
    worst = max(ps, key=lambda p: p["ci"][0] - nv)
    out["random"], out["random_ci"] = worst["concept"], worst["ci"]
    out["random_raises"] = any(p["raises"] for p in ps)
    out["contains_all"] = all(p["contains"] for p in ps)
    if out["random_raises"]:
        bad = ", ".join(f"{p['scale']} {p['strength']:g}" for p in ps if p["raises"])
        out["text"] = (f"control: a random direction RAISES the concept score at {bad} (e.g. {worst['concept']:.3f} "
                       f"[{worst['ci'][0]:.3f}, {worst['ci'][1]:.3f}] vs {nv:.3f} unsteered): the measure reads pushing.")
    else:
        top = max(p["max_rise"] for p in ps)
        out["text"] = (f"control: at all {len(ps)} random-direction strengths the interval "
                       f"{'contains' if out['contains_all'] else 'does not lie above'} the unsteered score {nv:.3f}: no rise "
                       f"detected at this sample size (a rise of up to {top:.3f} is not excluded).")
    return out
