"""JSON API of the analysis view: /api/analyze, /api/lens, /api/features/{sae}/{index}.

Every number is checked against an independent computation: plain-torch RMSNorm + unembedding for the
lens, a plain-torch TopK encode from the SAE's raw weights for activations, numpy for the vocabulary
projection, explained variance and reconstruction error.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from app.engine.tokens import token_text

PROMPT = "The cat sat on the mat"


def resid_at(engine, ids, name):
    with torch.inference_mode():
        _, cache = engine.model.run_with_cache(torch.tensor([list(ids)]), names_filter=name)
    return cache[name][0].float()


def ids_of(engine, text):
    return engine.tokenizer.encode(text, add_special_tokens=False)


def topk_encode(sae, x: torch.Tensor) -> torch.Tensor:
    """TopK SAE encode from the raw weights: relu(topk((x - b_dec) W_enc + b_enc)), zeros elsewhere."""
    pre = (x - sae.b_dec.detach()) @ sae.W_enc.detach() + sae.b_enc.detach()
    v, i = pre.topk(sae.cfg.k, dim=-1)
    return torch.zeros_like(pre).scatter(-1, i, v.relu())


def rms_unembed(model, r: torch.Tensor) -> torch.Tensor:
    w = model.ln_final.w.detach().float()
    eps = model.cfg.eps
    x = r / torch.sqrt((r * r).mean(-1, keepdim=True) + eps) * w
    return (x @ model.W_U.detach().float() + model.b_U.detach().float()).softmax(-1)


# ------------------------------------------------------------------ /api/lens
def test_lens_matches_plain_torch_rmsnorm_unembed(tiny_client, tiny_engine):
    r = tiny_client.post("/api/lens", json={"prompt": PROMPT, "top": 5})
    assert r.status_code == 200
    body = r.json()
    m = tiny_engine.model
    ids = ids_of(tiny_engine, PROMPT)
    assert body["layers"] == ["embed"] + [str(i) for i in range(m.cfg.n_layers)]
    assert body["tokens"] == list(PROMPT)  # byte tokenizer: one token per ASCII character
    names = ["blocks.0.hook_resid_pre"] + [f"blocks.{i}.hook_resid_post" for i in range(m.cfg.n_layers)]
    for li, name in enumerate(names):
        probs = rms_unembed(m, resid_at(tiny_engine, ids, name))
        pv, pi = probs.topk(5, dim=-1)
        got_p = np.array(body["top_probs"][li])
        np.testing.assert_allclose(got_p, pv.numpy(), rtol=0, atol=1e-3)  # the lens's bar (bf16 kernel where the CPU has it)
        for p in range(len(ids)):
            # each token shown alone (a byte token as <0xXX>: app.engine.tokens)
            want = [token_text(tiny_engine.tokenizer, t) for t in pi[p]]
            assert body["top_tokens"][li][p] == want
    # the last layer's lens is the model's own next-token distribution
    with torch.inference_mode():
        logits = m(torch.tensor([ids]))[0, -1].float()
    assert body["top_probs"][-1][-1][0] == pytest.approx(float(logits.softmax(-1).max()), rel=1e-4)


def test_lens_validation_names_field_and_limit(tiny_client):
    r = tiny_client.post("/api/lens", json={"prompt": PROMPT, "top": 11})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][-1] == "top"
    r = tiny_client.post("/api/lens", json={"prompt": "x" * 300})
    assert r.status_code == 422
    d = r.json()["detail"][0]
    assert d["loc"][-1] == "prompt" and "300 tokens" in d["msg"] and "limit is 256" in d["msg"]
    r = tiny_client.post("/api/lens", json={"prompt": ""})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][-1] == "prompt"
    r = tiny_client.post("/api/lens", json={"prompt": "a", "bogus": 1})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][-1] == "bogus"


# ------------------------------------------------------------------ /api/features/{sae}/{index}
@pytest.mark.parametrize("sae_name,index", [("fine", 7), ("coarse", 63)])
def test_feature_card_matches_numpy_and_plain_encode(tiny_client, tiny_engine, sae_name, index):
    r = tiny_client.get(f"/api/features/{sae_name}/{index}", params={"prompt": PROMPT, "top": 8})
    assert r.status_code == 200, r.text
    body = r.json()
    sae = tiny_engine.saes[sae_name]
    W_dec = sae.W_dec.detach().numpy().astype(np.float64)
    W_U = tiny_engine.model.W_U.detach().numpy().astype(np.float64)
    assert body["width"] == W_dec.shape[0]
    assert body["decoder_norm"] == pytest.approx(np.linalg.norm(W_dec[index]), rel=1e-5)
    proj = W_dec[index] @ W_U
    order = np.argsort(-proj)
    np.testing.assert_allclose([v for _, v in body["promoted"]], proj[order[:8]], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose([v for _, v in body["suppressed"]], proj[order[::-1][:8]], rtol=1e-4, atol=1e-6)
    assert [t for t, _ in body["promoted"]] == [token_text(tiny_engine.tokenizer, i) for i in order[:8]]
    assert body["neuronpedia_url"] is None  # the tiny profile has no Neuronpedia id

    ids = ids_of(tiny_engine, PROMPT)
    acts = topk_encode(sae, resid_at(tiny_engine, ids, tiny_engine.hook_name))[:, index].numpy()
    np.testing.assert_allclose(body["activations"], acts, rtol=1e-4, atol=1e-5)
    assert body["tokens"] == list(PROMPT)
    assert body["sink"][0] is True and not any(body["sink"][1:])
    # the maximum leaves the sink (position 0) out by default
    assert body["max_position"] == int(np.argmax(acts[1:])) + 1
    assert body["max_activation"] == pytest.approx(float(acts[1:].max()), rel=1e-4, abs=1e-6)


def test_feature_without_prompt_has_no_activations(tiny_client):
    body = tiny_client.get("/api/features/fine/0").json()
    assert body["activations"] is None and body["max_activation"] is None and len(body["promoted"]) == 10


@pytest.mark.parametrize("url,status,field", [
    ("/api/features/fine/512", 404, "index"),        # width of the tiny fine SAE
    ("/api/features/coarse/64", 404, "index"),
    ("/api/features/fine/100000000000000000000", 404, "index"),
    ("/api/features/fine/-1", 422, "index"),
    ("/api/features/fine/abc", 422, "index"),
    ("/api/features/medium/3", 422, "sae"),
    ("/api/features/fine/3?top=0", 422, "top"),
    ("/api/features/fine/3?top=51", 422, "top"),
    ("/api/features/fine/3?prompt=", 422, "prompt"),
])
def test_feature_bad_input_is_4xx_naming_the_field(tiny_client, url, status, field):
    r = tiny_client.get(url)
    assert r.status_code == status, r.text
    d = r.json()["detail"][0]
    assert d["loc"][-1] == field
    if status == 404:
        assert "features (0.." in d["msg"]


def test_feature_prompt_over_token_limit(tiny_client):
    r = tiny_client.get("/api/features/fine/3", params={"prompt": "y" * 257})
    assert r.status_code == 422 and "limit is 256" in r.json()["detail"][0]["msg"]


def test_neuronpedia_url_for_gemma_scope():
    from types import SimpleNamespace

    from app.api.analysis import neuronpedia_url
    from app.engine.profiles import get_profile

    eng = SimpleNamespace(profile=get_profile("gemma-2-2b"))
    assert neuronpedia_url(eng, "coarse", 1234) == "https://www.neuronpedia.org/gemma-2-2b/12-gemmascope-res-16k/1234"
    assert neuronpedia_url(eng, "fine", 5) == "https://www.neuronpedia.org/gemma-2-2b/12-gemmascope-res-262k/5"
    assert neuronpedia_url(SimpleNamespace(profile=get_profile("smollm2-135m")), "fine", 5) is None


# ------------------------------------------------------------------ /api/analyze
def test_analyze_features_quality_and_sinks(tiny_client, tiny_engine):
    body = tiny_client.post("/api/analyze", json={"prompt": PROMPT, "top_k": 5}).json()
    ids = ids_of(tiny_engine, PROMPT)
    x = resid_at(tiny_engine, ids, tiny_engine.hook_name)
    assert [t["token_id"] for t in body["tokens"]] == ids
    assert [t["sink"] for t in body["tokens"]] == [True] + [False] * (len(ids) - 1)
    assert body["sae_widths"] == {"coarse": 64, "fine": 512}
    assert body["lens"] is None  # only on request
    for name, sae in tiny_engine.saes.items():
        acts = topk_encode(sae, x)
        x_hat = (acts @ sae.W_dec.detach() + sae.b_dec.detach()).numpy().astype(np.float64)
        xn = x.numpy().astype(np.float64)
        for p, tok in enumerate(body["tokens"]):
            v = tok["saes"][name]
            if p == 0:
                assert v["indices"] == [] and v["values"] == []  # sink: left out of the ranking
            else:
                a = acts[p].numpy()
                order = [i for i in np.argsort(-a, kind="stable")[:5] if a[i] > 0]
                assert v["indices"] == [int(i) for i in order]
                np.testing.assert_allclose(v["values"], a[order], rtol=1e-4)
            rel = np.linalg.norm(xn[p] - x_hat[p]) / np.linalg.norm(xn[p])
            assert v["rel_error"] == pytest.approx(rel, rel=1e-4)
            cos = xn[p] @ x_hat[p] / np.linalg.norm(xn[p]) / np.linalg.norm(x_hat[p])
            assert v["cosine"] == pytest.approx(cos, rel=1e-4, abs=1e-6)
            assert v["l0"] == int((acts[p] > 0).sum())
        keep = xn[1:]
        ev = 1 - ((keep - x_hat[1:]) ** 2).sum() / ((keep - keep.mean(0)) ** 2).sum()
        assert body["explained_variance"][name] == pytest.approx(ev, rel=1e-3, abs=1e-5)


def test_analyze_include_sinks_and_lens(tiny_client):
    body = tiny_client.post("/api/analyze", json={"prompt": PROMPT, "include_sinks": True, "lens": True}).json()
    assert body["tokens"][0]["saes"]["fine"]["indices"]  # the sink is ranked when asked
    lens = tiny_client.post("/api/lens", json={"prompt": PROMPT}).json()
    assert body["lens"] == lens


def test_analyze_system_prompt_uses_chat_template(tiny_client, tiny_engine):
    body = tiny_client.post("/api/analyze", json={"prompt": "hi", "system_prompt": "be brief"}).json()
    want = tiny_engine.tokenizer.apply_chat_template(
        [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False)
    assert body["text"] == want
    special = set(tiny_engine.tokenizer.all_special_ids)
    assert [t["sink"] for t in body["tokens"]] == [i == 0 or t["token_id"] in special for i, t in enumerate(body["tokens"])]
    assert sum(t["sink"] for t in body["tokens"]) == 5  # 3 x <|im_start|> (one at position 0), 2 x <|im_end|>


def test_openapi_documents_the_routes(tiny_client):
    spec = tiny_client.get("/openapi.json").json()
    assert {"/api/analyze", "/api/lens", "/api/features/{sae}/{index}", "/health"} <= set(spec["paths"])
    assert {"LensRequest", "LensResponse", "FeatureResponse"} <= set(spec["components"]["schemas"])
    assert tiny_client.get("/docs").status_code == 200


# ------------------------------------------------------------------ real model
@pytest.mark.embedded
def test_embedded_lens_and_feature(embedded_engine):
    from tests.conftest import make_client

    with make_client(embedded_engine) as client:
        lens = client.post("/api/lens", json={"prompt": "The capital of France is"}).json()
        assert len(lens["layers"]) == 31
        assert lens["top_tokens"][-1][-1][0] == " Paris"
        assert lens["top_probs"][-1][-1][0] == pytest.approx(0.773, abs=0.02)  # field notes: 0.773 in HF and TL
        a = client.post("/api/analyze", json={"prompt": "The capital of France is", "top_k": 3}).json()
        assert a["tokens"][0]["sink"]
        f = a["tokens"][-1]["saes"]["fine"]["indices"][0]
        card = client.get(f"/api/features/fine/{f}", params={"prompt": "The capital of France is"}).json()
    ids = ids_of(embedded_engine, "The capital of France is")
    x = resid_at(embedded_engine, ids, embedded_engine.hook_name)
    acts = topk_encode(embedded_engine.saes["fine"], x)[:, f].numpy()
    np.testing.assert_allclose(card["activations"], acts, rtol=1e-3, atol=1e-3)
    assert card["activations"][-1] == pytest.approx(a["tokens"][-1]["saes"]["fine"]["values"][0], rel=1e-4)


def test_analysis_ranks_by_unusualness_with_labels(tiny_client, tiny_engine):
    """With an atlas, each token's list is: non-dense first, by activation / typical activation (plain-torch
    encode, the atlas's mean activation when firing), each with its label; rank=activation gives raw order."""
    from tests.atlas_fixtures import tiny_atlas, with_atlas

    eng = tiny_engine
    atlas = tiny_atlas(eng)
    with with_atlas(eng, atlas):
        body = tiny_client.post("/api/analyze", json={"prompt": PROMPT, "top_k": 6}).json()
        raw = tiny_client.post("/api/analyze", json={"prompt": PROMPT, "top_k": 6, "rank": "activation"}).json()
    ids = [t["token_id"] for t in body["tokens"]]
    x = resid_at(eng, ids, eng.hook_name)
    for n, sae in eng.saes.items():
        acts = topk_encode(sae, x).numpy()
        typical, dense = atlas.mean_when_firing[n], atlas.density[n] > 0.10
        for t, tr in zip(body["tokens"], raw["tokens"]):
            if t["sink"]:
                continue
            a = acts[t["position"]]
            fired = np.flatnonzero(a > 0).tolist()
            ratio = {i: a[i] / typical[i] if typical[i] > 0 else 0.0 for i in fired}
            want = sorted(fired, key=lambda i: (dense[i], -ratio[i], -a[i], i))[:6]
            v = t["saes"][n]
            assert v["indices"] == want
            assert np.allclose(v["values"], a[want], rtol=1e-4)
            assert v["labels"] == [atlas.label(n, i) for i in want]
            assert v["dense"] == [bool(dense[i]) for i in want]
            assert tr["saes"][n]["indices"] == sorted(fired, key=lambda i: (-a[i], i))[:6]


def _france_analysis(eng):
    from tests.conftest import make_client

    with make_client(eng) as client:
        a = client.post("/api/analyze", json={"prompt": "The capital of France is", "chat": False, "top_k": 5}).json()
    return {t["token"]: t for t in a["tokens"]}


@pytest.mark.embedded
def test_embedded_none_of_the_top_coarse_features_on_is_is_dense(embedded_engine):
    """Issue 24's bar on the shipped pair and atlas: Analyze "The capital of France is" (chat off) ranks no dense
    feature (> 10 % of the atlas's tokens, recounted from its firing counts) among the top 3 coarse on " is"."""
    eng = embedded_engine
    if eng.atlas is None:
        pytest.skip(f"no embedded atlas: {eng.atlas_status}")
    top_is = _france_analysis(eng)[" is"]["saes"]["coarse"]["indices"][:3]
    density = eng.atlas.summaries["coarse"]["n_firing"] / eng.atlas.n_valid
    assert all(density[i] <= 0.10 for i in top_is), [(i, float(density[i])) for i in top_is]


@pytest.mark.embedded
@pytest.mark.xfail(strict=True, reason="issue 24 open: the top features on ' France' are broad ones, and their labels "
                   "say so truly: C-1336 'de · est' fires on French-language text (\"coup d'oeil\", \"Je m'aime\"), "
                   "F-16224 'Python · country' on country names; no France token is among their 10 most frequent")
def test_embedded_top_features_on_france_are_labelled_with_france_words(embedded_engine):
    """The top coarse and fine features on " France" are labelled with France-related words (atlas labels)."""
    import re

    eng = embedded_engine
    if eng.atlas is None:
        pytest.skip(f"no embedded atlas: {eng.atlas_status}")
    toks = _france_analysis(eng)
    france = re.compile(r"fran|french|paris", re.I)
    for sae in ("coarse", "fine"):
        row = toks[" France"]["saes"][sae]
        assert france.search(row["labels"][0]), (sae, row["indices"][0], row["labels"][0])
