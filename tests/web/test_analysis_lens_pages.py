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


def test_the_switch_is_disabled_and_says_why_without_a_tuned_lens(tiny_client, tiny_engine):
    assert tiny_engine.tuned_lens is None
    page = tiny_client.post("/fragments/analysis/lens", data={"prompt": PROMPT, "lens": "1"}).text
    tuned = re.search(r'<button[^>]*value="tuned"[^>]*>', page).group(0)
    assert "disabled" in tuned and 'aria-describedby="lens-why"' in tuned
    why = re.search(r'id="lens-why">(.*?)</span>', page, flags=re.S).group(1)
    assert "no tuned lens in data/lens/tiny" in html.unescape(why) and "make lens" in html.unescape(why)
    strip = figure(page, "lens-kl-fig")  # the KL strip: one cell per layer, the logit lens's mean KL
    api = tiny_client.post("/api/lens", json={"prompt": PROMPT}).json()
    assert strip["data"][0]["text"][0] == [f"{v:.2f}" if v < 9.995 else f"{v:.1f}" for v in api["kl_mean"]]


def test_the_switch_reads_the_tuned_lens_and_pushes_its_address(tiny_engine, tmp_path):
    import torch

    from app.engine import tuned_lens as TL
    from tests.conftest import make_client

    m = tiny_engine.model
    n, d = m.cfg.n_layers, m.cfg.d_model
    lens = TL.TunedLens(torch.eye(d) + 0.4 * torch.randn(n, d, d, generator=torch.Generator().manual_seed(2)),
                        torch.zeros(n, d))
    TL.save_tuned_lens(lens, tmp_path / "tiny", "tiny")
    before = tiny_engine.tuned_lens, tiny_engine.tuned_lens_status
    tiny_engine.load_tuned_lens(tmp_path)
    try:
        with make_client(tiny_engine) as client:
            first = client.post("/fragments/analysis/lens", data={"prompt": PROMPT, "lens": "1"})
            assert "HX-Push-Url" not in first.headers  # the deferred lens keeps the address the analysis pushed
            tuned = re.search(r'<button[^>]*value="tuned"[^>]*>', first.text).group(0)
            assert "disabled" not in tuned and 'aria-pressed="false"' in tuned
            vals = json.loads(html.unescape(re.search(r'class="lens-switch"[^>]*hx-vals="(.*?)"', first.text).group(1)))
            assert vals["switch"] == "1" and "lens_kind" not in vals
            r = client.post("/fragments/analysis/lens", data=vals | {"lens_kind": "tuned"})
            assert r.status_code == 200 and "Tuned lens" in r.text
            assert "lens_kind=tuned" in r.headers["HX-Push-Url"]
            assert re.search(r'<input type="hidden" name="lens_kind" id="lens-kind-field" value="tuned" hx-swap-oob', r.text)
            api = client.post("/api/lens", json={"prompt": PROMPT, "lens_kind": "tuned"}).json()
            assert figure(r.text, "lens-fig")["data"][0]["z"] == [[c[0] for c in row] for row in api["top_probs"]]
            saved = json.loads(html.unescape(re.search(r'name="inputs" value="(.*?)"', r.text).group(1)))
            assert saved["lens_kind"] == "tuned"
            page = client.get("/?prompt=The+cat+sat&lens_kind=tuned")  # the pushed address reproduces the view
            assert page.status_code == 200 and "Tuned lens" in page.text
    finally:
        tiny_engine.tuned_lens, tiny_engine.tuned_lens_status = before
