"""Finding places on the map (issue 25 item 10): GET /api/map/search, the page's search box (/map?q=, the htmx
fragment) and the keyboard list of regions. Tiny profile with an atlas; the map is built in memory."""
from __future__ import annotations

import re

import pytest

from app.api.map import service
from app.engine.atlas import search_atlas


@pytest.fixture(scope="module")
def lay(tiny_engine):
    got, status = service.layout_status(tiny_engine)
    assert got is not None, status
    return got


def inside(box, x, y):
    return box["x0"] <= x <= box["x1"] and box["y0"] <= y <= box["y1"]


def test_a_feature_id_flies_to_that_point(atlas_client, lay):
    r = atlas_client.get("/api/map/search", params={"q": "fine:17"})
    assert r.status_code == 200, r.text
    f = r.json()["features"][0]
    row = lay.offset("fine") + 17
    assert (f["sae"], f["index"]) == ("fine", 17)
    assert (f["x"], f["y"]) == pytest.approx((float(lay.xy[row, 0]), float(lay.xy[row, 1])), abs=1e-4)
    assert inside(f["box"], f["x"], f["y"]) and f["region"] == int(lay.cluster[row])


def test_words_find_atlas_features_in_the_atlas_search_order(atlas_client, atlas, tiny_engine, lay):
    # a word of the tiny atlas's text that some feature is specific to (the atlas search is whole-word, by lift)
    word = next(w for w in ("France", "Paris", "wine", "cheese", "Berlin", "Water", "degrees")
                if any(search_atlas(atlas, w, top=8).values()))
    r = atlas_client.get("/api/map/search", params={"q": word, "top": 8})
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["atlas"] is True and got["features"], got
    found = search_atlas(atlas, word, top=8)
    want = [(h.sae, h.index) for h in sorted((h for hs in found.values() for h in hs),
                                             key=lambda h: (-h.score, h.sae, h.index))][:8]
    assert [(f["sae"], f["index"]) for f in got["features"]] == want
    for f in got["features"]:
        row = lay.offset(f["sae"]) + f["index"]
        assert inside(f["box"], float(lay.xy[row, 0]), float(lay.xy[row, 1]))
        assert f["label"] == atlas.label(f["sae"], f["index"])


def test_region_words_find_their_regions(atlas_client, lay):
    named = [r for r in lay.regions if not r.label.startswith("cluster")]
    target = named[0] if named else lay.regions[0]
    word = target.label.split(" · ")[0] if named else "cluster"
    got = atlas_client.get("/api/map/search", params={"q": word}).json()
    assert target.id in [r["id"] for r in got["regions"]]
    for r in got["regions"]:  # the box shows the region's drawn shape (its soft hull) and centre
        reg = lay.regions[r["id"]]
        assert all(inside(r["box"], x, y) for x, y in reg.hull) and inside(r["box"], *reg.centroid), r


def test_bad_queries_say_what_is_wrong(atlas_client, tiny_engine):
    r = atlas_client.get("/api/map/search", params={"q": "x" * 201})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "q"], r.text
    assert "200" in r.json()["detail"][0]["msg"]
    r = atlas_client.get("/api/map/search", params={"q": "   "})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "q"]
    assert atlas_client.get("/api/map/search", params={"q": "fine:99999"}).json()["features"] == []


def test_the_page_lists_every_region_as_a_button_and_renders_a_search(atlas_client, lay):
    html = atlas_client.get("/map").text
    regions = re.findall(r'<button type="button" class="map-go" data-region="(\d+)"', html)
    assert [int(i) for i in regions] == [r.id for r in lay.regions]  # the keyboard path: every region, largest first
    assert 'id="map-q"' in html and 'role="search"' in html
    html = atlas_client.get("/map", params={"q": "fine:17", "color_by": "density"}).text
    assert 'data-feature="fine:17"' in html and 'value="fine:17"' in html and 'href="/features/fine/17"' in html


def test_the_fragment_keeps_the_view_in_the_address(atlas_client):
    r = atlas_client.get("/fragments/map/search", params={"q": "fine:3"},
                   headers={"HX-Request": "true", "HX-Current-URL": "http://x/map?color_by=density&q=old"})
    assert r.status_code == 200 and 'data-feature="fine:3"' in r.text
    assert r.headers["HX-Push-Url"] == "/map?color_by=density&q=fine%3A3"
    r = atlas_client.get("/fragments/map/search", params={"q": ""}, headers={"HX-Request": "true"})
    assert r.status_code == 422 and "q" in r.text and 'role="alert"' in r.text
