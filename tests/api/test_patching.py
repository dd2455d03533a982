"""POST /api/compare, /api/patching, /api/attention, /api/heads on the tiny profile: the engine's numbers through the
JSON, numpy recomputations of what the service derives, and the 422 shapes (field named, both tokenisations shown)."""
from __future__ import annotations

import numpy as np
import pytest

from app.engine import patching as P

CLEAN, CORRUPT = "The cat sat", "The dog sat"


def ids_of(engine, text):
    return engine.tokenizer.encode(text, add_special_tokens=False)


def one(engine, ch):
    return ids_of(engine, ch)[0]


def test_patching_json_matches_the_engine(tiny_client, tiny_engine):
    r = tiny_client.post("/api/patching", json={"clean": CLEAN, "corrupt": CORRUPT, "answer": "a", "wrong": "e",
                                                "site": "mlp_out"})
    assert r.status_code == 200, r.text
    body = r.json()
    n_layers = tiny_engine.model.cfg.n_layers
    a, w = one(tiny_engine, "a"), one(tiny_engine, "e")
    with tiny_engine.session():
        g = P.exact_patching(tiny_engine.model, ids_of(tiny_engine, CLEAN), ids_of(tiny_engine, CORRUPT), a, w, "mlp_out")
    assert body["layers"] == list(range(n_layers)) and len(body["tokens"]) == len(CLEAN)
    assert body["answer_id"] == a and body["wrong_id"] == w and body["runs"] == n_layers * len(CLEAN)
    grid = np.array(body["grid"], dtype=float)
    # the route runs in a threadpool thread, whose OpenMP team can split float32 reductions differently: on this
    # machine's CPU (AVX-512) last-bit differences in the LDs, divided by ld_clean - ld_corrupt, move the last
    # positions' cells by 1.6e-6 (rtol 3.7e-4 at 0.011), the same in every run; 1e-5 is float32 noise on this scale
    np.testing.assert_allclose(grid, np.array(g.grid), rtol=1e-5, atol=1e-5)
    # the normalisation, recomputed from the raw patched LDs
    np.testing.assert_allclose(grid, (np.array(g.patched) - body["ld_corrupt"]) / (body["ld_clean"] - body["ld_corrupt"]),
                               rtol=1e-5, atol=1e-5)
    att = np.array(body["attribution_grid"], dtype=float)
    assert body["correlation"] == pytest.approx(np.corrcoef(att.ravel(), grid.ravel())[0, 1], abs=1e-9)
    assert body["sae_hook"] == "blocks.1.hook_resid_post" and body["sae_layer"] is None  # mlp_out grid: no SAE row
    assert body["features"] and all(len(f["delta"]) == len(CLEAN) and f["delta"][0] == 0.0 for f in body["features"])


def test_resid_pre_grid_marks_the_sae_row(tiny_client):
    r = tiny_client.post("/api/patching", json={"clean": CLEAN, "corrupt": CORRUPT, "answer": "a", "wrong": "e",
                                                "features": False, "attribution": False})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["sae_layer"] == 2 and body["features"] == [] and body["attribution_grid"] is None


def detail(r):
    assert r.status_code == 422, r.text
    return r.json()["detail"][0]


def test_length_mismatch_is_422_with_both_tokenisations(tiny_client):
    d = detail(tiny_client.post("/api/patching", json={"clean": CLEAN, "corrupt": "The bird sat", "answer": "a",
                                                       "wrong": "e"}))
    assert d["loc"] == ["body", "corrupt"] and "same length" in d["msg"]
    assert d["ctx"]["clean_tokens"] == list(CLEAN) and d["ctx"]["corrupt_tokens"] == list("The bird sat")
    assert "11 tokens" in d["msg"] and "12 tokens" in d["msg"]


def test_multi_token_answer_is_422_showing_the_token(tiny_client):
    d = detail(tiny_client.post("/api/patching", json={"clean": CLEAN, "corrupt": CORRUPT, "answer": "a",
                                                       "wrong": " Rome"}))
    assert d["loc"] == ["body", "wrong"] and "5 tokens" in d["msg"] and "' '" in d["msg"]


@pytest.mark.parametrize("body, loc, text", [
    ({"site": "resid_mid"}, ["body", "site"], "resid_pre"),
    ({"clean": "x" * 60, "corrupt": "y" * 60}, ["body", "clean"], "max_patching_tokens"),
    ({"answer": ""}, ["body", "answer"], "at least 1"),
])
def test_bad_patching_input_names_the_field(tiny_client, body, loc, text):
    d = detail(tiny_client.post("/api/patching", json={"clean": CLEAN, "corrupt": CORRUPT, "answer": "a", "wrong": "e",
                                                       **body}))
    assert d["loc"][:len(loc)] == loc and text in d["msg"]


def test_compare_json(tiny_client, tiny_engine):
    r = tiny_client.post("/api/compare", json={"prompt_a": CLEAN, "prompt_b": CORRUPT, "tokens": ["a", "e"], "top": 5,
                                               "position": 5})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["aligned"] and body["position_a"] == body["position_b"] == 5
    sae = tiny_engine.saes[body["at_position"][0]["sae"]]
    with tiny_engine.session():
        xa, ra = P.cached_run(tiny_engine.model, ids_of(tiny_engine, CLEAN), [tiny_engine.hook_name])
        xb, rb = P.cached_run(tiny_engine.model, ids_of(tiny_engine, CORRUPT), [tiny_engine.hook_name])
        fa = sae.encode(xa[tiny_engine.hook_name]).numpy()[5]
        fb = sae.encode(xb[tiny_engine.hook_name]).numpy()[5]
        lda = float(P.logit_diff(tiny_engine.model, ra, one(tiny_engine, "a"), one(tiny_engine, "e"))[0])
    f = body["at_position"][0]
    assert f["a"] == pytest.approx(float(fa[f["index"]]), abs=1e-5) and f["diff"] == pytest.approx(f["a"] - f["b"])
    diffs = [abs(x["diff"]) for x in body["at_position"]]
    assert diffs == sorted(diffs, reverse=True)
    assert body["logit_diff_a"] == pytest.approx(lda, abs=1e-4) and body["answer"] == "a"
    assert sum(p for _, p in body["next_a"]) <= 1.0 + 1e-6
    assert np.isfinite(fb).all()
    r = tiny_client.post("/api/compare", json={"prompt_a": CLEAN, "prompt_b": "A longer prompt", "position": 2})
    assert detail(r)["loc"] == ["body", "position"]
    r = tiny_client.post("/api/compare", json={"prompt_a": CLEAN, "prompt_b": "A longer prompt"})
    assert r.status_code == 200 and not r.json()["aligned"] and r.json()["position_b"] == len("A longer prompt") - 1


def test_attention_json(tiny_client, tiny_engine):
    r = tiny_client.post("/api/attention", json={"prompt": CLEAN, "target": "a"})
    assert r.status_code == 200, r.text
    body = r.json()
    pats = np.array(body["patterns"])
    cfg = tiny_engine.model.cfg
    assert pats.shape == (cfg.n_layers, cfg.n_heads, len(CLEAN), len(CLEAN))
    np.testing.assert_allclose(pats.sum(-1), 1.0, atol=1e-3)
    assert np.allclose(np.triu(pats, 1), 0.0)  # causal
    assert body["target"] == "a" and np.array(body["dla"]).shape == (cfg.n_layers, cfg.n_heads)
    d = detail(tiny_client.post("/api/attention", json={"prompt": "x" * 40}))
    assert d["loc"] == ["body", "prompt"] and "max_attention_tokens" in d["msg"]


def test_heads_json_top_lists_are_the_sorted_scores(tiny_client):
    r = tiny_client.post("/api/heads", json={"seq_len": 6, "n_seqs": 2, "top": 3})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body["scores"]) == {"previous_token", "induction", "duplicate_token", "first_position"}
    for name, s in body["scores"].items():
        s = np.array(s)
        want = np.sort(s.ravel())[::-1][:3]
        np.testing.assert_allclose([t["score"] for t in body["top"][name]], want)
        t0 = body["top"][name][0]
        assert s[t0["layer"], t0["head"]] == pytest.approx(want[0])
    assert len(body["tokens"]) == 12 and body["tokens"][:6] == body["tokens"][6:]
    assert detail(tiny_client.post("/api/heads", json={"seq_len": 500}))["loc"] == ["body", "seq_len"]
