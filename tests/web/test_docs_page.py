"""/docs without a network: Swagger UI from static/ under the app's one strict CSP; /redoc sends there. The logit
lens figure outlines the row the SAEs read."""
from __future__ import annotations

import re

from app.http.middleware import CSP
from app.viz.lens import lens_figure, sae_row


def test_docs_page_is_local_and_strict(tiny_client):
    r = tiny_client.get("/docs")
    assert r.status_code == 200 and r.headers["content-security-policy"] == CSP
    assert not re.search(r"(src|href)=\"(https?:)?//", r.text)  # nothing from another host
    for asset in ("/static/swagger-ui/swagger-ui-bundle.js", "/static/swagger-ui/swagger-ui.css", "/static/docs.js"):
        assert asset in r.text and tiny_client.get(asset).status_code == 200
    assert "<script>" not in r.text  # no inline script: static/docs.js starts Swagger UI
    redoc = tiny_client.get("/redoc", follow_redirects=False)
    assert redoc.status_code == 307 and redoc.headers["location"] == "/docs"
    assert tiny_client.get("/openapi.json").json()["paths"]


def test_lens_row_of_the_sae_hook():
    layers = ["embed", "0", "1", "2"]
    assert [sae_row(layers, h) for h in ("blocks.1.hook_resid_post", "blocks.0.hook_resid_pre", "blocks.2.hook_resid_pre",
                                         "blocks.1.attn.hook_z", None)] == [2, 0, 2, None, None]
    lens = {"layers": layers, "tokens": ["a", "b"], "top_tokens": [[["x"], ["y"]]] * 4, "top_probs": [[[0.5], [0.25]]] * 4}
    fig = lens_figure(lens, "blocks.1.hook_resid_post")
    assert fig["layout"]["yaxis"]["ticktext"] == ["embed", "0", "SAE ▸ 1", "2"]
    assert [(s["y0"], s["y1"], s["x0"], s["x1"]) for s in fig["layout"]["shapes"]] == [(1.5, 2.5, -0.5, 1.5)]
    assert "shapes" not in lens_figure(lens)["layout"]
