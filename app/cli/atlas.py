"""`python -m app atlas --profile P [--tokens N] [--corpus heldout|offline|FILE] [--chat-share S]`: build a profile's
feature atlas.

heldout: the held-out windows of the SAE training corpus (data/cache/training/<profile>/windows.json, never
trained on); offline: the offline corpus (app/training/corpus.py) with the profile's tokenizer; FILE: a text
file, tokenised and cut into windows. Plus, up to --chat-share of the windows, the held-out chat transcripts: those
windows.json holds (the eval split and the held-out slice of the train split, app.training.saes.chat_windows; no
training transcript shares their topics), else the eval shards (data/chat/<profile>/eval-*.jsonl.gz), interleaved with the corpus windows (seeded), so the co-firing sample (the first windows) holds both.
Resumable: chunks are checkpointed next to the output folder.
"""
from __future__ import annotations

import json
import random
import shutil
import sys
import time
from pathlib import Path

CTX = 128
DEFAULT_TOKENS = 1_000_000
CHAT_SHARE = 0.3


def add_parser(sub) -> None:
    p = sub.add_parser("atlas", help="build the feature atlas of a profile (corpus context for every feature)")
    p.add_argument("--profile", default="smollm2-135m")
    p.add_argument("--tokens", type=int, default=DEFAULT_TOKENS, help="corpus tokens (windows of 128)")
    p.add_argument("--corpus", default="auto", help="heldout | offline | path to a text file (auto: heldout if present)")
    p.add_argument("--out", default=None, help="atlas folder (default: the profile's atlas folder)")
    p.add_argument("--device", default=None)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--chunk-windows", type=int, default=64, help="windows per checkpointed chunk")
    p.add_argument("--chat-share", type=float, default=CHAT_SHARE,
                   help="share of the windows from the held-out chat transcripts (at most what there is)")
    p.add_argument("--chat-dir", default=None, help="folder of chat shards (default data/chat/<profile>)")
    p.add_argument("--cofire-tokens", type=int, default=131_072,
                   help="tokens whose full codes are kept (the split map's co-firing sample)")
    p.add_argument("--upgrade", action="store_true",
                   help="make the existing version-1 atlas folder compact (no model run; same corpus and SAEs)")


def chat_eval_windows(folder: Path, n_windows: int, ctx: int = CTX,
                      windows_json: Path | None = None) -> tuple[list[list[int]], dict]:
    """Up to n_windows windows of held-out chat: windows.json's heldout_chat + heldout_chat_slice when it has them
    (what SAE training left out), else the eval shards in `folder` (none when it has none)."""
    from app.training import chat as chat_mod
    from app.training.corpus import pack_windows

    if n_windows > 0 and windows_json is not None and windows_json.exists():
        w = json.loads(windows_json.read_text())
        if w.get("heldout_chat_slice"):
            got = [list(x) for x in w.get("heldout_chat", []) + w["heldout_chat_slice"]][:n_windows]
            return got, {"source": str(windows_json), "sets": ["heldout_chat", "heldout_chat_slice"],
                         "available": len(w.get("heldout_chat", [])) + len(w["heldout_chat_slice"]), "windows": len(got)}
    if n_windows <= 0 or not folder.exists():
        return [], {"source": str(folder), "windows": 0}
    rows = chat_mod.read_shards(folder, "eval")
    windows = pack_windows([list(r.ids) for r in rows], ctx, sep=[])[:n_windows]
    return windows, {"source": str(folder), "split": "eval", "transcripts": len(rows), "windows": len(windows)}


def mixed_windows(corpus: list[list[int]], chat: list[list[int]], n_windows: int, seed: int = 1) -> list[list[int]]:
    """The chat windows and enough corpus windows to make n_windows, shuffled together (seeded)."""
    out = chat + corpus[: max(0, n_windows - len(chat))]
    random.Random(seed).shuffle(out)
    return out


def corpus_windows(kind: str, profile, tokenizer, n_windows: int, ctx: int = CTX) -> tuple[list[list[int]], dict]:
    """(windows, description) for the atlas corpus."""
    from app.engine.profiles import DATA_DIR

    held = DATA_DIR / "cache" / "training" / profile.name / "windows.json"
    if kind == "auto":
        kind = "heldout" if held.exists() else "offline"
    sep = tokenizer.encode("\n\n", add_special_tokens=False)
    if kind == "heldout":
        if not held.exists():
            raise FileNotFoundError(f"{held} does not exist; train the SAEs first or use --corpus offline")
        windows = json.loads(held.read_text())["heldout"]
        return [list(w) for w in windows[:n_windows]], {"source": "heldout", "path": str(held),
                                                        "note": "held-out slice of the SAE training corpus"}
    if kind == "offline":
        from app.training import corpus as corpus_mod

        scale = min(1.0, 1.5 * n_windows * ctx / sum(s.token_budget for s in corpus_mod.SOURCES))
        docs, record = corpus_mod.build_corpus(tokenizer, seed=1, scale=scale)
        windows = corpus_mod.pack_windows(docs, ctx, sep)
        random.Random(1).shuffle(windows)
        return windows[:n_windows], {"source": "offline", "record": record}
    path = Path(kind)
    if not path.exists():
        raise FileNotFoundError(f"--corpus {kind}: not heldout, offline or an existing file")
    docs = [tokenizer.encode(d, add_special_tokens=False) for d in path.read_text(encoding="utf-8").split("\n\n") if d.strip()]
    from app.training.corpus import pack_windows

    return pack_windows(docs, ctx, sep)[:n_windows], {"source": "file", "path": str(path)}


def run(args) -> int:
    from tqdm import tqdm

    from app.core.settings import Settings
    from app.engine import atlas as at
    from app.engine.engine import Engine
    from app.engine.loading import ProfileUnavailable

    settings = Settings(profile=args.profile)
    if args.upgrade:  # no model needed
        from app.engine.profiles import get_profile

        out = Path(args.out) if args.out else at.default_atlas_dir(get_profile(args.profile), getattr(settings, "atlas_root", None))
        from app.engine.atlas.compact import upgrade

        t0 = time.perf_counter()
        small = upgrade(out, args.cofire_tokens)
        if small is None:
            print(f"error: {out} holds no version-1 atlas to upgrade", file=sys.stderr)
            return 2
        layout = out / "layout.npz"  # the map depends on the decoders only: it stays valid, keep it
        kept = layout.read_bytes() if layout.exists() else None
        at.save_atlas(small, out)
        if kept is not None:
            layout.write_bytes(kept)
        print(f"atlas: {out} upgraded to the compact form in {time.perf_counter() - t0:.0f}s, "
              f"{at.folder_bytes(out) / 1e6:.1f} MB")
        return 0
    try:
        eng = Engine.build(args.profile, args.device, atlas_root=getattr(settings, "atlas_root", None))
    except ProfileUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else eng.atlas_dir
    n_windows = max(1, -(-args.tokens // CTX))
    from app.engine.profiles import DATA_DIR

    chat_dir = Path(args.chat_dir) if args.chat_dir else DATA_DIR / "chat" / eng.profile.name
    try:
        chat, chat_info = chat_eval_windows(chat_dir, int(n_windows * max(0.0, min(1.0, args.chat_share))),
                                            windows_json=DATA_DIR / "cache" / "training" / eng.profile.name / "windows.json"
                                            if args.corpus in ("auto", "heldout") else None)
        windows, corpus = corpus_windows(args.corpus, eng.profile, eng.tokenizer, n_windows - len(chat))
    except (FileNotFoundError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if chat:
        windows = mixed_windows(windows, chat, n_windows)
        corpus = {**corpus, "chat": chat_info, "chat_share": round(len(chat) / max(1, len(windows)), 4)}
    if not windows:
        print("error: the corpus gave no windows", file=sys.stderr)
        return 2
    work = out.with_name(out.name + ".partial")
    fp = at.atlas_fingerprint(eng.profile.name, eng.hook_name, eng.fingerprint)
    meta = {"profile": eng.profile.name, "model": eng.profile.display, "corpus": corpus,
            "saes": {n: int(s.cfg.d_sae) for n, s in eng.saes.items()}, "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    with tqdm(total=len(windows) * len(windows[0]), unit="tok", desc=f"atlas {eng.profile.name}") as bar:
        def progress(done, total):
            bar.update(done - bar.n)

        with eng.background_session():
            atlas = at.build_atlas(eng.model, eng.saes, windows, eng.hook_name, fingerprint=fp,
                                   sink_norm=eng.profile.sink_norm, batch_size=args.batch_size,
                                   chunk_windows=args.chunk_windows, work_dir=work, progress=progress, meta=meta,
                                   cofire_tokens=args.cofire_tokens)
    at.save_atlas(atlas, out)
    shutil.rmtree(work, ignore_errors=True)
    mb = at.folder_bytes(out) / 1e6
    print(f"atlas: {len(atlas.tokens)} tokens ({atlas.n_valid} counted), {atlas.meta['seconds']:.0f}s, "
          f"{mb:.1f} MB in {out}; chat share {corpus.get('chat_share', 0.0):.0%}")
    return 0
