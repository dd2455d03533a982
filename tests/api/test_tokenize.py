"""POST /api/tokenize: the token count the forms show as the user types, checked against the tokenizer itself."""
from __future__ import annotations

import pytest

from app.core.settings import Limits
from tests.conftest import make_client


@pytest.fixture(scope="module")
def client(tiny_engine):
    with make_client(tiny_engine, limits=Limits(max_prompt_tokens=40, max_prompt_chars=500)) as c:
        yield c


def test_plain_prompt_counts_raw_text_tokens(client, tiny_engine):
    prompt = "The cat sat on the mat."
    r = client.post("/api/tokenize", json={"prompt": prompt})
    assert r.status_code == 200, r.text
    want = len(tiny_engine.tokenizer.encode(prompt, add_special_tokens=False))
    assert r.json() == {"n_tokens": want, "limit": 40, "n_chars": len(prompt), "max_chars": 500}


def test_system_prompt_counts_the_chat_template(client, tiny_engine):
    tok = tiny_engine.tokenizer
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    r = client.post("/api/tokenize", json={"prompt": "Hi", "system_prompt": "Be brief."})
    assert r.status_code == 200, r.text
    assert r.json()["n_tokens"] == len(tok.encode(text, add_special_tokens=False)) > len("Hi")
    plain = client.post("/api/tokenize", json={"prompt": "Hi", "system_prompt": "Be brief.", "chat": False}).json()
    assert plain["n_tokens"] == len(tok.encode("Be brief.\n\nHi", add_special_tokens=False))


def test_over_the_token_limit_is_counted_not_refused(client, tiny_engine):
    prompt = "x" * 100  # byte tokenizer: 100 tokens, limit 40
    r = client.post("/api/tokenize", json={"prompt": prompt})
    assert r.status_code == 200, r.text
    assert r.json()["n_tokens"] == len(tiny_engine.tokenizer.encode(prompt, add_special_tokens=False)) > 40


def test_over_the_character_limit_is_422_naming_field_and_limit(client):
    r = client.post("/api/tokenize", json={"prompt": "x" * 501})
    assert r.status_code == 422
    (d,) = r.json()["detail"]
    assert d["loc"] == ["body", "prompt"] and "500" in d["msg"] and "max_prompt_chars" in d["msg"]
