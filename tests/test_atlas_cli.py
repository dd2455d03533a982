"""`python -m app atlas` on the tiny profile: builds into the folder the Engine loads from; stale detection."""
from __future__ import annotations

import json

import numpy as np

from app.__main__ import main


def test_atlas_command_builds_what_the_engine_loads(tmp_path, tiny_engine):
    from app.engine.engine import Engine

    text = "\n\n".join(f"Paris is the capital of France. Item {i}: the river Seine and French wine." for i in range(30))
    (tmp_path / "corpus.txt").write_text(text)
    assert main(["atlas", "--profile", "tiny", "--corpus", str(tmp_path / "corpus.txt"), "--tokens", "1500",
                 "--out", str(tmp_path / "root" / "tiny"), "--chunk-windows", "4"]) == 0
    assert not (tmp_path / "root" / "tiny.partial").exists()  # checkpoints removed after a finished build
    meta = json.loads((tmp_path / "root" / "tiny" / "meta.json").read_text())
    assert meta["corpus"]["source"] == "file" and meta["windows"] == 12 and meta["tokens"] == 12 * 128
    eng = Engine.build("tiny", "cpu", atlas_root=tmp_path / "root")
    assert eng.atlas_status == "ok" and eng.atlas is not None
    ids = tiny_engine.tokenizer.encode(text, add_special_tokens=False)
    assert np.array_equal(eng.atlas.tokens[:128], ids[:128])
    meta["fingerprint"] = "tiny|elsewhere"
    (tmp_path / "root" / "tiny" / "meta.json").write_text(json.dumps(meta))
    eng.load_atlas(tmp_path / "root")
    assert eng.atlas is None and eng.atlas_status.startswith("stale") and "python -m app atlas --profile tiny" in eng.atlas_status
    eng.load_atlas(tmp_path / "nowhere")
    assert eng.atlas is None and eng.atlas_status.startswith("missing")


def test_atlas_command_names_a_missing_corpus(tmp_path, capsys):
    assert main(["atlas", "--profile", "tiny", "--corpus", str(tmp_path / "no.txt"), "--out", str(tmp_path / "a")]) == 2
    assert "no.txt" in capsys.readouterr().err


def test_atlas_command_mixes_in_the_held_out_chat_transcripts(tmp_path, tiny_engine):
    """--chat-share of the windows come from data/chat/<profile>/eval-*.jsonl.gz (never the train shards), shuffled
    in with the corpus windows; the share and the source are in meta.json."""
    import gzip

    tok = tiny_engine.tokenizer
    chat = tmp_path / "chat"
    chat.mkdir()
    rows = []
    for i in range(20):
        ids = tok.encode(f"User: question {i} about dogs? Assistant: dogs bark and wag their tails, {i} times.",
                         add_special_tokens=False)
        rows.append({"turn_id": f"t{i}", "split": "eval", "kind": "question", "source": "test", "system": None,
                     "user": "q", "reply": "r", "ids": ids, "n_prompt": 5, "finish": "stop", "temperature": 0.0,
                     "top_p": 1.0, "seed": 0})
    with gzip.open(chat / "eval-0000.jsonl.gz", "wt", encoding="utf-8") as fh:
        fh.write("\n".join(json.dumps(r) for r in rows) + "\n")
    with gzip.open(chat / "train-0000.jsonl.gz", "wt", encoding="utf-8") as fh:  # must not be read
        fh.write(json.dumps({**rows[0], "split": "train", "ids": [7] * 4000}) + "\n")
    text = "\n\n".join(f"Paris is the capital of France. Item {i}: the river Seine and French wine." for i in range(60))
    (tmp_path / "corpus.txt").write_text(text)
    out = tmp_path / "root" / "tiny"
    assert main(["atlas", "--profile", "tiny", "--corpus", str(tmp_path / "corpus.txt"), "--tokens", str(10 * 128),
                 "--out", str(out), "--chat-dir", str(chat), "--chat-share", "0.3", "--cofire-tokens", "512"]) == 0
    meta = json.loads((out / "meta.json").read_text())
    assert meta["windows"] == 10 and meta["corpus"]["chat_share"] == 0.3 and meta["cofire_tokens"] == 512
    assert meta["corpus"]["chat"]["split"] == "eval" and meta["corpus"]["chat"]["windows"] == 3
    stream = [t for r in rows for t in r["ids"]]
    chat_windows = {tuple(stream[i * 128:(i + 1) * 128]) for i in range(3)}
    tokens = np.load(out / "tokens.npy").astype(np.int64).reshape(10, 128)
    got = [tuple(w) for w in tokens.tolist()]
    assert sum(w in chat_windows for w in got) == 3 and 7 not in tokens  # the three chat windows, no train shard


def test_chat_windows_come_from_what_sae_training_left_out(tmp_path):
    """With windows.json's held-out chat sets present the atlas reads them (eval first, then the held-out slice),
    never the eval shards; without the slice it falls back to the shards."""
    from app.cli.atlas import chat_eval_windows

    w = {"heldout_chat": [[1] * 128, [2] * 128], "heldout_chat_slice": [[3] * 128, [4] * 128, [5] * 128],
         "train_chat": [[9] * 128]}
    (tmp_path / "windows.json").write_text(json.dumps(w))
    got, info = chat_eval_windows(tmp_path / "no-shards", 4, windows_json=tmp_path / "windows.json")
    assert [x[0] for x in got] == [1, 2, 3, 4] and info["available"] == 5 and info["windows"] == 4
    (tmp_path / "windows.json").write_text(json.dumps({**w, "heldout_chat_slice": []}))
    got, info = chat_eval_windows(tmp_path / "no-shards", 4, windows_json=tmp_path / "windows.json")
    assert got == [] and info["windows"] == 0
