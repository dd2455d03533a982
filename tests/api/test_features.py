"""JSON API of the feature atlas and search: /api/atlas, /api/atlas/{sae}/{index}, /api/features/{sae}/{index}
(atlas fields), /api/search (422 shapes, ranking = a direct plain-torch encode)."""
from __future__ import annotations

from dataclasses import asdict

import numpy as np
import pytest
import torch

from app.engine.atlas.core import EARLY_POSITIONS


def topk_encode(sae, x):
    pre = (x - sae.b_dec.detach()) @ sae.W_enc.detach() + sae.b_enc.detach()
    v, i = pre.topk(sae.cfg.k, dim=-1)
    return torch.zeros_like(pre).scatter(-1, i, v.relu())


def test_without_atlas_says_how_to_build_it(tiny_client, tiny_engine):
    if tiny_engine.atlas is not None:
        pytest.skip("a tiny atlas exists in the default folder")
    st = tiny_client.get("/api/atlas").json()
    assert st["available"] is False and st["build_command"] == "python -m app atlas --profile tiny"
    assert st["status"].startswith("missing")
    r = tiny_client.get("/api/features/fine/3").json()
    assert r["atlas"] is None and r["atlas_status"]["build_command"] == "python -m app atlas --profile tiny"


def test_feature_json_carries_the_atlas(atlas_client, atlas):
    f = int(np.argmax(atlas.summaries["fine"]["n_firing"]))
    r = atlas_client.get(f"/api/features/fine/{f}")
    assert r.status_code == 200
    a = r.json()["atlas"]
    fa = atlas.feature("fine", f)
    assert a["label"] == fa.label and a["n_firing"] == fa.n_firing > 0
    assert a["density"] == pytest.approx(fa.n_firing / atlas.n_valid)
    assert a["hist_counts"] == list(fa.hist_counts) and sum(a["hist_counts"]) == fa.n_firing
    ex = a["examples"][0]
    # the first example is the strongest with context (window position >= EARLY_POSITIONS) when there is one
    assert ex["activation"] == pytest.approx(fa.examples[0].activation) == pytest.approx(max(ex["acts"]))
    assert ex["activation"] <= a["max_act"] and (ex["position"] >= EARLY_POSITIONS or ex["activation"] == a["max_act"])
    assert ex["tokens"][ex["position"] - ex["start"]] == fa.examples[0].tokens[ex["position"] - ex["start"]]
    assert [n["index"] for n in a["neighbours"]["coarse"]] == atlas.summaries["fine"]["nb_other_idx"][f].tolist()
    alone = atlas_client.get(f"/api/atlas/fine/{f}").json()
    assert alone["atlas"] == a and alone["width"] == 512 and alone["atlas_status"]["available"]
    from app.engine.atlas.label_score import label_score

    assert a["label_score"] == {**asdict(label_score(atlas, "fine", f)), "parts": list(label_score(atlas, "fine", f).parts)}


def test_search_sorts_and_filters_by_label_f1(atlas_client, atlas):
    from app.engine.atlas.label_score import label_score

    plain = atlas_client.get("/api/search", params={"q": "France", "mode": "text", "top": 30}).json()["text"]
    by_f1 = atlas_client.get("/api/search", params={"q": "France", "mode": "text", "top": 30, "sort": "label_f1"}).json()["text"]
    kept = atlas_client.get("/api/search", params={"q": "France", "mode": "text", "top": 30, "min_label_f1": 0.2}).json()["text"]
    for n in plain:
        f1 = {h["index"]: label_score(atlas, n, h["index"]).f1 for h in plain[n]}
        assert [h["label_f1"] for h in plain[n]] == [f1[h["index"]] for h in plain[n]]
        assert [h["index"] for h in by_f1[n]] == sorted(f1, key=lambda i: -(f1[i] if f1[i] is not None else -1.0))
        assert [h["index"] for h in kept[n]] == [i for i in f1 if f1[i] is not None and f1[i] >= 0.2]
    assert atlas_client.get("/api/search", params={"q": "x", "min_label_f1": 2}).status_code == 422


@pytest.mark.parametrize("url", ["/api/features/fine/512", "/api/atlas/fine/512", "/api/atlas/coarse/64"])
def test_unknown_index_is_404_naming_the_range(atlas_client, url):
    r = atlas_client.get(url)
    assert r.status_code == 404
    width = 512 if "fine" in url else 64
    assert f"0..{width - 1}" in r.text


@pytest.mark.parametrize("q,where", [("", "q"), ("   ", "q"), ("x" * 201, "max_search_chars")])
def test_bad_query_is_422_naming_the_field(tiny_client, q, where):
    for r in (tiny_client.get("/api/search", params={"q": q}), tiny_client.post("/api/search", json={"q": q})):
        assert r.status_code == 422, r.text
        assert where in r.text and "q" in [str(x) for x in r.json()["detail"][0]["loc"]]


def test_search_by_text_ranks_like_a_direct_encode(atlas_client, tiny_engine):
    eng = tiny_engine
    r = atlas_client.get("/api/search", params={"q": "Paris", "mode": "text", "top": 7})
    assert r.status_code == 200
    body = r.json()
    assert body["atlas"] is None and body["query_tokens"] == list("Paris")
    prefix = eng.tokenizer.encode("\n\n", add_special_tokens=False)
    ids = prefix + eng.tokenizer.encode("Paris", add_special_tokens=False)
    with torch.inference_mode():
        _, cache = eng.model.run_with_cache(torch.tensor([ids]), names_filter=eng.hook_name)
    resid = cache[eng.hook_name][0, len(prefix):].float()
    atlas = eng.atlas
    for n, sae in eng.saes.items():
        mx = topk_encode(sae, resid).max(0).values.numpy()
        typical, dense = atlas.mean_when_firing[n], atlas.density[n] > 0.10
        ratio = np.where(typical > 0, mx / np.maximum(typical, 1e-30), 0)
        want = sorted(np.flatnonzero(mx > 0).tolist(), key=lambda i: (dense[i], -ratio[i], -mx[i], i))[:7]
        hits = body["text"][n]
        assert [h["index"] for h in hits] == want
        assert np.allclose([h["activation"] for h in hits], mx[want], rtol=1e-5)
        assert all(h["label"] and h["density"] is not None for h in hits)


def test_search_by_atlas_is_the_whole_word_lift_search(atlas_client, atlas):
    from app.engine.atlas import words

    body = atlas_client.post("/api/search", json={"q": "France", "mode": "atlas", "top": 50}).json()
    assert body["text"] is None
    pos = words.matching_positions(atlas, "France")
    assert len(pos) >= 20  # "France" twice per sentence block of the fixture text
    for n, codes in atlas.codes.items():
        fires = codes.toarray() > 0
        on_word = fires[pos].sum(0)
        lift = (on_word / len(pos)) / np.maximum(fires[atlas.valid].mean(0), 1 / atlas.n_valid)
        got = body["atlas"][n]
        assert [h["index"] for h in got] == [h.index for h in at_search(atlas, "France")[n]]
        for h in got:
            assert h["score"] == pytest.approx(lift[h["index"]], rel=1e-6) and h["score"] >= words.MIN_LIFT
            assert h["share"] == pytest.approx(on_word[h["index"]] / fires[:, h["index"]].sum(), rel=1e-6)


def at_search(atlas, q):
    from app.engine.atlas import search_atlas

    return search_atlas(atlas, q, top=50)


def test_health_reports_atlas_and_pair_independence(tiny_client, tiny_engine):
    h = tiny_client.get("/health").json()
    assert h["atlas"] == tiny_engine.atlas_status
    C = tiny_engine.saes["coarse"].W_dec.detach().numpy()
    F = tiny_engine.saes["fine"].W_dec.detach().numpy()
    C, F = C / np.linalg.norm(C, axis=1, keepdims=True), F / np.linalg.norm(F, axis=1, keepdims=True)
    p = h["pair_independence"]
    assert p["mean_same_index_cosine"] == pytest.approx((C * F[: len(C)]).sum(1).mean(), abs=1e-5)
    assert p["share_best_is_same"] == pytest.approx(((C @ F.T).argmax(1) == np.arange(len(C))).mean())
    assert p["initialised_together"] is False and p["warning"] is None  # the tiny pair has distinct seeds


@pytest.mark.embedded
def test_embedded_search_paris_finds_a_france_feature(embedded_engine):
    """On SmolLM2 with its shipped atlas: a top result for "Paris" has top examples about France."""
    import re

    from app.api.features import SearchRequest, run_search
    from app.core.settings import Settings

    eng = embedded_engine
    if eng.atlas is None:
        pytest.skip(f"no embedded atlas: {eng.atlas_status}")
    res = run_search(eng, Settings(), SearchRequest(q="Paris", mode="both", top=10))
    france = re.compile(r"France|French|Paris|Lyon|Marseille|Seine", re.I)

    def about_france(sae, index) -> bool:
        ex = eng.atlas.feature(sae, index, left=24, right=8).examples[:6]
        return sum(bool(france.search("".join(e.tokens))) for e in ex) >= max(1, len(ex) // 2)

    found = [(h.sae, h.index) for mode in (res.text, res.atlas or {}) for hits in mode.values() for h in hits[:10]
             if about_france(h.sae, h.index)]
    assert found, "no top-10 result for 'Paris' has top examples about France"


def test_discovery_warns_when_the_pair_was_initialised_together(tiny_engine, tiny_client, monkeypatch):
    from app.api.discover import DiscoverRequest, run_discovery
    from app.core.settings import Settings
    from app.engine.atlas import PairIndependence

    req = DiscoverRequest(concept_prompts=["Paris is in France.", "I love French cheese.", "The Eiffel Tower"],
                          contrast_prompts=["The cat sat down.", "Water is wet.", "A box of pens"], n_coarse=2, n_fine=5, top_k=5)
    ok = run_discovery(tiny_engine, Settings(profile="tiny"), req)
    assert ok.pair_independence["initialised_together"] is False and ok.pair_independence["warning"] is None
    monkeypatch.setattr(tiny_engine, "pair_check", PairIndependence(0.41, 0.42, 64, 0.1))
    res = run_discovery(tiny_engine, Settings(profile="tiny"), req)
    assert "initialised together" in res.pair_independence["warning"] and "0.41" in res.pair_independence["warning"]
    templates = tiny_client.app.state.templates
    html = templates.env.get_template("fragments/discovery.html").render(
        inputs=req.model_dump(), result=res.model_dump(), kind="discovery")
    if res.go_no_go:
        assert "Caution:" in html and "42%" in html


OPEN_24 = pytest.mark.xfail(strict=True, reason="issue 24 open: the atlas holds 'dog' at 42 of its 983,618 positions "
                             "and no feature that fires on it has it among its top examples (they fire on 'animal', "
                             "'horse', 'device')")


@pytest.mark.embedded
@pytest.mark.parametrize("word", ["Paris", pytest.param("dog", marks=OPEN_24), "Python", "money"])
def test_embedded_atlas_search_first_hit_shows_the_word(embedded_engine, word):
    """Issue 24's search bar: each query word has an atlas hit, and the first hit of each SAE that lists any (a column
    may stay empty rather than show noise) has the word (whole, any case) around most of its top examples."""
    import re

    from app.api.features import SearchRequest, run_search
    from app.core.settings import Settings

    eng = embedded_engine
    if eng.atlas is None:
        pytest.skip(f"no embedded atlas: {eng.atlas_status}")
    res = run_search(eng, Settings(), SearchRequest(q=word, mode="atlas", top=5))
    pat = re.compile(rf"(?<!\w){re.escape(word)}(?!\w)", re.I)
    assert any((res.atlas or {}).values()), f"no atlas hit for {word!r}"
    for sae, hits in (res.atlas or {}).items():
        if not hits:
            continue
        ex = eng.atlas.feature(sae, hits[0].index, left=8, right=2).examples[:6]
        with_word = sum(bool(pat.search("".join(e.tokens))) for e in ex)
        assert with_word >= max(1, (len(ex) + 1) // 2), (sae, hits[0].index, with_word, len(ex))
