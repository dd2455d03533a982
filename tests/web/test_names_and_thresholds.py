"""Names and defaults agree (issue 25 item 9): Discover's split-map links carry the cosine threshold its GO/NO-GO
table counted with, so the split map lists the same children (recounted here with numpy over the decoders); a
feature is named one way ("C-12", "F-7": app.viz.names.feature_name) on every page."""
from __future__ import annotations

import html as H
import re
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest

from app.explorations.registry import snapshot_context
from app.viz.names import feature_name
from tests.api.test_discover import BODY


def unit(W):
    W = W.detach().float().numpy().astype(np.float64)
    return W / np.linalg.norm(W, axis=1, keepdims=True)


def test_feature_name():
    assert feature_name("coarse", 1332) == "C-1332" and feature_name("fine", 7) == "F-7" and feature_name("x", 2) == "x-2"


@pytest.mark.parametrize("threshold", [0.3, 0.2])
def test_discover_split_links_carry_the_threshold(planted, threshold):
    from app.api.discover import DiscoverRequest, run_discovery

    eng, C, client = planted
    req = DiscoverRequest.model_validate({**BODY, "cos_threshold": threshold})
    res = run_discovery(eng, client.app.state.settings, req)
    ctx = snapshot_context("discovery", req, res)
    html = client.app.state.templates.env.get_template("fragments/discovery.html").render(ctx)
    rows = ctx["result"]["mapping"]["coarse"]
    links = [H.unescape(h) for h in re.findall(r'<a class="split-link" href="([^"]+)"', html)]
    assert len(links) == len(rows) and links
    cos = unit(eng.saes["fine"].W_dec) @ unit(eng.saes["coarse"].W_dec).T  # [fine, coarse]
    for c, href in zip(rows, links):
        q = parse_qs(urlsplit(href).query)
        assert int(q["coarse"][0]) == c and float(q["child_cos"][0]) == threshold
        want = int((cos[:, c] >= threshold).sum())  # what the GO/NO-GO table counts
        assert f"split map (cos ≥ {threshold})" in html
        split = client.post("/api/splits", json={"coarse": c, "child_cos": float(q["child_cos"][0])}).json()
        assert split["dictionary"]["n_children"] == want, (c, want)
        page = client.get(href)
        assert page.status_code == 200 and f"cosine ≥ {threshold} to {feature_name('coarse', c)}" in page.text


def test_one_name_form_on_every_feature_view(planted):
    eng, C, client = planted
    pages = {
        "feature page": client.get(f"/features/coarse/{C}").text,
        "card": client.post("/fragments/feature", data={"sae": "coarse", "index": C, "prompt": "The capital"}).text,
        "attribution": client.post("/fragments/attribution", data={"prompt": "The capital", "n_validate": "0"}).text,
        "search": client.get("/search", params={"q": "Paris", "mode": "text"}).text,
        "steer": client.get("/generate", params={"prompt": "Hi", "f": f"coarse:{C}:add:2", "view": "steer",
                                                 "max_new_tokens": "2"}).text,
    }
    assert f"<title>{feature_name('coarse', C)} ·" in pages["feature page"]
    assert f"<h2>{feature_name('coarse', C)} " in pages["card"]
    for name, text in pages.items():
        assert not re.search(r"\b(coarse|fine) ?#\d", text), name  # the old "coarse #12" form
        assert re.search(r"\b[CF]-\d+", text), name
