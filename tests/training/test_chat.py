"""app.training.chat and chat_turns: user turns split by topic, resumable shards, replies equal the engine's decode."""
from __future__ import annotations

import gzip
import json

import pytest

from app.engine.generation import generate, stop_token_ids
from app.engine.prompts import encode_prompt
from app.engine.sampling import SamplingParams
from app.training import chat
from app.training.chat_turns import EVAL_SHARE, build_user_turns

POOLS = {"noun": [f"thing{i}" for i in range(300)], "verb": ["run", "jump", "sing"], "adj": ["red", "quick"],
         "country": [f"Land{i}" for i in range(60)], "passage": [f"Passage number {i}. It says things." for i in range(80)],
         "quote": [f"Quote {i} is witty." for i in range(80)], "code": [f"x = {i}\nprint(x)" for i in range(30)],
         "term": ["os.path", "json.loads"]}


def test_turns_are_distinct_seeded_and_split_by_topic():
    turns = build_user_turns(600, seed=3, pools=POOLS)
    assert len(turns) == 600 and len({t.id for t in turns}) == 600
    assert [t.id for t in build_user_turns(600, seed=3, pools=POOLS)] == [t.id for t in turns]
    eval_slots = {t.slot.lower() for t in turns if t.split == "eval"}
    train_slots = {t.slot.lower() for t in turns if t.split == "train"}
    assert eval_slots and not eval_slots & train_slots  # no eval topic is asked about in a training transcript
    assert 0.0 < sum(t.split == "eval" for t in turns) / len(turns) < 3 * EVAL_SHARE
    assert 0.25 < sum(t.system is not None for t in turns) / len(turns) < 0.55
    assert len({t.kind for t in turns}) >= 8


@pytest.fixture()
def tiny_turns():
    return build_user_turns(70, seed=1, pools=POOLS)


def test_greedy_shard_rows_equal_unbatched_decode(tiny_engine, tiny_turns, tmp_path, monkeypatch):
    monkeypatch.setattr(chat, "SETTINGS", [(0.0, 1.0)])
    split, index, rows = chat.shard_plan(tiny_turns)[0]
    path = chat.generate_shard(tiny_engine.model, tiny_engine.tokenizer, split, index, rows[:5], tmp_path, max_new_tokens=12)
    got = chat.read_shards(tmp_path)
    assert [t.turn_id for t in got] == [r.id for r in rows[:5]] and path.exists()
    stops = stop_token_ids(tiny_engine.tokenizer)
    for t, r in zip(got, rows[:5]):
        prompt = encode_prompt(tiny_engine.tokenizer, r.user, r.system, chat=True).token_ids
        want = generate(tiny_engine.model, prompt, 12, SamplingParams(), stops)
        assert t.ids[: t.n_prompt] == tuple(prompt)
        assert t.ids[t.n_prompt:] == want.ids
        assert (t.temperature, t.top_p) == (0.0, 1.0)


def test_shards_resume_and_manifest_counts(tiny_engine, tiny_turns, tmp_path, monkeypatch):
    monkeypatch.setattr(chat, "SHARD_ROWS", 8)
    plan = chat.shard_plan(tiny_turns)
    assert [p[0] for p in plan] == sorted((p[0] for p in plan), key=["eval", "train"].index)  # eval shards first
    assert sum(len(p[2]) for p in plan) == len(tiny_turns)
    for split, index, rows in plan[:2]:
        chat.generate_shard(tiny_engine.model, tiny_engine.tokenizer, split, index, rows, tmp_path, max_new_tokens=6)
    (tmp_path / "train-0099.jsonl.tmp").write_text("half a shard")  # a run killed mid-write leaves no .jsonl.gz
    man = chat.write_manifest(tmp_path, "sha", len(tiny_turns))
    rows = []
    for p in sorted(tmp_path.glob("*.jsonl.gz")):
        with gzip.open(p, "rt") as fh:
            rows += [json.loads(line) for line in fh]
    assert len(rows) == sum(len(p[2]) for p in plan[:2])
    total = sum(s["tokens"] for s in man["splits"].values())
    assert total == sum(len(r["ids"]) for r in rows)
    assert sum(s["transcripts"] for s in man["splits"].values()) == len(rows)
    assert all(r["n_prompt"] < len(r["ids"]) for r in rows)
    done = {p.name for p in tmp_path.glob("*.jsonl.gz")}
    todo = [(s, i) for s, i, _ in plan if chat.shard_path(tmp_path, s, i).name not in done]
    assert len(todo) == len(plan) - 2
