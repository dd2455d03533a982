"""Analysis speed on the embedded profile, in one process: the project's analysis against the notebook way.

    .venv/bin/python bench/analyze.py [--tokens 64] [--reps 7] [--threads 2] [--json out.json]

Notebook way (what an interpretability notebook does for the same view): transformer-lens
`run_with_cache` on the full model (every hook cached), `sae.encode` of both SAEs on the hook's
activations, `cache.accumulated_resid(apply_ln=True)` through `model.unembed`, softmax, top 5.
Ours:
- `features`: `analysis.analyze` (features of both SAEs, reconstruction, sinks, next tokens) keeping every
  layer's residual in a ResidualCache (what the page's features fragment waits for);
- `lens (cached)`: the follow-up `logit_lens` reading those residuals (no forward);
- `view+lens`: both, i.e. the view with the lens complete (goal <= 0.5x the notebook way);
- what moved the figure: `view+lens, 2 forwards` (the lens runs its own forward, as before issue 17) and
  `lens, logsumexp` (the cached residuals through the unfused per-chunk logsumexp + top-k of before).

Runs are interleaved and medians of --reps reported (the CPU is shared: ratios, not absolutes, are the
result). If the profile's SAEs are not trained yet, random TopK SAEs of the same widths and k are used:
the cost depends only on the shapes. Peak RSS is read after a warm-up of our path alone, then at the end.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.engine import analysis as an  # noqa: E402
from app.engine.loading import ProfileUnavailable, load_model, load_sae  # noqa: E402
from app.engine.profiles import get_profile  # noqa: E402
from bench.common import interleave, peak_rss_mb, summary  # noqa: E402

TEXT = ("The capital of France is Paris. Paris is the largest city in France and sits on the banks of the Seine. "
        "The Eiffel Tower was built for the 1889 World's Fair, and the Louvre is the most visited museum in the "
        "world. Lyon, Marseille and Toulouse are other large French cities; the country borders Spain, Italy, "
        "Switzerland, Germany, Luxembourg and Belgium.")


def load_saes(profile, d_model: int):
    try:
        return {s.name: load_sae(s, profile, "cpu").to(dtype=torch.float32).eval() for s in (profile.coarse, profile.fine)}, "trained"
    except ProfileUnavailable:
        from app.training.saes import PLANS
        from app.training.topk_trainer import make_topk_sae

        saes = {}
        for name, (width, k, *_r) in PLANS[profile.name].items():
            g = torch.Generator().manual_seed(1)
            W_dec = torch.randn(width, d_model, generator=g)
            W_dec /= W_dec.norm(dim=-1, keepdim=True)
            saes[name] = make_topk_sae(W_dec.T.contiguous() * 0.1, torch.zeros(width), W_dec, torch.zeros(d_model), k,
                                       profile.hook_name).eval()
        return saes, "random (same widths and k; not trained yet)"


def notebook_way(model, saes, hook_name, toks):
    logits, cache = model.run_with_cache(toks)
    feats = {n: sae.encode(cache[hook_name][0]) for n, sae in saes.items()}
    recon = {n: saes[n].decode(f) for n, f in feats.items()}
    acc = cache.accumulated_resid(apply_ln=True)  # [layers+1, batch, pos, d]
    probs = model.unembed(acc).softmax(-1)
    top = probs.topk(5, dim=-1)
    nxt = logits[0, -1].softmax(-1).topk(10)
    return feats, recon, top, nxt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)

    profile = get_profile("smollm2-135m")
    lm = load_model(profile, "cpu")
    model, tok = lm.model, lm.tokenizer
    saes, sae_kind = load_saes(profile, model.cfg.d_model)
    ids = tok.encode(TEXT, add_special_tokens=False)[: args.tokens]
    assert len(ids) == args.tokens, len(ids)
    toks = torch.tensor([ids])
    hook = profile.hook_name
    rss_loaded = peak_rss_mb()

    cache = an.ResidualCache()
    key = cache.key("bench", ids)

    def features():
        return an.analyze(model, saes, hook, ids, top_k=10, sink_norm=profile.sink_norm, resid_cache=cache, cache_key=key)

    def lens_cached():
        return an.logit_lens(model, ids, top=5, resid_cache=cache, cache_key=key)

    def view_lens():
        return features(), lens_cached()

    def view_lens_two_forwards():
        return an.analyze(model, saes, hook, ids, top_k=10, sink_norm=profile.sink_norm), an.logit_lens(model, ids, top=5)

    def lens_logsumexp():  # before issue 17: logsumexp + top-k per chunk, bias added by the unembed
        stack = cache.get(key)
        rows = stack.reshape(-1, stack.shape[-1])
        for s0 in range(0, rows.shape[0], an.LENS_ROWS_PER_CHUNK):
            logits = an._final_logits(model, rows[s0: s0 + an.LENS_ROWS_PER_CHUNK].unsqueeze(0))[0].float()
            lse = torch.logsumexp(logits, dim=-1, keepdim=True)
            v, i = logits.topk(5, dim=-1)
            (v - lse).exp()

    def unembed_floor():  # the least any exact fp32 lens does: ln_final + one [rows, d] @ [d, vocab] matmul
        stack = cache.get(key)
        x = model.ln_final(stack.reshape(1, -1, stack.shape[-1]))[0]
        return x @ model.W_U

    with torch.inference_mode():
        for _ in range(2):
            view_lens()  # warm-up (also the peak of our path alone)
        rss_ours = peak_rss_mb()
        # agreement with the notebook's lens: top-1 token per layer x position, top-5 probabilities
        _, lens = view_lens()
        _, _, top, _ = notebook_way(model, saes, hook, toks)
        nb_top1 = top.indices[:, 0, :, 0]
        agree = sum(tok.decode([int(nb_top1[li, p])]) == lens.top_tokens[li][p][0]
                    for li in range(nb_top1.shape[0]) for p in range(nb_top1.shape[1])) / nb_top1.numel()
        max_dp = float((torch.tensor(lens.top_probs) - top.values[:, 0]).abs().max())
        times = interleave({"notebook": lambda: notebook_way(model, saes, hook, toks), "features": features,
                            "lens (cached)": lens_cached, "view+lens": view_lens,
                            "view+lens, 2 forwards": view_lens_two_forwards, "lens, logsumexp": lens_logsumexp,
                            "unembed matmul alone": unembed_floor}, args.reps)
    res = summary(times, baseline="notebook")
    res.update({"tokens": args.tokens, "threads": args.threads, "saes": sae_kind, "lens_top1_agreement": agree,
                "lens_max_abs_prob_diff": max_dp,
                "peak_rss_mb_model_loaded": rss_loaded, "peak_rss_mb_ours": rss_ours, "peak_rss_mb_end": peak_rss_mb()})
    for name, r in res["runs"].items():
        print(f"{name:22s} p50 {r['p50_ms']:8.1f} ms  (min {r['min_ms']:.1f}, max {r['max_ms']:.1f})  "
              f"x{r['ratio_p50']:.3f} of notebook (paired x{r['ratio_paired_median']:.3f})")
    print(f"SAEs: {sae_kind}; lens top-1 agreement with the notebook: {agree:.4f}; max |dp| top-5: {max_dp:.2e}")
    print(f"peak RSS: model loaded {rss_loaded:.0f} MB, after our path {rss_ours:.0f} MB, after the notebook way {res['peak_rss_mb_end']:.0f} MB")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
