"""The map JSON API on the tiny profile: placements against numpy, the honesty figure against scikit-learn,
error shapes (422 naming the field, 404 naming the range, 409 with the build command)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.neighbors import NearestNeighbors

from app.api.map import service
from app.engine.analysis import sink_mask
from app.engine.prompts import encode_prompt


@pytest.fixture(scope="module")
def tiny_layout(tiny_engine):
    lay, status = service.layout_status(tiny_engine)  # built in memory: the tiny SAEs are small
    assert lay is not None, status
    return lay


def test_layout_preservation_equals_sklearn(tiny_client, tiny_engine, tiny_layout):
    r = tiny_client.get("/api/map/layout")
    assert r.status_code == 200
    info = r.json()
    assert info["n_points"] == 64 + 512 and info["widths"] == {"coarse": 64, "fine": 512}
    X = np.vstack([tiny_engine.saes[n].W_dec.detach().float().numpy() for n in ("coarse", "fine")])
    Y = tiny_layout.xy.astype(np.float64)
    hi = NearestNeighbors(n_neighbors=11, metric="cosine", algorithm="brute").fit(X).kneighbors(X, return_distance=False)
    lo = NearestNeighbors(n_neighbors=11).fit(Y).kneighbors(Y, return_distance=False)
    want = np.mean([len(set(a[1:]) & set(b[1:])) / 10 for a, b in zip(hi, lo)])
    assert info["preservation"] == pytest.approx(want, abs=1e-9)


def test_path_places_tokens_like_numpy(tiny_client, tiny_engine, tiny_layout):
    prompt, system = "Tell me about cats.", "You are a pirate."
    r = tiny_client.post("/api/map/path", json={"prompt": prompt, "system_prompt": system, "drift_ks": [0, 1],
                                                "steer": [{"sae": "coarse", "index": 3, "strength": 8.0}],
                                                "max_new_tokens": 3})
    assert r.status_code == 200, r.text
    res = r.json()
    assert [p["name"] for p in res["paths"]] == ["prompt", "without system prompt", "unsteered", "steered"]
    ids = encode_prompt(tiny_engine.tokenizer, prompt, system).token_ids
    with torch.inference_mode():
        _, cache = tiny_engine.model.run_with_cache(torch.tensor([list(ids)]))
        resid = cache[tiny_engine.hook_name][0]
        acts = {n: s.encode(resid).double().numpy() for n, s in tiny_engine.saes.items()}
    sink = sink_mask(tiny_engine.model, ids, resid, tiny_engine.profile.sink_norm).tolist()
    pts = res["paths"][0]["points"]
    assert len(pts) == len(ids)
    xy = tiny_layout.xy.astype(np.float64)
    for t, p in enumerate(pts):
        assert p["sink"] == sink[t]
        if sink[t]:
            assert p["x"] is None
            continue
        w = np.concatenate([acts["coarse"][t], acts["fine"][t]])
        want = (w[:, None] * xy).sum(0) / w.sum()
        assert (p["x"], p["y"]) == pytest.approx(tuple(want), abs=2e-4)
    assert res["pull"]["moved"] and res["steer"]["marked"][0]["index"] == 3
    assert [d["k"] for d in res["drift"]] == [0, 1]
    assert len(res["regions"]) == res["layout"]["n_regions"]


@pytest.mark.parametrize("body, status, loc, words", [
    ({"prompt": "x", "drift_ks": [1]}, 422, ["body", "drift_ks"], "system prompt"),
    ({"prompt": "x", "system_prompt": "s", "drift_ks": [99]}, 422, ["body", "drift_ks"], "0..16"),
    ({"prompt": "x", "steer": [{"sae": "coarse", "index": 64, "strength": 1.0}]}, 404, ["body", "steer", 0, "index"], "(0..63)"),
    ({"prompt": "x", "color_by": "cosine", "feature": "fine:512"}, 404, ["body", "feature"], "(0..511)"),
    ({"prompt": "x", "steer": [{"sae": "fine", "index": 1, "strength": 1e9}]}, 422, ["body", "steer", 0, "strength"], "max_steering_strength"),
    ({"prompt": "x" * 9000}, 422, ["body", "prompt"], "max_prompt_chars"),
])
def test_bad_input_names_the_field(tiny_client, tiny_layout, body, status, loc, words):
    r = tiny_client.post("/api/map/path", json=body)
    assert r.status_code == status, r.text
    item = r.json()["detail"][0]
    assert item["loc"][: len(loc)] == loc and words in item["msg"]


def test_feature_point_and_range(tiny_client, tiny_layout):
    r = tiny_client.get("/api/map/features/fine/7")
    assert r.status_code == 200
    d = r.json()
    row = 64 + 7
    assert (d["x"], d["y"]) == pytest.approx(tuple(tiny_layout.xy[row].astype(float)))
    assert d["region"] == int(tiny_layout.cluster[row])
    r = tiny_client.get("/api/map/features/fine/512")
    assert r.status_code == 404 and "(0..511)" in r.json()["detail"][0]["msg"]


def test_missing_map_is_409_with_the_command(tiny_engine, tmp_path, monkeypatch):
    from tests.conftest import make_client

    monkeypatch.setattr(service, "ON_DEMAND_MAX", 0)
    monkeypatch.setattr(tiny_engine, "atlas_dir", tmp_path / "tiny")
    with make_client(tiny_engine) as c:
        r = c.post("/api/map/path", json={"prompt": "x"})
        assert r.status_code == 409 and "python -m app map --profile tiny" in r.json()["detail"]
        page = c.get("/map")
        assert page.status_code == 200 and "python -m app map --profile tiny" in page.text


def test_stored_layout_is_used_and_stale_one_refused(tiny_engine, tiny_layout, tmp_path, monkeypatch):
    from dataclasses import replace

    from app.engine.layout import save_layout
    from tests.conftest import make_client

    monkeypatch.setattr(service, "ON_DEMAND_MAX", 0)
    monkeypatch.setattr(tiny_engine, "atlas_dir", tmp_path / "tiny")
    moved = replace(tiny_layout, xy=tiny_layout.xy + 100.0)
    save_layout(tmp_path / "tiny", moved)
    with make_client(tiny_engine) as c:
        d = c.get("/api/map/features/coarse/0").json()
        assert d["x"] == pytest.approx(float(tiny_layout.xy[0, 0]) + 100.0, abs=1e-4)
        save_layout(tmp_path / "tiny", replace(moved, fingerprint="other"))
        r = c.get("/api/map/layout")
        assert r.status_code == 409 and "stale" in r.json()["detail"]


def test_hover_lists_the_most_unusual_features_with_ratio_and_dense_last(tiny_client, tiny_engine, tiny_layout):
    """Each token's hover: of its 12 strongest features (both SAEs, by a plain encode here), the 3 first in
    ranking order (activation / atlas mean when firing, dense after the rest), raw activation beside the ratio."""
    from app.engine.navigation import HOVER_POOL
    from tests.atlas_fixtures import tiny_atlas, with_atlas

    prompt = "Paris is the capital of France."
    atlas = tiny_atlas(tiny_engine)
    with with_atlas(tiny_engine, atlas):
        r = tiny_client.post("/api/map/path", json={"prompt": prompt, "chat": False})
    assert r.status_code == 200, r.text
    ids = encode_prompt(tiny_engine.tokenizer, prompt, None, False).token_ids
    with torch.inference_mode():
        _, cache = tiny_engine.model.run_with_cache(torch.tensor([list(ids)]))
        resid = cache[tiny_engine.hook_name][0]
        acts = {n: s.encode(resid).double().numpy() for n, s in tiny_engine.saes.items()}
    checked = 0
    for t, p in enumerate(r.json()["paths"][0]["points"]):
        pool = sorted(((n, i, acts[n][t, i]) for n in acts for i in np.flatnonzero(acts[n][t] > 0)),
                      key=lambda c: (-c[2], c[0], c[1]))[:HOVER_POOL]
        dense = {(n, i): atlas.density[n][i] > 0.10 for n, i, _ in pool}
        ratio = {(n, i): v / atlas.mean_when_firing[n][i] for n, i, v in pool if atlas.mean_when_firing[n][i] > 0}
        want = sorted(pool, key=lambda c: (dense[c[:2]], -ratio.get(c[:2], 0.0), -c[2], c[0], c[1]))[:3]
        assert [(f["sae"], f["index"]) for f in p["top"]] == [(n, int(i)) for n, i, _ in want], t
        for f, (n, i, v) in zip(p["top"], want):
            assert f["activation"] == pytest.approx(v, rel=1e-4) and f["dense"] == dense[(n, i)]
            assert f["ratio"] == pytest.approx(ratio[(n, i)], rel=1e-4) and f["label"] == atlas.label(n, int(i))
            checked += 1
    assert checked >= 9
