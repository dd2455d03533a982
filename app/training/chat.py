"""The model's own chat transcripts for SAE training: user turns -> sampled replies, in resumable shards.

    python -m app.training.chat --profile smollm2-135m [--turns 5700] [--max-shards N]

Each shard is one batch of SHARD_ROWS user turns of one split (eval shards first), rendered with the model's chat
template and answered by the embedded model on the batched fast decoder, with one sampling setting per shard
(recorded). A shard is written whole (temporary file, then rename) as `<split>-<index>.jsonl.gz` under
data/chat/<profile>/, so a killed run resumes at the first missing shard; `manifest.json` beside them sums up
what exists (tokens per split, sources with licences, settings).
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from app.engine.batched import BatchedFastDecoder, BatchState
from app.engine.generation import stop_token_ids
from app.engine.profiles import DATA_DIR
from app.engine.prompts import encode_prompt
from app.engine.sampling import filtered_probs_rows, make_generator
from app.training import corpus as corpus_mod
from app.training.chat_turns import UserTurn, build_user_turns

SHARD_ROWS = 32
MAX_NEW_TOKENS = 200
# (temperature, top_p) per shard, cycled: mostly sampled, some greedy (what the dashboard generates by default).
SETTINGS = [(0.7, 0.9), (0.0, 1.0), (0.7, 0.9), (1.0, 0.95), (0.7, 0.9)]


@dataclass(frozen=True)
class Transcript:
    turn_id: str
    split: str
    kind: str
    source: str
    system: str | None
    user: str
    reply: str
    ids: tuple[int, ...]  # the whole transcript: rendered prompt + reply (stop token included when reached)
    n_prompt: int
    finish: str  # "stop" or "length"
    temperature: float
    top_p: float
    seed: int


@torch.inference_mode()
def sample_batch(model, tokenizer, prompts: list[tuple[int, ...]], max_new_tokens: int, temperature: float,
                 top_p: float, seed: int) -> list[tuple[list[int], str]]:
    """Replies to left-padded prompts on the batched fast decoder; -> [(reply ids, finish)] in prompt order.

    One generator for the batch (seeded), rows sampled together; greedy when temperature is 0.
    """
    stop = set(stop_token_ids(tokenizer))
    pad = getattr(tokenizer, "pad_token_id", None) or 0
    B = len(prompts)
    dec = BatchedFastDecoder(model, B, max(map(len, prompts)) + max_new_tokens, BatchState())
    logits = dec.prefill(prompts, pad).float()
    gen = make_generator(seed)
    out: list[list[int]] = [[] for _ in prompts]
    live = torch.ones(B, dtype=torch.bool)
    for step in range(max_new_tokens):
        if temperature <= 0:
            nxt = logits.argmax(-1)
        else:
            probs = filtered_probs_rows(logits, temperature, top_p)
            nxt = torch.multinomial(probs, 1, generator=gen)[:, 0]
        for b in range(B):
            if live[b]:
                tid = int(nxt[b])
                out[b].append(tid)
                if tid in stop:
                    live[b] = False
        if not bool(live.any()) or step + 1 == max_new_tokens:
            break
        logits = dec.step([int(t) if lv else pad for t, lv in zip(nxt.tolist(), live.tolist())]).float()
    return [(o, "stop" if o and o[-1] in stop else "length") for o in out]


def shard_plan(turns: list[UserTurn]) -> list[tuple[str, int, list[UserTurn]]]:
    """[(split, index, turns)]: eval shards first, then train, SHARD_ROWS turns each, in the turns' order."""
    plan = []
    for split in ("eval", "train"):
        rows = [t for t in turns if t.split == split]
        for i in range(0, len(rows), SHARD_ROWS):
            plan.append((split, i // SHARD_ROWS, rows[i: i + SHARD_ROWS]))
    return plan


def shard_path(folder: Path, split: str, index: int) -> Path:
    return folder / f"{split}-{index:04d}.jsonl.gz"


def generate_shard(model, tokenizer, split: str, index: int, turns: list[UserTurn], folder: Path,
                   max_new_tokens: int = MAX_NEW_TOKENS) -> Path:
    """Generate one shard and write it whole (temp file + rename)."""
    temperature, top_p = SETTINGS[(index + (split == "eval")) % len(SETTINGS)]
    seed = int(hashlib.sha1(f"{split}{index}".encode()).hexdigest()[:8], 16)
    prompts = [encode_prompt(tokenizer, t.user, t.system, chat=True).token_ids for t in turns]
    replies = sample_batch(model, tokenizer, prompts, max_new_tokens, temperature, top_p, seed)
    path = shard_path(folder, split, index)
    tmp = path.with_suffix(".tmp")
    stops = set(stop_token_ids(tokenizer))  # once: it reads the whole vocabulary
    with gzip.open(tmp, "wt", encoding="utf-8") as fh:
        for t, p, (r, fin) in zip(turns, prompts, replies):
            text = tokenizer.decode([i for i in r if i not in stops])
            rec = Transcript(t.id, split, t.kind, t.source, t.system, t.user, text, tuple(p) + tuple(r), len(p), fin,
                             temperature, top_p, seed)
            fh.write(json.dumps(asdict(rec)) + "\n")
    os.replace(tmp, path)
    return path


def read_shards(folder: Path, split: str | None = None) -> list[Transcript]:
    """Every transcript in the finished shards of a split (or all), in shard order."""
    out = []
    for path in sorted(folder.glob("*.jsonl.gz")):
        if split and not path.name.startswith(split + "-"):
            continue
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            for line in fh:
                d = json.loads(line)
                out.append(Transcript(**{**d, "ids": tuple(d["ids"])}))
    return out


def write_manifest(folder: Path, turns_sha: str, n_turns: int) -> dict:
    """manifest.json: tokens, transcripts and shards per split, sources with licences, settings, sha256 of the ids."""
    licences = {s.name: s.licence for s in corpus_mod.SOURCES}
    licences["templates"] = "this project's own text"
    man: dict = {"turns": n_turns, "turns_sha256": turns_sha, "shard_rows": SHARD_ROWS, "max_new_tokens": MAX_NEW_TOKENS,
                 "settings": [{"temperature": t, "top_p": p} for t, p in SETTINGS], "splits": {}, "sources": {}}
    for split in ("eval", "train"):
        rows = read_shards(folder, split)
        h = hashlib.sha256()
        for r in rows:
            h.update(json.dumps(r.ids).encode())
        man["splits"][split] = {"shards": len(list(folder.glob(f"{split}-*.jsonl.gz"))), "transcripts": len(rows),
                                "tokens": sum(len(r.ids) for r in rows), "reply_tokens": sum(len(r.ids) - r.n_prompt for r in rows),
                                "finished_by_stop": sum(r.finish == "stop" for r in rows), "sha256": h.hexdigest()}
        for r in rows:
            for name in r.source.split("+"):
                s = man["sources"].setdefault(name, {"licence": licences.get(name, "?"), "transcripts": 0, "tokens": 0})
                s["transcripts"] += 1
                s["tokens"] += len(r.ids)
    (folder / "manifest.json").write_text(json.dumps(man, indent=2))
    return man


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="smollm2-135m")
    ap.add_argument("--turns", type=int, default=5700, help="5,000 gave ~925 k train tokens; the list is a seeded sequence, so more turns keep the first ones and every full shard")
    ap.add_argument("--max-shards", type=int, default=None, help="stop after this many new shards")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--reverse", action="store_true",
                    help="take the missing shards from the end of the plan: a second process on a free core meets the "
                         "first in the middle (a shard both write is the same bytes: its seed and rows are fixed)")
    ap.add_argument("--device", default="cpu", help="cuda where a GPU is lent: the same shards, minutes not hours")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from app.engine.loading import load_model
    from app.engine.profiles import get_profile

    folder = DATA_DIR / "chat" / args.profile
    folder.mkdir(parents=True, exist_ok=True)
    turns = build_user_turns(args.turns)
    turns_sha = hashlib.sha256(json.dumps([asdict(t) for t in turns]).encode()).hexdigest()
    lm = load_model(get_profile(args.profile), args.device)
    done = 0
    plan = shard_plan(turns)
    for split, index, rows in reversed(plan) if args.reverse else plan:
        if shard_path(folder, split, index).exists():
            continue
        t0 = time.perf_counter()
        path = generate_shard(lm.model, lm.tokenizer, split, index, rows, folder)
        man = write_manifest(folder, turns_sha, len(turns))
        print(f"{path.name} {time.perf_counter() - t0:.0f}s  tokens so far: "
              + ", ".join(f"{k} {v['tokens']}" for k, v in man["splits"].items()), flush=True)
        done += 1
        if args.max_shards and done >= args.max_shards:
            break


if __name__ == "__main__":
    main()
