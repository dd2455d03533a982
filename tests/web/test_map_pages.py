"""The map page and its fragment (tiny profile): the figure carries every feature, the honesty figure is the
layout's, the fragment's address re-opens the same view, the form's fields parse like the JSON body."""
from __future__ import annotations

import json
import re
from urllib.parse import urlencode

import pytest

from app.api.map import service
from app.web.map_pages import CODEC, parse_inputs
from tests.viz.test_map import expanded


@pytest.fixture(scope="module")
def tiny_layout(tiny_engine):
    lay, status = service.layout_status(tiny_engine)
    assert lay is not None, status
    return lay


def figure_of(html: str, fid: str) -> dict:
    m = re.search(rf'(?:data-figure="{fid}"|id="{fid}-data")[^>]*>(.*?)</script>', html, re.S)
    assert m, fid
    return json.loads(m.group(1))


def test_map_page_has_every_feature_and_the_honesty_figure(tiny_client, tiny_layout):
    r = tiny_client.get("/map")
    assert r.status_code == 200
    fig = figure_of(r.text, "map-main")
    pts = {(t["customdata"][i][0], t["customdata"][i][1]): (t["x"][i], t["y"][i]) for t in expanded(fig) for i in range(len(t["x"]))}
    assert len(pts) == 64 + 512
    assert pts[("fine", 10)] == pytest.approx(tuple(tiny_layout.xy[64 + 10]), abs=1e-3)
    assert all(t["type"] == "scattergl" for t in fig["data"])
    assert len(fig["layout"]["shapes"]) == sum(1 for reg in tiny_layout.regions if len(reg.hull) >= 3)
    assert f"{100 * tiny_layout.preservation:.1f} %" in r.text
    assert "not</b> cosines" in r.text
    fine_only = figure_of(tiny_client.get("/map?show=fine&color_by=density").text, "map-main")
    assert sum(len(t["x"]) for t in fine_only["data"]) == 512


def test_plotly_bundle_is_the_csp_strict_build():
    """The CSP has no 'unsafe-eval': scattergl's regl shaders must ship precompiled (Plotly's strict bundle) or WebGL fails."""
    from app.core.settings import ROOT

    head = (ROOT / "static" / "plotly.min.js").read_text()[:200]
    assert "plotly.js (strict - minified) v4.1.1" in head


class _Atlas:
    """Just what the hover snippet reads: window length, token ids, each feature's top row, token strings."""
    ctx, tokens = 8, list(range(8))
    summaries = {"fine": {"top_rows": {5: [3]}}}

    def tok(self, i: int) -> str:
        return ["A", " cat", " <b>", " sat\n", "x", "y", "z", "w"][i]


def test_hover_example_is_fetched_per_point_not_sent_with_the_map(tiny_client, tiny_engine, tiny_layout, monkeypatch):
    page = tiny_client.get("/map").text
    fig = figure_of(page, "map-main")
    assert all(row[3] == "" for t in expanded(fig) for row in t["customdata"])  # map.js fills it on first hover
    assert 'data-figure="map-main"' not in page  # map.js draws it (one parse), not figures.js
    monkeypatch.setattr(tiny_engine, "atlas", _Atlas())
    r = tiny_client.get("/map/example/fine/5")
    assert r.status_code == 200 and r.json() == {"sae": "fine", "index": 5, "example": "A cat &lt;b&gt;[ sat⏎]"}
    assert tiny_client.get("/map/example/fine/512").status_code == 404 and "(0..511)" in tiny_client.get("/map/example/fine/512").text
    assert tiny_client.get("/map/example/middle/1").status_code == 404


def test_figure_json_colour_by_cosine(tiny_client, tiny_engine, tiny_layout):
    import numpy as np

    r = tiny_client.get("/map/figure?color_by=cosine&feature=coarse:2")
    assert r.status_code == 200
    fig = r.json()
    W = np.vstack([tiny_engine.saes[n].W_dec.detach().float().numpy() for n in ("coarse", "fine")])
    v = W[2] / np.linalg.norm(W[2])
    cos = W @ v / np.linalg.norm(W, axis=1)
    got = fig["data"][0]["marker"]["color"] + fig["data"][1]["marker"]["color"]
    np.testing.assert_allclose(got, cos, atol=2e-3)
    assert tiny_client.get("/map/figure?color_by=purple").status_code == 422


def test_a_chosen_feature_outside_its_sae_is_named_not_ignored(tiny_client, tiny_engine, tiny_layout):
    width = int(tiny_engine.saes["fine"].W_dec.shape[0])
    r = tiny_client.get(f"/map/figure?color_by=cosine&feature=fine:{width}")
    assert r.status_code == 404
    assert r.json()["detail"][0]["loc"] == ["query", "feature"] and f"(0..{width - 1})" in r.json()["detail"][0]["msg"]
    assert tiny_client.get(f"/map/figure?color_by=cosine&feature=fine:{width - 1}").status_code == 200
    bad = tiny_client.get("/map/figure?feature=fine:x").json()["detail"][0]
    assert bad["loc"] == ["query", "feature"]
    # the page draws the default map and says what it could not do, in place
    page = tiny_client.get(f"/map?color_by=cosine&feature=fine:{width}")
    assert page.status_code == 404
    box = page.text.split('id="map-view-error"', 1)[1].split('id="map-main"', 1)[0]  # above the map, where map.js says
    assert "Could not draw the map as asked" in box
    assert f"feature: feature index {width} does not exist: SAE fine has {width} features (0..{width - 1})" in box
    assert f'value="fine:{width}"' in page.text  # the field keeps what was asked, to correct it
    assert figure_of(page.text, "map-main")["data"]  # the map is still there
    page = tiny_client.get("/map?color_by=purple")
    assert page.status_code == 422 and "color_by:" in page.text.split('id="map-view-error"', 1)[1]


def test_fragment_and_its_address(tiny_client, tiny_layout):
    form = {"prompt": "Tell me about cats.", "system_prompt": "You are a pirate.", "compare_system": "1",
            "drift_ks": "0,1", "color_by": "density", "steer_sae": "coarse", "steer_index": "", "steer_strength": ""}
    r = tiny_client.post("/fragments/map", data=form)
    assert r.status_code == 200, r.text[:500]
    push = r.headers["HX-Push-Url"]
    assert push.startswith("/map?") and "color_by=density" in push and "drift_ks=%5B0%2C1%5D" in push
    assert 'id="map-pull"' in r.text and 'id="map-drift"' in r.text and 'class="save-box"' in r.text
    page = tiny_client.get(push)
    assert page.status_code == 200
    a = figure_of(r.text, "map-paths-fig")
    b = figure_of(page.text, "map-paths-fig")
    assert a == b and [t["name"] for t in a["data"]] == ["prompt", "without system prompt"]
    assert 'value="density" selected>fire density' in page.text


def test_form_fields_parse_like_the_json_body():
    req = parse_inputs({"prompt": "hi", "steer_sae": "fine", "steer_index": "4", "steer_strength": "-2.5",
                        "drift_ks": "4, 0,2", "compare_system": "0"})
    assert req.steer[0].sae == "fine" and req.steer[0].index == 4 and req.steer[0].strength == -2.5
    assert req.drift_ks == [0, 2, 4] and req.compare_system is False
    url = CODEC.write(req.model_dump())
    again = parse_inputs(_query(url))
    assert again == req


def _query(url: str) -> dict:
    from urllib.parse import parse_qsl, urlparse

    return dict(parse_qsl(urlparse(url).query))


def test_bad_form_is_a_422_fragment(tiny_client, tiny_layout):
    r = tiny_client.post("/fragments/map", data={"prompt": "x", "drift_ks": "1,2,x"})
    assert r.status_code == 422 and "drift_ks" in r.text
    r = tiny_client.get("/map/feature/fine/600")
    assert r.status_code == 404 and "(0..511)" in r.text
    r = tiny_client.get("/map?" + urlencode({"prompt": "x", "steer": json.dumps([{"sae": "coarse", "index": 70, "strength": 1}])}))
    assert r.status_code == 404 and "(0..63)" in r.text
