"""lens_kind in the JSON API: 'tuned' reads each layer through the profile's tuned lens (checked against plain torch:
the translator, then RMSNorm + unembedding, and the KL to the model's output over the full vocabulary); without a
tuned lens it is a 422 naming lens_kind and why; a tuned analysis saves, opens and re-runs like every view."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from app.engine import tuned_lens as TL
from tests.api.test_analysis import PROMPT, ids_of, resid_at, rms_unembed
from tests.conftest import make_client


@pytest.fixture()
def tuned_engine(tiny_engine, tmp_path):
    """The tiny engine with a random (far from identity) tuned lens loaded from a folder, restored after."""
    m = tiny_engine.model
    n, d = m.cfg.n_layers, m.cfg.d_model
    g = torch.Generator().manual_seed(1)
    lens = TL.TunedLens(torch.eye(d) + 0.4 * torch.randn(n, d, d, generator=g), torch.randn(n, d, generator=g))
    TL.save_tuned_lens(lens, tmp_path / "lens" / "tiny", "tiny")
    before = tiny_engine.tuned_lens, tiny_engine.tuned_lens_status
    tiny_engine.load_tuned_lens(tmp_path / "lens")
    assert tiny_engine.tuned_lens_status == "ok"
    yield tiny_engine
    tiny_engine.tuned_lens, tiny_engine.tuned_lens_status = before


@pytest.fixture()
def client(tuned_engine, tmp_path):
    with make_client(tuned_engine, store_url=f"sqlite:///{tmp_path}/e.db") as c:
        yield c


def names(n):
    return ["blocks.0.hook_resid_pre"] + [f"blocks.{i}.hook_resid_post" for i in range(n)]


def test_tuned_lens_matches_plain_torch(client, tuned_engine):
    body = client.post("/api/lens", json={"prompt": PROMPT, "top": 5, "lens_kind": "tuned"}).json()
    m, lens = tuned_engine.model, tuned_engine.tuned_lens
    ids = ids_of(tuned_engine, PROMPT)
    rows = [resid_at(tuned_engine, ids, nm) for nm in names(m.cfg.n_layers)]
    probs = [rms_unembed(m, r @ lens.weight[i].T + lens.bias[i]) for i, r in enumerate(rows[:-1])]
    probs.append(rms_unembed(m, rows[-1]))  # the last layer is the model's own output: no translator
    final = probs[-1]
    assert body["lens_kind"] == "tuned"
    for li, p in enumerate(probs):
        pv, _ = p.topk(5, dim=-1)
        np.testing.assert_allclose(np.array(body["top_probs"][li]), pv.numpy(), atol=1e-5)
        kl = (final * (final.log() - p.log())).sum(-1)
        # the page's lens runs the bf16 kernel (its KL bar is 2e-3 nats; tests/engine/test_lens_precision.py); the
        # fp32 kernel's KL is pinned to 1e-5 in tests/engine/test_tuned_lens.py
        np.testing.assert_allclose(np.array(body["kl"][li]), kl.numpy(), atol=2e-3)
    kl_mean = np.array(body["kl"])[:, ~np.array(body["sink"])].mean(-1)
    np.testing.assert_allclose(np.array(body["kl_mean"]), kl_mean, atol=1e-6)
    assert body["sink"][0] and body["kl"][-1] == [0.0] * len(ids)


def test_logit_is_the_default_and_differs_from_tuned(client):
    logit = client.post("/api/lens", json={"prompt": PROMPT}).json()
    tuned = client.post("/api/lens", json={"prompt": PROMPT, "lens_kind": "tuned"}).json()
    assert logit["lens_kind"] == "logit" and tuned["lens_kind"] == "tuned"
    assert logit["top_probs"][0] != tuned["top_probs"][0] and logit["top_probs"][-1] == tuned["top_probs"][-1]


def test_tuned_without_a_lens_is_422_naming_lens_kind(tiny_client, tiny_engine):
    assert tiny_engine.tuned_lens is None
    for path, body in (("/api/lens", {"prompt": PROMPT, "lens_kind": "tuned"}),
                       ("/api/analyze", {"prompt": PROMPT, "lens": True, "lens_kind": "tuned"})):
        r = tiny_client.post(path, json=body)
        assert r.status_code == 422, r.text
        d = r.json()["detail"][0]
        assert d["loc"] == ["body", "lens_kind"] and "no tuned lens" in d["msg"] and "data/lens/tiny" in d["msg"]
    r = tiny_client.post("/api/lens", json={"prompt": PROMPT, "lens_kind": "jacobian"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][-1] == "lens_kind"


def test_tuned_analysis_saves_opens_and_reruns(client):
    inputs = {"prompt": PROMPT, "lens": True, "lens_kind": "tuned"}
    result = client.post("/api/analyze", json=inputs).json()
    assert result["lens"]["lens_kind"] == "tuned"
    r = client.post("/api/explorations", json={"kind": "analysis", "title": "t", "inputs": inputs, "result": result})
    assert r.status_code == 201, r.text
    i = r.json()["id"]
    page = client.get(f"/e/{i}").text
    assert "Tuned lens" in page and "lens-kl-fig" in page and 'name="lens_kind"' not in page  # no live switch
    rr = client.post(f"/api/explorations/{i}/rerun").json()
    assert rr["result_matches"] is True and rr["first_difference"] is None
