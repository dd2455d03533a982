"""The attribution target (issue 25 item 1): picked from the model's top next tokens by id (chips, spaces shown as
·), a typed word warned about when its spaced twin is far likelier, and an address with target_id shows the token.
Probabilities are checked against a plain forward of the model (softmax of its last-position logits)."""
from __future__ import annotations

import html as H
import re

import pytest
import torch

from app.engine import attribution as A

PROMPT = "The capital of France is"


def next_probs(engine, text):
    ids = engine.tokenizer.encode(text, add_special_tokens=False)
    with torch.no_grad():
        return engine.model(torch.tensor([ids]))[0, -1].float().softmax(-1)


def test_twin_rule():
    assert A.spaced_twin("Paris") == " Paris" and A.spaced_twin(" Paris") == "Paris" and A.spaced_twin(" ") is None
    assert A.twin_is_meant(0.001, 0.773) and not A.twin_is_meant(0.2, 0.773) and not A.twin_is_meant(0.0001, 0.005)


def test_typed_target_reports_its_twin_probability(tiny_client, tiny_engine):
    body = tiny_client.post("/api/attribution", json={"prompt": PROMPT, "target": "x", "n_validate": 0}).json()
    p = next_probs(tiny_engine, PROMPT)
    space = tiny_engine.tokenizer.encode(" x", add_special_tokens=False)[0]  # byte tokens: " x" starts with " "
    assert body["twin"]["id"] == space and body["twin"]["token"] == " "
    assert body["twin"]["prob"] == pytest.approx(float(p[space]), rel=1e-4)
    assert body["prob"] == pytest.approx(float(p[body["target_id"]]), rel=1e-4)
    assert (body["target_warning"] is not None) == A.twin_is_meant(body["prob"], body["twin"]["prob"])
    top = p.topk(10)
    assert [t["id"] for t in body["next_tokens"]] == top.indices.tolist()
    assert [t["prob"] for t in body["next_tokens"]] == pytest.approx(top.values.tolist(), rel=1e-4)


def test_warning_names_the_twin_and_links_to_it(tiny_client, tiny_engine, monkeypatch):
    monkeypatch.setattr(A, "twin_is_meant", lambda p_target, p_twin: True)
    r = tiny_client.get("/attribution", params={"prompt": PROMPT, "target": "x"})
    page = H.unescape(r.text)
    space = tiny_engine.tokenizer.encode(" ", add_special_tokens=False)[0]
    assert 'id="attr-target-warning"' in r.text and "You typed 'x'" in page
    twin = re.search(r'<a class="chip" id="attr-twin" href="([^"]+)"', page).group(1)
    assert f"target_id={space}" in twin and "prompt=The+capital+of+France+is" in twin
    assert '<span class="ws">·</span>' in re.search(r'id="attr-twin".*?</a>', r.text, re.S).group(0)  # the space shown


def test_address_with_target_id_shows_the_token_in_the_form(tiny_client, tiny_engine):
    tid = tiny_engine.tokenizer.encode("q", add_special_tokens=False)[0]
    r = tiny_client.get("/attribution", params={"prompt": PROMPT, "target_id": tid})
    assert r.status_code == 200
    form = re.search(r'<form id="attr-page-form".*?</form>', r.text, re.S).group(0)
    assert re.search(rf'<input type="radio" name="target_id" value="{tid}" checked>\s*<span class="tokt">q</span>', form)
    assert 'name="target" id="attr-target" size="12" value="q"' in form  # the box is filled, not empty
    # the other choices are the model's top next tokens, by id, with their probabilities
    p = next_probs(tiny_engine, PROMPT)
    chips = [int(i) for i in re.findall(r'name="target_id" value="(\d+)"', form)]
    assert chips[:8] == p.topk(8).indices.tolist()


def test_result_chips_reattribute_by_id(tiny_client, tiny_engine):
    r = tiny_client.post("/fragments/attribution", data={"prompt": PROMPT, "n_validate": "0"})
    links = re.findall(r'<a class="chip next-pick[^"]*" href="/attribution\?([^"]+)"', r.text)
    p = next_probs(tiny_engine, PROMPT)
    assert [int(re.search(r"target_id=(\d+)", q).group(1)) for q in links] == p.topk(6).indices.tolist()


def test_analysis_panel_offers_the_top_next_tokens_by_id(tiny_client, tiny_engine):
    r = tiny_client.get("/", params={"prompt": PROMPT})
    form = re.search(r'<form id="attr-form".*?</form>', r.text, re.S).group(0)
    p = next_probs(tiny_engine, PROMPT)
    assert [int(i) for i in re.findall(r'name="target_id" value="(\d+)"', form)] == p.topk(6).indices.tolist()
    assert re.search(r'<input type="radio" name="target_id" value="" checked>', form)  # default: the top at the position


@pytest.mark.embedded
def test_embedded_paris_without_space_is_warned(embedded_engine):
    """SmolLM2: "Paris" typed is token 38634 (p ~ 0.001); " Paris" (7042) is the one meant (p ~ 0.77)."""
    from tests.conftest import make_client

    with make_client(embedded_engine) as c:
        body = c.post("/api/attribution", json={"prompt": PROMPT, "target": "Paris", "n_validate": 0, "top": 3}).json()
        p = next_probs(embedded_engine, PROMPT)
        assert body["target_id"] == 38634 and body["twin"]["id"] == 7042 and body["twin"]["token"] == " Paris"
        assert body["prob"] == pytest.approx(float(p[38634]), rel=1e-3) and body["prob"] < 0.01
        assert body["twin"]["prob"] == pytest.approx(float(p[7042]), rel=1e-3) and body["twin"]["prob"] > 0.5
        assert "You typed 'Paris'" in body["target_warning"] and "' Paris'" in body["target_warning"]
        page = c.get("/attribution", params={"prompt": PROMPT, "target_id": 7042}).text
        assert re.search(r'value="7042" checked>\s*<span class="tokt"><span class="ws">·</span>Paris</span>', page)
