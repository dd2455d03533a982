"""Which system prompt the model read (issue 25 item 2). A chat template may insert its own default system prompt
when none is given (SmolLM2: "You are a helpful AI assistant named SmolLM, trained by Hugging Face"); every chat
view says so, found by rendering the template (not from a list of models), and offers a true "none" (an empty
system turn) where the template leaves the default out for one. The tiny profile gets a SmolLM2-style template."""
from __future__ import annotations

import html as H
import re

import pytest

from app.engine.prompts import encode_prompt, template_system
from app.engine.tiny import CHAT_TEMPLATE, byte_tokenizer
from tests.conftest import make_client

DEFAULT = "You are Tiny, a test model"
WITH_DEFAULT = (  # SmolLM2's template with another default text
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\n" + DEFAULT + "<|im_end|>\\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
STUBBORN = (  # inserts the default whenever the system message is empty: no true none
    "{% if messages[0]['role'] != 'system' or not messages[0]['content'] %}{{ 'SYS: " + DEFAULT + "\\n' }}{% endif %}"
    "{% for m in messages %}{% if m['content'] %}{{ m['role'] + ': ' + m['content'] + '\\n' }}{% endif %}{% endfor %}")
NO_SYSTEM = "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}{{ m['content'] }}{% endfor %}"


def tok_with(template):
    t = byte_tokenizer()
    t.chat_template = template
    return t


def test_template_default_found_by_rendering():
    ts = template_system(tok_with(WITH_DEFAULT))
    assert ts.default == DEFAULT and ts.can_omit and ts.supports_system
    assert template_system(tok_with(CHAT_TEMPLATE)).default is None  # tiny's own template adds none
    stubborn = template_system(tok_with(STUBBORN))
    assert DEFAULT in stubborn.default and not stubborn.can_omit
    assert template_system(tok_with(NO_SYSTEM)).supports_system is False
    t = byte_tokenizer()
    t.chat_template = None
    assert template_system(t) is None


def test_encode_says_what_the_model_read():
    t = tok_with(WITH_DEFAULT)
    ep = encode_prompt(t, "hi", None, True)
    assert (ep.system, ep.system_source) == (DEFAULT, "template default") and DEFAULT in ep.text
    none = encode_prompt(t, "hi", None, True, no_default_system=True)
    assert (none.system, none.system_source) == ("", "none") and DEFAULT not in none.text
    assert none.text == "<|im_start|>system\n<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    given = encode_prompt(t, "hi", "Be brief.", True)
    assert (given.system, given.system_source) == ("Be brief.", "given") and DEFAULT not in given.text
    stubborn = encode_prompt(tok_with(STUBBORN), "hi", None, True, no_default_system=True)
    assert stubborn.system_source == "template default" and DEFAULT in stubborn.text  # no true none: it says so
    plain = encode_prompt(t, "hi", None, False)
    assert (plain.system, plain.system_source, plain.text) == (None, "none", "hi")


@pytest.fixture()
def default_client(tiny_engine, monkeypatch):
    monkeypatch.setattr(tiny_engine.tokenizer, "chat_template", WITH_DEFAULT)
    tiny_engine.__dict__.pop("_template_system", None)
    with make_client(tiny_engine) as c:
        yield c
    tiny_engine.__dict__.pop("_template_system", None)


def test_temperature_views_say_the_template_default(default_client):
    c = default_client
    body = c.post("/api/temperature", json={"prompt": "Hi", "chat": True}).json()
    assert body["system"]["source"] == "template default" and body["system"]["text"] == DEFAULT
    assert DEFAULT in body["prompt_text"]
    frag = H.unescape(c.post("/fragments/temperature", data={"prompt": "Hi", "chat": "on"}).text)
    assert "the chat template's default" in frag and DEFAULT in frag and "no system prompt" not in frag
    none = c.post("/api/temperature", json={"prompt": "Hi", "chat": True, "no_default_system": True}).json()
    assert none["system"]["source"] == "none" and none["system"]["text"] == "" and DEFAULT not in none["prompt_text"]
    # system shift: A empty is the template's default, not "no system prompt"
    shift = c.post("/fragments/system_shift", data={"prompt": "Hi", "system_b": "You are a pirate.", "chat": "on"})
    text = H.unescape(shift.text)
    assert "A = the chat template’s default" in text and "A = no system prompt" not in text
    assert re.search(r"A: the system prompt the model read:\s*<b>the chat template's default</b> “" + DEFAULT, text)
    true_none = H.unescape(c.post("/fragments/system_shift", data={"prompt": "Hi", "system_b": "You are a pirate.",
                                                                   "chat": "on", "no_default_system": "on"}).text)
    assert "A = no system prompt" in true_none and "an empty system turn" in true_none
    page = H.unescape(c.get("/temperature").text)
    assert 'name="no_default_system"' in page and DEFAULT in page and "(empty = none)" not in page


@pytest.mark.parametrize("path,api,fields", [
    ("/fragments/analysis", "/api/analyze", {"prompt": "Hi", "chat": "on"}),
    ("/fragments/attribution", "/api/attribution", {"prompt": "Hi", "chat": "on", "n_validate": "0"}),
    ("/fragments/generation", "/api/generate", {"prompt": "Hi", "chat": "on", "max_new_tokens": "2"}),
])
def test_chat_views_name_the_system_prompt_read(default_client, path, api, fields):
    c = default_client
    body = {k: (True if v == "on" else int(v) if v.isdigit() else v) for k, v in fields.items()}
    assert c.post(api, json=body).json()["system"]["text"] == DEFAULT
    r = c.post(path, data=fields)
    assert r.status_code == 200, r.text
    assert "System prompt the model read:" in r.text and "the chat template's default" in H.unescape(r.text)
    r = c.post(path, data={**fields, "no_default_system": "on"})
    line = re.search(r"System prompt the model read:(.*?)</p>", r.text, re.S).group(1)
    assert "<b>none</b>" in line and "an empty system turn" in line


def test_no_default_address_round_trip(default_client):
    c = default_client
    r = c.get("/", params={"prompt": "Hi", "chat": "on", "no_default_system": "on"})
    assert re.search(r'name="no_default_system" value="on" checked', r.text)
    assert "<b>none</b>" in r.text
    g = c.get("/generate", params={"prompt": "Hi", "chat": "on", "no_default_system": "on", "view": "generation",
                                   "max_new_tokens": "2"})
    assert re.search(r'name="no_default_system" value="on" checked', g.text) and "<b>none</b>" in g.text


@pytest.mark.embedded
def test_embedded_smollm2_default_is_named(embedded_engine):
    smol = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
    with make_client(embedded_engine) as c:
        body = c.post("/api/tokenize", json={"prompt": "Hi", "chat": True}).json()
        assert body["n_tokens"] > len(embedded_engine.tokenizer.encode("Hi"))
        t = c.post("/api/temperature", json={"prompt": "Hi", "chat": True, "top_n": 3}).json()
        assert t["system"] == {"source": "template default", "text": smol, "default": smol, "can_omit": True, "chat": True}
        n = c.post("/api/temperature", json={"prompt": "Hi", "chat": True, "top_n": 3, "no_default_system": True}).json()
        assert n["system"]["text"] == "" and smol not in n["prompt_text"]
        assert n["prompt_text"].startswith("<|im_start|>system\n<|im_end|>\n<|im_start|>user\nHi")


def test_map_pull_compares_with_what_the_model_read(default_client, tiny_engine):
    """The map's 'without system prompt' run is the template's default unless none is asked for; both are named."""
    from app.api.map import service

    assert service.layout_status(tiny_engine)[0] is not None
    c = default_client
    body = {"prompt": "Tell me about cats.", "system_prompt": "You are a pirate.", "max_new_tokens": 2}
    res = c.post("/api/map/path", json=body).json()
    assert res["system"]["source"] == "given" and res["without_system"]["source"] == "template default"
    from app.engine.tokens import token_texts

    ids = encode_prompt(tiny_engine.tokenizer, body["prompt"], None, True).token_ids  # the default inserted
    assert [p["token"] for p in res["paths"][1]["points"]] == token_texts(tiny_engine.tokenizer, ids)
    none = c.post("/api/map/path", json={**body, "no_default_system": True}).json()
    assert none["without_system"]["source"] == "none" and none["without_system"]["text"] == ""
    ids = encode_prompt(tiny_engine.tokenizer, body["prompt"], None, True, no_default_system=True).token_ids
    assert [p["token"] for p in none["paths"][1]["points"]] == token_texts(tiny_engine.tokenizer, ids)
    frag = H.unescape(c.post("/fragments/map", data={**{k: str(v) for k, v in body.items()}}).text)
    assert "Without: the system prompt the model read:" in frag and "the chat template's default" in frag
