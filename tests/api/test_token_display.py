"""Byte tokens are shown as their bytes (app/engine/tokens.py) in every view's answer and in the CSV export, never
as "\ufffd". The tiny profile's tokenizer is one token per byte, so "🐶" is four tokens; the expected strings come
from the character's UTF-8 bytes."""
from __future__ import annotations

import csv
import io

from tests.conftest import iter_strings, make_client

PROMPT = "I love 🐶"
DOG = ["<0xF0>", "<0x9F>", "<0x90>", "<0xB6>→🐶"]  # "🐶".encode() == F0 9F 90 B6
STRIP = list("I love ") + DOG


def no_replacement(body, where):
    bad = [s for s in iter_strings(body) if "\ufffd" in s]
    assert not bad, f"{where} shows {bad[:3]}"


def test_every_token_strip_shows_the_bytes(tiny_engine, tmp_path):
    with make_client(tiny_engine, store_url=f"sqlite:///{tmp_path}/e.db") as c:
        an = c.post("/api/analyze", json={"prompt": PROMPT, "lens": True}).json()
        assert [t["token"] for t in an["tokens"]] == STRIP
        assert an["lens"]["tokens"] == STRIP
        no_replacement(an, "analyze")
        at = c.post("/api/attribution", json={"prompt": PROMPT, "n_validate": 0}).json()
        assert at["tokens"] == STRIP
        no_replacement(at, "attribution")
        ge = c.post("/api/generate", json={"prompt": PROMPT, "max_new_tokens": 4}).json()
        assert ge["prompt_tokens"] == STRIP
        no_replacement(ge["prompt_tokens"], "generate")
        fe = c.get("/api/features/fine/3", params={"prompt": PROMPT}).json()
        assert fe["tokens"] == STRIP
        se = c.get("/api/search", params={"q": "🐶", "mode": "text"}).json()
        assert se["query_tokens"] == DOG
        no_replacement(se, "search")
        # the CSV of a saved analysis has the same cells
        saved = c.post("/api/explorations", json={"kind": "analysis", "title": "t", "inputs": {"prompt": PROMPT},
                                                  "result": c.post("/api/analyze", json={"prompt": PROMPT}).json()}).json()
        rows = list(csv.DictReader(io.StringIO(c.get(f"/e/{saved['id']}/export/features.csv").text)))
        assert {int(r["position"]): r["token"] for r in rows} == {p: t for p, t in enumerate(STRIP) if p > 0}
        page = c.get(f"/e/{saved['id']}").text
        assert "\ufffd" not in page and "&lt;0xB6&gt;→🐶" in page


def test_single_tokens_without_context_show_their_byte(tiny_engine, tmp_path):
    """Next-token lists (a token alone) show a byte token as <0xXX>: the tiny model's vocabulary is every byte."""
    from app.core.settings import Limits

    with make_client(tiny_engine, store_url=f"sqlite:///{tmp_path}/e.db", limits=Limits(max_features_shown=300)) as c:
        body = c.post("/api/temperature", json={"prompt": PROMPT, "top_n": 259}).json()
    by_id = {t["id"]: t["token"] for t in body["tokens"]}
    assert len(by_id) == 259
    raw = {tid: tiny_engine.tokenizer.decode([tid]) for tid in by_id}
    for b in range(0x80, 0x100):  # byte b on its own is never a whole character
        tid = tiny_engine.tokenizer.convert_tokens_to_ids(bytes_to_piece(b))
        assert raw[tid] == "\ufffd" and by_id[tid] == f"<0x{b:02X}>"
    assert all(by_id[t] == raw[t] for t in by_id if "\ufffd" not in raw[t])


def bytes_to_piece(b: int) -> str:
    """GPT-2's printable stand-in for a byte (written out here, not taken from the app)."""
    printable = list(range(0x21, 0x7F)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    if b in printable:
        return chr(b)
    return chr(256 + [x for x in range(256) if x not in printable].index(b))
