"""POST /api/splits against numpy over the atlas codes (tiny profile with a planted split), and its 404/422s."""
from __future__ import annotations

import numpy as np
import pytest

from tests.splits_fixtures import HALVES


def _unit(W):
    W = W.detach().float().numpy()
    return W / np.linalg.norm(W, axis=1, keepdims=True)


def test_split_map_equals_numpy_over_the_atlas(planted):
    eng, C, client = planted
    r = client.post("/api/splits", json={"coarse": C, "top": 10, "child_cos": 0.5, "strong_frac": 0.3, "n_examples": 50})
    assert r.status_code == 200, r.text
    body = r.json()
    at = eng.atlas
    A = at.codes["coarse"].toarray()[at.valid] > 0
    B = at.codes["fine"].toarray()[at.valid] > 0
    assert body["atlas"] == "ok" and body["n_tokens"] == at.valid.sum() and body["n_coarse"] == A[:, C].sum()
    cos = _unit(eng.saes["fine"].W_dec) @ _unit(eng.saes["coarse"].W_dec)[C]
    children = np.flatnonzero(cos >= 0.5)
    assert set(HALVES) <= {m["fine"] for m in body["children"]} == set(children.tolist())
    n_both = (A[:, C][:, None] & B).sum(0)
    for m in body["children"] + body["by_cosine"] + body["by_cofiring"]:
        f = m["fine"]
        assert m["n_both"] == n_both[f] and m["n_fine"] == B[:, f].sum()
        assert m["cosine"] == pytest.approx(cos[f], abs=1e-5)
        if A[:, C].sum():
            assert m["p_fine_given_coarse"] == pytest.approx(n_both[f] / A[:, C].sum())
        assert m["label"] == at.label("fine", f)
    cover = (A[:, C] & B[:, children].any(1)).sum() / A[:, C].sum()
    assert body["coverage"] == pytest.approx(cover)
    # holes: C >= 0.3 of its max and no child; every example's context shows C's activation at the hole token
    vals = at.codes["coarse"].toarray()[at.valid][:, C]
    strong = vals >= 0.3 * vals.max()
    assert body["n_holes"] == (strong & ~B[:, children].any(1)).sum()
    for h in body["holes"]:
        ctx = h["context"]
        assert ctx["acts"][ctx["position"]] == pytest.approx(h["activation"], rel=1e-6)
        assert at.codes["coarse"][h["position"], C] == pytest.approx(h["activation"])
    # the dictionary view: max-cosine histogram and counts
    mc = (_unit(eng.saes["fine"].W_dec) @ _unit(eng.saes["coarse"].W_dec).T).max(1)
    d = body["dictionary"]
    assert d["n_reconstruction"] == (mc >= 0.7).sum() and d["n_novel"] == (mc < 0.7).sum()
    assert sum(d["counts"]) == len(mc) and d["n_children"] == len(children)
    # a planted half is (mostly) C itself: the meta-decomposition names C first
    meta = {m["fine"]: m for m in body["meta"]}
    assert meta[HALVES[0]]["terms"][0]["coarse"] == C and meta[HALVES[0]]["terms"][0]["coef"] > 0.5
    assert body["stitching"] is None


def test_stitching_on_a_prompt(planted):
    eng, C, client = planted
    r = client.post("/api/splits", json={"coarse": C, "prompt": "The capital of France is Paris."})
    assert r.status_code == 200, r.text
    s = r.json()["stitching"]
    assert set(HALVES) <= set(s["children"]) and len(s["positions"]) == len(s["tokens"]) == len(s["coarse_act"])
    assert s["rel_error_coarse"] > 0 and s["kl_coarse"] >= 0 and s["kl_stitched"] >= 0
    assert abs(sum(p for _, p in s["next_clean"][:1]) - r.json()["stitching"]["next_clean"][0][1]) < 1e-12


def test_without_an_atlas_the_geometry_still_works(tiny_client, tiny_engine):
    r = tiny_client.post("/api/splits", json={"coarse": 3})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["atlas"] != "ok" and body["n_tokens"] == 0 and body["coverage"] is None and body["holes"] == []
    cos = _unit(tiny_engine.saes["fine"].W_dec) @ _unit(tiny_engine.saes["coarse"].W_dec)[3]
    assert [m["fine"] for m in body["by_cosine"]] == list(np.argsort(-cos, kind="stable")[:20])


@pytest.mark.parametrize("body,status,loc,needle", [
    ({"coarse": 64}, 404, ["body", "coarse"], "0..63"),
    ({"coarse": 1, "fine": 512}, 404, ["body", "fine"], "0..511"),
    ({"coarse": 1, "top": 51}, 422, ["body", "top"], "max_features_shown"),
    ({"coarse": 1, "child_cos": 1.5}, 422, ["body", "child_cos"], "1"),
    ({"coarse": 1, "prompt": "x" * 9000}, 422, ["body", "prompt"], "max_prompt_chars"),
    ({"coarse": -1}, 422, ["body", "coarse"], "0"),
])
def test_errors_name_the_field_and_the_limit(tiny_client, body, status, loc, needle):
    r = tiny_client.post("/api/splits", json=body)
    assert r.status_code == status, r.text
    item = r.json()["detail"][0]
    assert item["loc"] == loc and needle in item["msg"]
