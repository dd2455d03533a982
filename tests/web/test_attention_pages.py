"""The attention panel of the analysis view (POST /fragments/attention, tiny profile): the payload the canvases are
drawn from against the engine's patterns and DLA (those are checked against HF output_attentions and o_proj inputs
in tests/engine/test_patching.py), the lazy form in the analysis fragment, target choice and bad input."""
from __future__ import annotations

import base64
import html
import json
import re

import numpy as np
import torch

from app.engine import heads as H
from app.viz.attention import dla_colour, top_dla

PROMPT = "The cat sat"


def payload(text: str) -> dict:
    m = re.search(r'<script type="application/json" class="attn-data">(.*?)</script>', text, re.S)
    assert m, text[:2000]
    return json.loads(html.unescape(m.group(1)))


def test_analysis_fragment_folds_the_panel_and_loads_it_on_open(tiny_client):
    r = tiny_client.post("/fragments/analysis", data={"prompt": PROMPT, "lens": "0"})
    assert r.status_code == 200
    assert 'id="attn-panel"' in r.text and "<details" in r.text
    form = re.search(r'<form id="attn-form"[^>]*>', r.text).group(0)
    assert 'hx-post="/fragments/attention"' in form and "toggle once from:#attn-panel" in form
    assert "attn-data" not in r.text  # nothing computed until the panel is opened


def test_panel_patterns_and_dla_are_the_engines(tiny_client, tiny_engine):
    r = tiny_client.post("/fragments/attention", data={"prompt": PROMPT})
    assert r.status_code == 200, r.text
    p = payload(r.text)
    cfg = tiny_engine.model.cfg
    n = len(PROMPT)  # byte tokenizer, no BOS
    assert p["tokens"] == list(PROMPT)
    with torch.inference_mode():
        hp = H.head_patterns(tiny_engine.model, tiny_engine.tokenizer.encode(PROMPT, add_special_tokens=False))  # one full forward: independent of the cache path
    got = np.frombuffer(base64.b64decode(p["patterns"]), dtype=np.uint8).reshape(cfg.n_layers, cfg.n_heads, n, n) / 255
    assert np.abs(got - hp.patterns).max() <= 1 / 510 + 1e-4  # rounding to bytes, the only loss
    dla = np.array([[c["dla"] for c in row] for row in p["cells"]])
    np.testing.assert_allclose(dla, hp.dla, atol=1e-4)
    assert r.text.count('class="attn-cell"') == cfg.n_layers * cfg.n_heads
    i = np.unravel_index(np.abs(hp.dla).argmax(), hp.dla.shape)
    assert f'layer {i[0]} head {i[1]}: DLA {hp.dla[i]:+.3f}' in r.text
    assert p["cells"][i[0]][i[1]]["colour"] in ("#b2182b", "#2166ac")  # the largest |DLA| gets the full colour


def test_target_id_picks_the_token_and_bad_ids_name_the_range(tiny_client, tiny_engine):
    r = tiny_client.post("/fragments/attention", data={"prompt": PROMPT, "target_id": "97"})
    assert r.status_code == 200
    with torch.inference_mode():
        hp = H.head_patterns(tiny_engine.model, tiny_engine.tokenizer.encode(PROMPT, add_special_tokens=False), target=97)
    np.testing.assert_allclose([[c["dla"] for c in row] for row in payload(r.text)["cells"]], hp.dla, atol=1e-4)
    assert 'value="97"' not in r.text or 'aria-pressed="true"' in r.text
    vocab = tiny_engine.model.cfg.d_vocab
    r = tiny_client.post("/fragments/attention", data={"prompt": PROMPT, "target_id": str(vocab)})
    assert r.status_code == 422 and f"0..{vocab - 1}" in html.unescape(r.text) and "target_id" in r.text
    r = tiny_client.post("/fragments/attention", data={"prompt": "x" * 40})
    assert r.status_code == 422 and "max_attention_tokens" in r.text


def test_top_dla_and_colours_against_numpy():
    dla = np.array([[0.5, -2.0, 0.1], [1.5, 0.0, -0.3]])
    top = top_dla({"dla": dla.tolist()}, n=2)
    assert [(h["layer"], h["head"]) for h in top["up"]] == [(1, 0), (0, 0)]
    assert [(h["layer"], h["head"]) for h in top["down"]] == [(0, 1), (1, 2)]
    assert dla_colour(0.0, 2.0) == "#ffffff" and dla_colour(-2.0, 2.0) == "#2166ac" and dla_colour(9, 2.0) == "#b2182b"


def test_no_default_system_is_the_prompt_analyze_read(tiny_engine, monkeypatch):
    """A chat template that inserts a default system prompt: with no_default_system the panel reads the prompt
    without it, as Analyze does (it used to keep the default: other tokens than the analysis above it)."""
    from app.core.settings import Limits
    from app.engine.prompts import encode_prompt
    from tests.conftest import make_client
    from tests.web.test_system_prompt_read import DEFAULT, WITH_DEFAULT

    monkeypatch.setattr(tiny_engine.tokenizer, "chat_template", WITH_DEFAULT)
    want = encode_prompt(tiny_engine.tokenizer, "Hi", None, True, no_default_system=True)
    assert DEFAULT not in want.text
    with make_client(tiny_engine, limits=Limits(max_attention_tokens=128)) as c:
        body = c.post("/api/attention", json={"prompt": "Hi", "chat": True, "no_default_system": True}).json()
    assert len(body["tokens"]) == len(want.token_ids) and DEFAULT not in "".join(body["tokens"])
