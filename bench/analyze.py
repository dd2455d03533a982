"""Analysis speed on the embedded profile, in one process: the project's analysis against the notebook way.

    .venv/bin/python bench/analyze.py [--tokens 64] [--reps 7] [--threads 2] [--json out.json]

Every line times a prompt not seen before unless its name says "cached": each round takes a new 64-token prompt
(windows of data/prompts/*.txt, one per round, shared by every contender of that round) and every contender
builds a new ResidualCache, so no forward, residual or lens of an earlier run is reused. Rounds interleave the
contenders (background load hits them alike); medians and the median of per-round ratios are reported, with the
load average before and after.

Notebook way (what an interpretability notebook does for the same view): transformer-lens `run_with_cache` on
the full model (every hook cached), `sae.encode` of both SAEs on the hook's activations,
`cache.accumulated_resid(apply_ln=True)` through `model.unembed`, fp32 softmax, top 5.
Ours, on a fresh prompt:
- `features`: `analysis.analyze` keeping every layer's residual (what the page's features fragment waits for);
- `view+lens`: features, then the lens from the kept residuals (the view with the lens complete);
- `view+lens, before (TL forward, fp32 lens)`: the same with transformer-lens's forward and the exact fp32
  unembedding (what this commit replaced: the fast decoder's forward and the bf16 kernel);
Cached (the same prompt again): `features (cached)` (residuals kept: SAE encodes only), `lens (cached)` (memo hit).
Agreement of our lens with the notebook's (top-1 token per cell, max |dp| on the top 5, each cell's KL to the model's
output against the notebook's full log-softmax) is measured on every round's prompt. If the profile's SAEs are not trained yet, random TopK SAEs of the same widths and k are used.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.engine import analysis as an  # noqa: E402
from app.engine.analysis import core  # noqa: E402
from app.engine.analysis.unembed import pick_precision  # noqa: E402
from app.engine.loading import ProfileUnavailable, load_model, load_sae  # noqa: E402
from app.engine.profiles import get_profile  # noqa: E402
from bench.common import interleave, peak_rss_mb, summary  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
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


def fresh_prompts(tok, n_tokens: int, count: int) -> list[list[int]]:
    """`count` distinct prompts of exactly n_tokens: consecutive windows of the shipped prompt sets' lines."""
    lines = [ln.strip() for f in ("neutral.txt", "france.txt", "eval_neutral.txt")
             if (p := ROOT / "data" / "prompts" / f).exists() for ln in p.read_text().splitlines() if ln.strip()]
    ids = tok.encode(" ".join(lines) if lines else TEXT * 50, add_special_tokens=False)
    step = max(1, min(n_tokens, (len(ids) - n_tokens) // max(count, 1)))
    out = [ids[s: s + n_tokens] for s in range(0, len(ids) - n_tokens, step)][:count]
    assert len(out) == count and all(len(o) == n_tokens for o in out), "not enough prompt text"
    return out


def notebook_way(model, saes, hook_name, toks):
    logits, cache = model.run_with_cache(toks)
    feats = {n: sae.encode(cache[hook_name][0]) for n, sae in saes.items()}
    recon = {n: saes[n].decode(f) for n, f in feats.items()}
    acc = cache.accumulated_resid(apply_ln=True)  # [layers+1, batch, pos, d]
    probs = model.unembed(acc).softmax(-1)
    top = probs.topk(5, dim=-1)
    nxt = logits[0, -1].softmax(-1).topk(10)
    return feats, recon, top, nxt


def tl_forward_capture(model, token_ids, names):
    """The analysis forward before this change: transformer-lens's own forward with store hooks."""
    store: dict = {}
    with model.hooks(fwd_hooks=[(n, an.make_store_hook(store, n)) for n in names]):
        resid = model(torch.tensor([list(token_ids)]), stop_at_layer=model.cfg.n_layers)
    return resid, store


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
    hook = profile.hook_name
    rss_loaded = peak_rss_mb()
    warm, *prompts = fresh_prompts(tok, args.tokens, args.reps + 1)
    state = {"ids": warm}  # this round's prompt

    def features(cache=None):
        cache = cache if cache is not None else an.ResidualCache()
        a = an.analyze(model, saes, hook, state["ids"], top_k=10, sink_norm=profile.sink_norm, resid_cache=cache,
                       cache_key=cache.key("bench", state["ids"]))
        return a, cache

    def view_lens():
        a, cache = features()
        return a, an.logit_lens(model, state["ids"], top=5, resid_cache=cache, cache_key=cache.key("bench", state["ids"]))

    def view_lens_before():
        ids = state["ids"]
        names = an.lens_hook_names(model.cfg.n_layers)
        final, store = tl_forward_capture(model, ids, names[:-1])
        resid = store[hook][0].float()
        for sae in saes.values():
            an.sae_token_views(sae, resid, 10)
        core._final_logits(model, final[:, -1:])
        stack = torch.stack([store[nm][0] for nm in names[:-1]] + [final[0]]).float()
        return an.lens_top(model, stack.reshape(-1, stack.shape[-1]), 5, low_precision=False)

    kept: dict = {}

    def features_cached():
        if kept.get("ids") != state["ids"]:  # first sight of this round's prompt: fill the cache (untimed below)
            kept.update(ids=state["ids"], cache=features()[1])
        return features(kept["cache"])

    def lens_cached():
        c = kept["cache"]
        return an.logit_lens(model, state["ids"], top=5, resid_cache=c, cache_key=c.key("bench", state["ids"]))

    agreement: list[tuple[int, int, float]] = []

    def notebook():
        return notebook_way(model, saes, hook, torch.tensor([state["ids"]]))

    kl_err: list[tuple[float, float]] = []

    def check_agreement():
        _, lens = view_lens()
        _, _, top, _ = notebook()
        nb = top.indices[:, 0, :, 0]
        agree = sum(tok.decode([int(nb[li, p])]) == lens.top_tokens[li][p][0]
                    for li in range(nb.shape[0]) for p in range(nb.shape[1]))
        agreement.append((agree, nb.numel(), float((torch.tensor(lens.top_probs) - top.values[:, 0]).abs().max())))
        _, cache = model.run_with_cache(torch.tensor([state["ids"]]))  # each cell's KL from the full log-softmax
        logp = model.unembed(cache.accumulated_resid(apply_ln=True)[:, 0]).double().log_softmax(-1)
        kl = (logp[-1].exp() * (logp[-1] - logp)).sum(-1)
        err = (torch.tensor(lens.kl, dtype=torch.float64) - kl).abs()
        kl_err.append((float(err.max()), float((err / kl.clamp_min(1.0)).max())))

    fns = {"notebook": notebook, "features": lambda: features(), "view+lens": view_lens,
           "view+lens, before (TL forward, fp32 lens)": view_lens_before,
           "features (cached)": features_cached, "lens (cached)": lens_cached}
    load_before = os.getloadavg()
    with torch.inference_mode():
        for _ in range(2):
            view_lens()  # warm-up on the warm-up prompt (one-off costs: fused weights, low-precision W_U, oneDNN kernels)
            features_cached(), lens_cached()
        rss_ours = peak_rss_mb()

        def next_prompt(r: int) -> None:
            state["ids"] = prompts[r]
            features_cached(), lens_cached()  # the cached lines' prompt is seen once before they are timed

        times = interleave(fns, args.reps, before_round=next_prompt)
        for ids in prompts:
            state["ids"] = ids
            check_agreement()
    load_after = os.getloadavg()
    res = summary(times, baseline="notebook")
    kernel = pick_precision(model.W_U, None)
    agree, cells = sum(a for a, _, _ in agreement), sum(c for _, c, _ in agreement)
    res.update({"tokens": args.tokens, "threads": args.threads, "saes": sae_kind, "fresh_prompts": len(prompts),
                "lens_kernel": kernel if kernel == "fp32" else f"{kernel} + fp32 rescoring",
                "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                "lens_top1_agreement": agree / cells, "lens_cells": cells,
                "lens_max_abs_prob_diff": max(d for _, _, d in agreement),
                "lens_kl_max_abs_diff": max(a for a, _ in kl_err), "lens_kl_max_diff_over_max_1_kl": max(r for _, r in kl_err),
                "load_average_before": load_before, "load_average_after": load_after,
                "peak_rss_mb_model_loaded": rss_loaded, "peak_rss_mb_ours": rss_ours, "peak_rss_mb_end": peak_rss_mb()})
    for name, r in res["runs"].items():
        print(f"{name:42s} p50 {r['p50_ms']:8.1f} ms  (min {r['min_ms']:.1f}, max {r['max_ms']:.1f})  "
              f"x{r['ratio_p50']:.3f} of notebook (paired x{r['ratio_paired_median']:.3f})")
    print(f"SAEs: {sae_kind}; lens kernel: {res['lens_kernel']} ({res['cpu_capability']}); top-1 agreement with the "
          f"notebook: {res['lens_top1_agreement']:.5f} over {cells} cells; max |dp| top-5: {res['lens_max_abs_prob_diff']:.2e}; "
          f"KL: max |dKL| {res['lens_kl_max_abs_diff']:.2e} nats, max |dKL| / max(1, KL) {res['lens_kl_max_diff_over_max_1_kl']:.2e}")
    print(f"load average before {load_before}, after {load_after}")
    print(f"peak RSS: model loaded {rss_loaded:.0f} MB, after our path {rss_ours:.0f} MB, after the notebook way {res['peak_rss_mb_end']:.0f} MB")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
