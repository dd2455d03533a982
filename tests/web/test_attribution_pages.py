"""The attribution panel in the analysis view, its fragment and its own page (tiny profile)."""
from __future__ import annotations

import re
from urllib.parse import parse_qs, unquote

PROMPT = "The capital of France is Paris"


def test_analysis_view_has_the_form_defaulting_to_the_last_token(tiny_client):
    r = tiny_client.get("/", params={"prompt": PROMPT})
    n = len(PROMPT)  # byte tokenizer: one token per character
    assert 'id="attr-form"' in r.text and f'id="attr-position" class="num" min="0" max="{n - 1}" value="{n - 1}"' in r.text


def test_fragment_lists_features_with_card_links_and_signed_steering(tiny_client):
    r = tiny_client.post("/fragments/attribution", data={"prompt": PROMPT, "position": "12", "target": "", "top": "8"})
    assert r.status_code == 200, r.text
    body = tiny_client.post("/api/attribution", json={"prompt": PROMPT, "position": 12, "top": 8}).json()
    html = r.text
    assert 'id="attr-table"' in html and 'data-figure="attr-ablation-fig"' in html and 'class="save-box"' in html
    for f in body["features"]:
        assert f'data-sae="{f["sae"]}" data-index="{f["index"]}"' in html
    # steering links carry the sign of the attribution
    links = re.findall(r'href="/generate\?([^"]+)"', html)
    assert len(links) == len(body["features"])
    for f, q in zip(body["features"], links):
        spec = parse_qs(unquote(q.replace("&amp;", "&")))["f"][0]
        sae, idx, mode, val = spec.split(":")
        assert (sae, int(idx), mode) == (f["sae"], f["index"], "add")
        assert (float(val) >= 0) == (f["attribution"] >= 0)
    assert f"{body['correlation']:.3f}" in html


def test_page_and_errors(tiny_client):
    r = tiny_client.get("/attribution", params={"prompt": PROMPT, "position": "3", "n_validate": "2"})
    assert r.status_code == 200 and 'id="attr-table"' in r.text
    r = tiny_client.get("/attribution", params={"prompt": PROMPT, "position": "99"})
    assert r.status_code == 404 and f"0..{len(PROMPT) - 1}" in r.text
    r = tiny_client.post("/fragments/attribution", data={"prompt": PROMPT, "top": "500"})
    assert r.status_code == 422 and "max_features_shown" in r.text
