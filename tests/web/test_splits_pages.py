"""The split map page and fragment, and the links that open it (tiny profile with a planted split + atlas)."""
from __future__ import annotations

import re

from tests.splits_fixtures import HALVES


def test_split_page_shows_children_holes_histogram_and_save(planted):
    eng, C, client = planted
    r = client.get("/splits", params={"coarse": C, "prompt": "The capital of France is Paris."})
    assert r.status_code == 200, r.text
    html = r.text
    assert f"Split map of coarse feature C-{C}" in html
    for h in HALVES:
        assert f'href="/features/fine/{h}"' in html
    for part in ('id="children-table"', 'id="holes-coarse"', 'id="holes-fine"', 'data-figure="split-hist-fig"',
                 'data-figure="split-children-fig"', 'id="split-meta"', 'id="stitch-next"', 'class="save-box"'):
        assert part in html, part
    # the numbers shown are the JSON API's
    body = client.post("/api/splits", json={"coarse": C, "prompt": "The capital of France is Paris."}).json()
    assert f"<b>{body['n_holes']}</b> tokens" in html and f"<b>{body['dictionary']['n_reconstruction']}</b>" in html


def test_fragment_pushes_the_reproducing_address(planted):
    eng, C, client = planted
    r = client.post("/fragments/split_map", data={"coarse": str(C), "child_cos": "0.5", "threshold": "0.6", "prompt": ""})
    assert r.status_code == 200, r.text
    assert r.headers["HX-Push-Url"] == f"/splits?coarse={C}&threshold=0.6"
    assert client.get(r.headers["HX-Push-Url"]).status_code == 200


def test_errors_render_in_place_with_their_status(planted):
    eng, C, client = planted
    r = client.get("/splits", params={"coarse": 64})
    assert r.status_code == 404 and "0..63" in r.text
    r = client.post("/fragments/split_map", data={"coarse": "1", "child_cos": "2"})
    assert r.status_code == 422 and "child_cos" in r.text


def test_coarse_cards_and_discover_link_to_the_split_map(planted):
    eng, C, client = planted
    r = client.get("/", params={"prompt": "The capital of France is", "feature": f"coarse:{C}"})
    assert r.status_code == 200
    assert re.search(rf'id="fcard-split"[^>]*href="/splits\?coarse={C}&amp;prompt=The\+capital', r.text)
    r = client.get("/", params={"prompt": "The capital of France is", "feature": "fine:3"})
    assert 'id="fcard-split"' not in r.text
