"""Atlas build speed and feature-card latency on the embedded profile, in one process.

    .venv/bin/python bench/atlas.py [--tokens 4096] [--reps 3] [--threads 1] [--cards 40] [--json out.json]

Baseline: the forward to the hook alone (transformer-lens `run_with_cache` stopped after the hook's block, the
same batches) -- what any atlas needs. Ours: `atlas.build_atlas` streaming part (forward + both SAE encodes +
sparse codes + valid mask + per-feature summaries), neighbours timed once on their own (a fixed cost: two
d_sae x d_sae cosine top-k, independent of the corpus size). Goal: build tokens/s >= 0.8 x the forward alone.
Feature card: `GET /api/atlas/{sae}/{i}` (atlas JSON; the first time that feature is opened) and
`GET /features/{sae}/{i}` (the page, with the decoder vocabulary projection) through the app (TestClient), p50 over
--cards random features, each opened once. Goal p50 <= 100 ms.
Corpus: the held-out windows of the SAE training corpus (data/cache/training/<profile>/windows.json, read only)
or, without it, windows of a fixed text. Peak RSS at the end.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.engine import atlas as at  # noqa: E402
from app.engine.profiles import DATA_DIR  # noqa: E402
from bench.common import interleave, peak_rss_mb, summary  # noqa: E402

TEXT = ("The capital of France is Paris. Paris sits on the Seine; the Louvre and the Eiffel Tower are there. "
        "def main(argv): return 0  # a Python function. Water boils at 100 degrees Celsius at sea level. ")


def windows_for(engine, tokens: int, ctx: int = 128) -> tuple[list[list[int]], str]:
    held = DATA_DIR / "cache" / "training" / engine.profile.name / "windows.json"
    n = max(1, tokens // ctx)
    if held.exists():
        return json.loads(held.read_text())["heldout"][:n], "heldout"
    ids = engine.tokenizer.encode(TEXT * (1 + tokens // 40), add_special_tokens=False)
    return [ids[i * ctx:(i + 1) * ctx] for i in range(n)], "fixed text"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--profile", default="smollm2-135m")
    ap.add_argument("--tokens", type=int, default=4096)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--cards", type=int, default=40)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from app.engine.engine import Engine

    tmp = Path(tempfile.mkdtemp(prefix="asn-bench-atlas-"))
    t0 = time.perf_counter()
    eng = Engine.build(args.profile, "cpu", atlas_root=tmp)
    load_s = time.perf_counter() - t0
    windows, source = windows_for(eng, args.tokens)
    n_tok = sum(map(len, windows))
    fp = at.atlas_fingerprint(eng.profile.name, eng.hook_name, eng.fingerprint)

    def forward_only():
        with torch.inference_mode():
            for b0 in range(0, len(windows), args.batch_size):
                at.forward_to_hook(eng.model, eng.hook_name, torch.tensor(windows[b0:b0 + args.batch_size]))

    built = {}

    def build():
        built["a"] = at.build_atlas(eng.model, eng.saes, windows, eng.hook_name, fingerprint=fp,
                                    sink_norm=eng.profile.sink_norm, batch_size=args.batch_size, n_neighbours=0)

    forward_only()  # warm-up
    times = interleave({"forward_to_hook": forward_only, "atlas_build": build}, args.reps)
    res = summary(times, "forward_to_hook")
    tps = {k: n_tok / statistics.median(v) for k, v in times.items()}
    t1 = time.perf_counter()
    summaries = built["a"].summaries
    at.add_neighbours(summaries, {n: s.W_dec for n, s in eng.saes.items()}, 10)
    nb_s = time.perf_counter() - t1
    atlas = built["a"]
    at.save_atlas(atlas, tmp / eng.profile.name)
    size_mb = at.folder_bytes(tmp / eng.profile.name) / 1e6
    eng.load_atlas(tmp)
    assert eng.atlas is not None, eng.atlas_status

    from fastapi.testclient import TestClient

    from app.core.settings import Settings
    from app.main import create_app

    rng = np.random.default_rng(0)
    card_ms = {"api_atlas": [], "feature_page": []}
    with TestClient(create_app(Settings(profile=eng.profile.name), engine_factory=lambda s: eng)) as client:
        for sae in ("coarse", "fine"):
            firing = np.flatnonzero(eng.atlas.summaries[sae]["n_firing"] > 0)
            for i in rng.choice(firing, size=min(args.cards // 2, len(firing)), replace=False):
                for name, url in (("api_atlas", f"/api/atlas/{sae}/{i}"), ("feature_page", f"/features/{sae}/{i}")):
                    t = time.perf_counter()
                    r = client.get(url)
                    card_ms[name].append(1000 * (time.perf_counter() - t))
                    assert r.status_code == 200, r.text[:200]
    out = {
        "profile": eng.profile.name, "corpus": source, "tokens": n_tok, "threads": args.threads, "load_s": round(load_s, 1),
        "tokens_per_s": {k: round(v, 1) for k, v in tps.items()},
        "build_vs_forward_tokens_per_s": round(tps["atlas_build"] / tps["forward_to_hook"], 3),
        "neighbours_s": round(nb_s, 1), "atlas_mb_for_these_tokens": round(size_mb, 2),
        # compact atlas: only token ids and valid bits scale with the corpus; the codes are a fixed co-firing sample
        # (131,072 tokens by default), summaries / example contexts / label scores are fixed per feature, and the
        # word index grows with the vocabulary (bounded by the features' share filter)
        "atlas_mb_estimate_1m_tokens": round(sum(
            f.stat().st_size * (1_000_000 / n_tok if f.name.startswith(("tokens", "valid")) else
                                max(1.0, 131_072 / n_tok) if f.name.startswith("codes_") else 1)
            for f in (tmp / eng.profile.name).iterdir()) / 1e6, 1),
        "card_p50_ms": {k: round(statistics.median(v), 1) for k, v in card_ms.items()},
        "card_p90_ms": {k: round(float(np.percentile(v, 90)), 1) for k, v in card_ms.items()},
        "peak_rss_mb": round(peak_rss_mb(), 0), "runs": res["runs"],
    }
    print(json.dumps(out, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
