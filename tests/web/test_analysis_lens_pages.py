"""The analysis fragment draws the features first and asks for the logit lens after (/fragments/analysis/lens),
which reads the residuals the features' forward kept; the Save box then carries the complete result."""
from __future__ import annotations

import html
import json
import re

PROMPT = "The cat sat"


def figure(page: str, div: str) -> dict:
    m = re.search(r'<script type="application/json" data-figure="%s">(.*?)</script>' % div, page, flags=re.S)
    return json.loads(m.group(1))


def test_features_first_then_the_lens_with_the_complete_save(tiny_client, tiny_engine):
    r = tiny_client.post("/fragments/analysis", data={"prompt": PROMPT, "top_k": "7"})
    assert r.status_code == 200
    assert 'data-figure="lens-fig"' not in r.text and 'hx-post="/fragments/analysis/lens"' in r.text
    vals = json.loads(html.unescape(re.search(r'hx-vals="(.*?)"', r.text).group(1)))
    assert vals["prompt"] == PROMPT and vals["top_k"] == 7 and vals["lens"] == "1" and "system_prompt" not in vals
    first = json.loads(html.unescape(re.search(r'name="result" value="(.*?)"', r.text).group(1)))
    assert first["lens"] is None

    calls = []
    with tiny_engine.model.hooks(fwd_hooks=[("hook_embed", lambda a, hook: calls.append(1))]):
        lens_page = tiny_client.post("/fragments/analysis/lens", data={k: str(v) for k, v in vals.items()})
    assert lens_page.status_code == 200
    assert calls == []  # the features' forward kept every layer's residual: no second forward
    api = tiny_client.post("/api/lens", json={"prompt": PROMPT}).json()
    fig = figure(lens_page.text, "lens-fig")
    assert fig["data"][0]["z"] == [[cell[0] for cell in row] for row in api["top_probs"]]
    assert 'hx-swap-oob="innerHTML:#analysis .save-slot"' in lens_page.text
    saved = json.loads(html.unescape(re.search(r'name="result" value="(.*?)"', lens_page.text).group(1)))
    assert saved["lens"]["top_probs"] == api["top_probs"]
    assert [t["saes"]["fine"]["indices"] for t in saved["tokens"]] == [t["saes"]["fine"]["indices"] for t in first["tokens"]]


def test_lens_off_asks_for_nothing_and_bad_lens_input_is_422(tiny_client):
    r = tiny_client.post("/fragments/analysis", data={"prompt": PROMPT, "lens": "0"})
    assert r.status_code == 200 and "/fragments/analysis/lens" not in r.text
    bad = tiny_client.post("/fragments/analysis/lens", data={"prompt": ""})
    assert bad.status_code == 422 and "prompt" in bad.text
