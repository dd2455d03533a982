"""Selectivity from the collected statistics: feature tables, top features, the coarse -> fine summary."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from app.engine.discovery.stats import CollectedStats, FeatureRow, FeatureStats, SparsePromptStats


def feature_stats(stats: SparsePromptStats, n_concept: int, aggregate: str = "max") -> FeatureStats:
    """Dense [F] means, fire rates and selectivity (prompts 0..n_concept-1 are concept prompts)."""
    F, n = stats.width, stats.n_prompts
    n_contrast = n - n_concept
    is_concept = stats.prompt < n_concept
    vals = stats.values(aggregate)
    fired = (stats.max > 0).float()

    def per_feature(mask, v):
        return torch.zeros(F).index_add_(0, stats.feature[mask], v[mask])

    mc = per_feature(is_concept, vals) / max(n_concept, 1)
    mn = per_feature(~is_concept, vals) / max(n_contrast, 1)
    fc = per_feature(is_concept, fired) / max(n_concept, 1)
    fn = per_feature(~is_concept, fired) / max(n_contrast, 1)
    tot = mc + mn
    sel = torch.where(tot > 0, mc / tot.clamp_min(1e-30), torch.zeros_like(tot))
    return FeatureStats(mc, mn, fc, fn, sel)


def top_features(fs: FeatureStats, top: int = 20, min_fire_rate: float = 0.1, loud: int = 5,
                 noisy_below: float = 0.8) -> list[FeatureRow]:
    """The `top` features by selectivity among those firing on >= min_fire_rate of concept prompts
    (ties broken by mean_concept), plus the `loud` loudest features on concept prompts.

    A row is flagged noisy when its mean_concept is at least the median mean_concept of the selective
    rows (loud) while its selectivity is below noisy_below (it bleeds into contrast prompts).
    """
    eligible = (fs.fire_concept >= min_fire_rate) & (fs.mean_concept > 0)
    cand = eligible.nonzero(as_tuple=True)[0]
    # sort by (selectivity desc, mean_concept desc): two stable sorts
    o = torch.argsort(fs.mean_concept[cand], descending=True, stable=True)
    cand = cand[o]
    o = torch.argsort(fs.selectivity[cand], descending=True, stable=True)
    selective = [int(i) for i in cand[o][:top]]
    loudest = [int(i) for i in torch.argsort(fs.mean_concept, descending=True)[:loud] if fs.mean_concept[i] > 0]
    chosen = selective + [i for i in loudest if i not in selective]
    ref = torch.median(fs.mean_concept[selective]).item() if selective else float("inf")
    rows = []
    for i in chosen:
        mc, sel = float(fs.mean_concept[i]), float(fs.selectivity[i])
        rows.append(FeatureRow(i, mc, float(fs.mean_contrast[i]), float(fs.fire_concept[i]),
                               float(fs.fire_contrast[i]), sel, bool(mc >= ref and sel < noisy_below)))
    return rows


@dataclass(frozen=True)
class DiscoveryParams:
    """Analysis knobs applied to collected statistics (cheap: no forward pass)."""

    aggregate: str = "max"
    top_k: int = 20
    min_fire_rate: float = 0.25
    n_coarse: int = 5
    n_fine: int = 30
    n_match: int = 10  # best cosine matches per coarse feature added to the mapped fine set
    cos_floor: float = 0.1
    scan_chunk: int = 16384


def row_dict(r: FeatureRow) -> dict:
    return {"index": r.index, "mean_concept": r.mean_concept, "mean_contrast": r.mean_contrast,
            "fire_concept": r.fire_concept, "fire_contrast": r.fire_contrast, "selectivity": r.selectivity,
            "noisy": r.noisy}


def top_prompts(stats: SparsePromptStats, features: Sequence[int], aggregate: str = "max") -> list[tuple[int, float]]:
    """For each feature: (index of the prompt where its per-prompt activation is largest, that activation)."""
    d = stats.dense(features, aggregate)
    if d.shape[1] == 0:
        return []
    v, i = d.max(0)
    return [(int(a), float(b)) for a, b in zip(i, v)]


def summarize(collected: CollectedStats, saes: dict, p: DiscoveryParams, prompts: Sequence[str] | None = None) -> dict:
    """Tables for both SAEs and the coarse -> fine mapping, as a JSON-ready dict (the view's `result`).

    prompts (concept then contrast, as collected) adds each row's strongest prompt to the tables.
    """
    from app.engine import decomposition as dec

    tables, fstats = {}, {}
    for name, st in collected.per_sae.items():
        fstats[name] = feature_stats(st, collected.n_concept, p.aggregate)
        rows = [row_dict(r) for r in top_features(fstats[name], p.top_k, p.min_fire_rate)]
        for r, (pi, v) in zip(rows, top_prompts(st, [r["index"] for r in rows], p.aggregate)):
            r["top_prompt"] = prompts[pi] if prompts is not None and v > 0 else None
        tables[name] = rows
    mapping = None
    if "coarse" in tables and "fine" in tables:
        coarse = [r["index"] for r in tables["coarse"] if not r["noisy"]][: p.n_coarse]
        top_fine = top_features(fstats["fine"], max(p.n_fine, 1), p.min_fire_rate, loud=0)[: p.n_fine]
        W_c, W_f = saes["coarse"].W_dec.detach(), saes["fine"].W_dec.detach()
        scan = dec.scan_cosines(W_c[coarse] if coarse else W_c[:0], coarse, W_f, chunk=p.scan_chunk, floor=p.cos_floor)
        fine, source = [], {}
        for fr in top_fine:
            fine.append(fr.index)
            source[fr.index] = "top"
        for m in scan.matches:
            for fi, _ in m[: p.n_match]:
                if fi not in source:
                    fine.append(fi)
                    source[fi] = "cosine"
                elif source[fi] == "top":
                    source[fi] = "both"
        a = collected.per_sae["coarse"].dense(coarse, p.aggregate)
        b = collected.per_sae["fine"].dense(fine, p.aggregate)
        corr = dec.pearson_columns(a, b) if coarse and fine else torch.zeros(len(coarse), len(fine))
        cos = dec.decoder_cosine(W_c[coarse].cpu(), W_f[fine].cpu()) if coarse and fine else torch.zeros(len(coarse), len(fine))
        fine_rows = {}
        for fi in fine:
            fine_rows[str(fi)] = {"selectivity": float(fstats["fine"].selectivity[fi]),
                                  "mean_concept": float(fstats["fine"].mean_concept[fi]),
                                  "fire_concept": float(fstats["fine"].fire_concept[fi]), "source": source[fi]}
        mapping = {
            "coarse": coarse, "fine": fine, "fine_info": fine_rows,
            "corr": [[round(float(x), 6) for x in row] for row in corr],
            "cos": [[round(float(x), 6) for x in row] for row in cos],
            "scan": {"n_fine": scan.n_fine, "bin_edges": list(scan.bin_edges), "counts": [list(c) for c in scan.counts],
                     "matches": [[[fi, round(v, 6)] for fi, v in m] for m in scan.matches], "floor": scan.floor,
                     "max_cosine": list(scan.max_cosine)},
        }
    secs = collected.seconds
    return {
        "n_concept": collected.n_concept, "n_contrast": collected.n_contrast,
        "n_positions": collected.n_positions, "n_tokens_used": collected.n_tokens_used,
        "seconds": round(secs, 3), "tokens_per_s": round(collected.n_positions / secs, 1) if secs > 0 else None,
        "aggregate": p.aggregate, "widths": {k: v.width for k, v in collected.per_sae.items()},
        "tables": tables, "mapping": mapping,
    }
