"""Split map speed with an atlas present: the whole `run_split_map` service (children, co-firing, coverage,
holes with their contexts, meta-decompositions, the dictionary view, labels) for one coarse feature at a time.
Goal: p50 <= 300 ms once the split index is built (built once per atlas and cached; its cost is reported).

    .venv/bin/python bench/splits.py [--features 30] [--threads 2] [--tokens 100000] [--json out.json]

Uses the embedded profile's atlas when one is present and current (data/atlas/smollm2-135m, `make atlas`);
otherwise a synthetic atlas of the same shape: --tokens tokens in windows of 128, each with k = 32 active
features per SAE drawn from a skewed popularity (a few features fire often, most rarely), as TopK SAEs do.
The baseline (ratio 1) is the engine's `splits.split_map` alone on the same features, in the same process.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.api.splits import SplitMapRequest, run_split_map, split_index  # noqa: E402
from app.core.settings import Settings  # noqa: E402
from app.engine import atlas as at  # noqa: E402
from app.engine import splits  # noqa: E402
from app.engine.engine import Engine, weights_fingerprint  # noqa: E402
from app.engine.profiles import get_profile  # noqa: E402
from bench.common import peak_rss_mb  # noqa: E402


def synthetic_codes(n_tokens: int, width: int, k: int, rng) -> sp.csr_matrix:
    pop = 1.0 / np.arange(1, width + 1) ** 0.8  # skewed popularity
    pop = rng.permutation(pop / pop.sum())
    idx = np.empty((n_tokens, k), dtype=np.int32)
    logp = np.log(pop).astype(np.float32)
    for s in range(0, n_tokens, 1_000):  # [1000, width] floats at a time
        n = min(1_000, n_tokens - s)
        # k distinct features per token (Gumbel top-k of the popularity)
        u = 1.0 - rng.random((n, width), dtype=np.float32)  # in (0, 1]
        g = logp[None, :] - np.log(-np.log(np.clip(u, 1e-7, 1 - 1e-7)))
        idx[s:s + n] = np.argpartition(-g, k, axis=1)[:, :k]
    vals = rng.exponential(2.0, size=(n_tokens, k)).astype(np.float32) + 0.1
    indptr = np.arange(0, n_tokens * k + 1, k, dtype=np.int64)
    m = sp.csr_matrix((vals.ravel(), idx.ravel(), indptr), shape=(n_tokens, width))
    m.sort_indices()
    return m


def synthetic_atlas(saes, tokenizer, n_tokens: int, ctx: int = 128, seed: int = 0):
    rng = np.random.default_rng(seed)
    n_tokens = n_tokens // ctx * ctx
    vocab = len(tokenizer) if tokenizer is not None else 49152  # SmolLM2's vocabulary
    tokens = rng.integers(0, vocab, n_tokens).astype(np.int32)
    valid = np.ones(n_tokens, dtype=bool)
    valid[::ctx] = False
    codes = {n: synthetic_codes(n_tokens, int(s.cfg.d_sae), int(getattr(s.cfg, "k", 32)), rng) for n, s in saes.items()}
    for m in codes.values():
        m[np.flatnonzero(~valid)] = 0
        m.eliminate_zeros()
    summaries = {n: at.summarise(codes[n], tokens, valid, ctx) for n in codes}
    strings = {int(i): tokenizer.decode([int(i)]) for i in np.unique(tokens)} if tokenizer is not None else {}
    return at._assemble("synthetic", tokens, ctx, valid, codes, summaries, strings, {"corpus": "synthetic"})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--features", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=100_000)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from bench.analyze import load_saes

    profile = get_profile("smollm2-135m")
    # No model: a split map without a prompt reads only the decoders and the atlas (d_model 576 for SmolLM2-135M).
    saes, sae_kind = load_saes(profile, 576)
    eng = Engine(profile, None, None, saes)
    eng.fingerprint = weights_fingerprint(*saes.values())
    fp = at.atlas_fingerprint(profile.name, profile.hook_name, eng.fingerprint)
    atlas, status = at.load_for_engine(at.default_atlas_dir(profile), fp, profile.name)
    t0 = time.perf_counter()
    if atlas is None:
        atlas, source = synthetic_atlas(saes, None, args.tokens), f"synthetic ({status.split(':')[0]} real atlas)"
    else:
        source = "the embedded profile's atlas"
    made_s = time.perf_counter() - t0
    eng.atlas, eng.atlas_status = atlas, "ok"
    settings = Settings()

    t0 = time.perf_counter()
    ix, cache = split_index(eng)
    index_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    run_split_map(eng, settings, SplitMapRequest(coarse=0))  # first call also builds the dictionary view (cached)
    first_s = time.perf_counter() - t0
    rng = np.random.default_rng(1)
    firing = np.flatnonzero(ix.coarse_count > 0)
    feats = rng.choice(firing, size=min(args.features, firing.size), replace=False)
    service, engine_only = [], []
    for c in feats:  # interleaved: the engine's split_map, then the whole service, per feature
        t0 = time.perf_counter()
        splits.split_map(ix, int(c))
        engine_only.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        r = run_split_map(eng, settings, SplitMapRequest(coarse=int(c)))
        service.append(time.perf_counter() - t0)
    p50, p90 = statistics.median(service), float(np.quantile(service, 0.9))
    base = statistics.median(engine_only)
    res = {"atlas": source, "tokens": int(atlas.tokens.shape[0]), "valid_tokens": int(atlas.valid.sum()),
           "nnz": {n: int(m.nnz) for n, m in atlas.codes.items()}, "saes": sae_kind, "threads": args.threads,
           "atlas_seconds": round(made_s, 2), "index_build_s": round(index_s, 3),
           "first_call_incl_dictionary_s": round(first_s, 3),
           "service_p50_ms": 1000 * p50, "service_p90_ms": 1000 * p90, "engine_split_map_p50_ms": 1000 * base,
           "ratio_service_to_engine": p50 / base, "goal_p50_ms": 300, "features": len(feats),
           "last": {"coarse": r.coarse, "children": len(r.children), "n_coarse": r.n_coarse}, "peak_rss_mb": peak_rss_mb()}
    print(f"atlas: {source}: {res['tokens']} tokens, nnz {res['nnz']}; SAEs {sae_kind}")
    print(f"split index built in {index_s:.2f} s; first call (dictionary view) {first_s:.2f} s; both cached after")
    print(f"run_split_map p50 {1000 * p50:.1f} ms, p90 {1000 * p90:.1f} ms over {len(feats)} coarse features "
          f"(engine split_map alone p50 {1000 * base:.1f} ms, x{p50 / base:.2f}); goal p50 <= 300 ms: "
          f"{'OK' if p50 <= 0.3 else 'MISSED'}; peak RSS {res['peak_rss_mb']:.0f} MB")
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
