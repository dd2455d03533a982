"""Tuned vs logit lens readout on the embedded model: the same cached residuals through each (no forward, no memo),
interleaved; the tuned lens adds one batched [n, pos, d] x [n, d, d] matmul before the same chunked unembedding.
Also the unembedding alone as it ran before the per-cell KL (what the KL strip costs).

    python -m bench.tuned_lens [--tokens 64] [--reps 7] [--threads 1] [--lens data/lens/smollm2-135m]
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from app.engine import analysis as an
from app.engine.analysis import core
from app.engine.loading import load_model
from app.engine.profiles import DATA_DIR, get_profile
from app.engine.tuned_lens import identity_lens, load_tuned_lens
from bench.analyze import TEXT
from bench.common import interleave, summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--lens", default=str(DATA_DIR / "lens" / "smollm2-135m"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    profile = get_profile("smollm2-135m")
    lm = load_model(profile, "cpu")
    model = lm.model
    n, d = model.cfg.n_layers, model.cfg.d_model
    try:
        lens = load_tuned_lens(args.lens, n, d)
    except Exception:  # the cost does not depend on the values: an identity lens times the same work
        lens = identity_lens(n, d)
    ids = lm.tokenizer.encode(TEXT, add_special_tokens=False)[: args.tokens]
    stack = an.lens_residuals(model, ids)

    def run(tuned):
        cache = an.ResidualCache()  # a fresh cache holding the residuals: no forward, no memoised lens
        key = cache.key("bench", ids)
        cache.put(key, stack)
        return an.logit_lens(model, ids, top=5, resid_cache=cache, cache_key=key, tuned=tuned,
                             sink_norm=profile.sink_norm)

    def before():  # logit_lens as it was before the KL strip (commit db01c17): fused top-k of every row, decoded
        L1, P, d = stack.shape
        pv, pi = an.lens_top(model, stack.reshape(L1 * P, d), 5)
        probs, ids_ = pv.reshape(L1, P, 5).tolist(), pi.reshape(L1, P, 5).tolist()
        decode = core._decoder(model.tokenizer)
        return (tuple(tuple(tuple(decode(t) for t in cell) for cell in row) for row in ids_),
                tuple(tuple(tuple(cell) for cell in row) for row in probs))

    # on the shared machine wall time mostly measures the neighbours: with one thread, CPU time is the work done
    clock = time.process_time if args.threads == 1 else time.perf_counter
    times = interleave({"logit": lambda: run(None), "tuned": lambda: run(lens), "logit, no KL (before)": before},
                       args.reps, clock)
    out = summary(times, "logit") | {"tokens": len(ids), "threads": args.threads, "lens": lens.source}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
