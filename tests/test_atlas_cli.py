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
