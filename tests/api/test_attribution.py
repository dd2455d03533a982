"""POST /api/attribution: the numbers the engine computes, the clamp check, and the 404/422 shapes."""
from __future__ import annotations

import numpy as np
import pytest

from app.engine import attribution as A

PROMPT = "The capital of France is Paris"


def test_attribution_json_matches_the_engine(tiny_client, tiny_engine):
    r = tiny_client.post("/api/attribution", json={"prompt": PROMPT, "top": 8, "n_validate": 5, "target": "x"})
    assert r.status_code == 200, r.text
    body = r.json()
    ids = tiny_engine.tokenizer.encode(PROMPT, add_special_tokens=False)
    x_id = tiny_engine.tokenizer.encode("x", add_special_tokens=False)[0]
    with tiny_engine.session():
        ref = A.attribute(tiny_engine.model, tiny_engine.saes, tiny_engine.hook_name, ids, target=x_id, top=8)
    assert body["position"] == len(ids) - 1 and body["target_id"] == x_id and body["target"] == "x"
    assert [(f["sae"], f["index"]) for f in body["features"]] == [(f.sae, f.index) for f in ref.features]
    np.testing.assert_allclose([f["attribution"] for f in body["features"]], [f.attribution for f in ref.features], rtol=1e-4, atol=1e-6)
    assert {(t["name"], t["sae"]) for t in body["terms"]} == {("sink", None), ("error", "coarse"), ("bias", "coarse"),
                                                              ("error", "fine"), ("bias", "fine")}
    checked = [f for f in body["features"] if f["actual"] is not None]
    assert body["n_validated"] == len(checked) == 5
    assert all(f["estimate"] == pytest.approx(-f["attribution"]) for f in checked)
    assert body["correlation"] == pytest.approx(np.corrcoef([f["estimate"] for f in checked], [f["actual"] for f in checked])[0, 1])
    for f in body["features"]:
        assert f["positions"] and all(p["activation"] > 0 for p in f["positions"])
        assert f["max_activation"] == max(p["activation"] for p in f["positions"])


def test_default_target_is_the_top_token_and_position_truncates(tiny_client):
    r = tiny_client.post("/api/attribution", json={"prompt": PROMPT, "position": 5, "n_validate": 0})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["position"] == 5 and len(body["tokens"]) == 6 and body["correlation"] is None
    assert body["target"] == body["top_next"][0][0] and body["prob"] == pytest.approx(body["top_next"][0][1])


def test_multi_token_target_uses_its_first_token_and_says_so(tiny_client):
    r = tiny_client.post("/api/attribution", json={"prompt": PROMPT, "target": " Rome", "n_validate": 0})
    assert r.status_code == 200 and r.json()["target"] == " " and "first" in r.json()["target_note"]


@pytest.mark.parametrize("body,status,loc,needle", [
    ({"prompt": "abc", "position": 3}, 404, ["body", "position"], "0..2"),
    ({"prompt": "abc", "target_id": 259}, 404, ["body", "target_id"], "0..258"),
    ({"prompt": "abc", "top": 51}, 422, ["body", "top"], "max_features_shown"),
    ({"prompt": "abc", "n_validate": 21}, 422, ["body", "n_validate"], "20"),
    ({"prompt": "abc", "target": ""}, 422, ["body", "target"], "1"),
    ({"prompt": ""}, 422, ["body", "prompt"], "1"),
])
def test_errors_name_the_field_and_the_range(tiny_client, body, status, loc, needle):
    r = tiny_client.post("/api/attribution", json=body)
    assert r.status_code == status, r.text
    item = r.json()["detail"][0]
    assert item["loc"] == loc and needle in item["msg"]


def test_dense_features_come_after_the_rest_with_their_ratio_unless_asked(tiny_client, tiny_engine):
    """With an atlas: each entry's ratio is its max activation over the atlas's mean when firing, dense ones
    (> 10% of the atlas's tokens) are marked and listed after the others (each group in attribution order);
    rank=attribution keeps the engine's order."""
    from dataclasses import replace

    from tests.atlas_fixtures import tiny_atlas, with_atlas

    ids = tiny_engine.tokenizer.encode(PROMPT, add_special_tokens=False)
    with tiny_engine.session():
        ref = A.attribute(tiny_engine.model, tiny_engine.saes, tiny_engine.hook_name, ids, top=10)
    atlas = tiny_atlas(tiny_engine)
    density = {n: np.zeros_like(d) for n, d in atlas.density.items()}
    for j, f in enumerate(ref.features):  # every other listed feature is made dense
        density[f.sae][f.index] = 0.5 if j % 2 == 0 else 0.05
    atlas = replace(atlas, density=density)
    order = [(f.sae, f.index) for f in ref.features]
    with with_atlas(tiny_engine, atlas):
        body = tiny_client.post("/api/attribution", json={"prompt": PROMPT, "top": 10, "n_validate": 0}).json()
        raw = tiny_client.post("/api/attribution", json={"prompt": PROMPT, "top": 10, "n_validate": 0,
                                                        "rank": "attribution"}).json()
    got = [(f["sae"], f["index"]) for f in body["features"]]
    want = [k for j, k in enumerate(order) if j % 2 == 1] + [k for j, k in enumerate(order) if j % 2 == 0]
    assert got == want and [(f["sae"], f["index"]) for f in raw["features"]] == order
    for f in body["features"]:
        assert f["dense"] == (density[f["sae"]][f["index"]] > 0.10)
        typical = float(atlas.mean_when_firing[f["sae"]][f["index"]])
        assert f["ratio"] == pytest.approx(f["max_activation"] / typical, rel=1e-6) if typical > 0 else f["ratio"] is None
        assert f["label"] == atlas.label(f["sae"], f["index"])
