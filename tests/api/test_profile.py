"""GET /api/profile: the loaded profile's model, hook and SAE pair, checked against the tensors themselves."""
from __future__ import annotations


def test_profile_json_matches_the_loaded_tensors(tiny_client, tiny_engine):
    r = tiny_client.get("/api/profile")
    assert r.status_code == 200
    p = r.json()
    m = tiny_engine.model
    assert (p["name"], p["hook_name"], p["loader"]) == ("tiny", "blocks.1.hook_resid_post", "random")
    assert (p["n_layers"], p["d_model"], p["architecture"]) == (m.cfg.n_layers, m.cfg.d_model, "LlamaForCausalLM")
    assert p["model_params"] == sum(t.numel() for t in m.parameters())
    assert p["decoder"] == "FastLlamaDecoder" and p["prepend_bos"] is False
    saes = {s["name"]: s for s in p["saes"]}
    for name, sae in tiny_engine.saes.items():
        s = saes[name]
        assert (s["architecture"], s["d_sae"], s["d_in"], s["dtype"]) == ("topk", sae.cfg.d_sae, m.cfg.d_model, "float32")
        n = sum(t.numel() for t in list(sae.parameters()) + list(sae.buffers()))
        assert s["bytes"] == 4 * n and s["hook_name"] == "blocks.1.hook_resid_post"
    assert saes["fine"]["d_sae"] > saes["coarse"]["d_sae"]
    others = {o["name"]: o for o in p["profiles"]}
    assert {"smollm2-135m", "gemma-2-2b", "gpt2-small", "llama-3.1-8b", "tiny"} <= set(others)
    assert others["tiny"]["missing"] == [] and others["gpt2-small"]["command"] == "make run PROFILE=gpt2-small"
    assert p["pair_independence"] is None or "mean_same_index_cosine" in p["pair_independence"]
    assert "--coarse RELEASE:ID|PATH" in p["adhoc_command"]


def test_profile_reports_each_evaluation_set_of_metrics_json(tmp_path):
    """Both held-out sets of a metrics.json (eval_sets) come back per SAE; an old single-set file is the corpus's."""
    import json

    from app.engine.profile_info import sae_quality

    new = {"explained_variance": 0.8, "eval_sets": {"corpus": {"explained_variance": 0.8, "ce_loss_recovered": 0.97,
                                                               "mean_l0": 32.0, "dead_fraction": 0.0, "eval_tokens": 10},
                                                    "chat": {"explained_variance": 0.7, "ce_loss_recovered": 0.9,
                                                             "mean_l0": 31.5, "dead_fraction": 0.01, "eval_tokens": 5}}}
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "metrics.json").write_text(json.dumps(new))
    assert sae_quality(tmp_path / "a") == new["eval_sets"]
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "metrics.json").write_text(json.dumps({"explained_variance": 0.81, "history": [1, 2], "mean_l0": 32}))
    assert sae_quality(tmp_path / "b") == {"corpus": {"explained_variance": 0.81, "mean_l0": 32}}
    assert sae_quality(tmp_path / "c") is None and sae_quality(None) is None


def test_profile_says_whether_there_is_a_tuned_lens(tiny_client, tiny_engine, tmp_path):

    from app.engine import tuned_lens as TL

    assert "no tuned lens in data/lens/tiny" in tiny_client.get("/api/profile").json()["tuned_lens"]
    n, d = tiny_engine.model.cfg.n_layers, tiny_engine.model.cfg.d_model
    TL.save_tuned_lens(TL.identity_lens(n, d), tmp_path / "tiny", "tiny")
    before = tiny_engine.tuned_lens, tiny_engine.tuned_lens_status
    tiny_engine.load_tuned_lens(tmp_path)
    try:
        assert tiny_client.get("/api/profile").json()["tuned_lens"] == f"ok ({tmp_path / 'tiny'})"
        assert f"ok ({tmp_path / 'tiny'})" in tiny_client.get("/profile").text
    finally:
        tiny_engine.tuned_lens, tiny_engine.tuned_lens_status = before


def test_profile_counts_the_atlas_position_artefacts(tiny_client, tiny_engine):
    """Per SAE, the features whose top examples sit at window positions 1-7 at least half the time, counted from the
    stored top rows with numpy; none without an atlas."""
    import numpy as np

    from tests.atlas_fixtures import tiny_atlas, with_atlas

    atlas = tiny_atlas(tiny_engine)
    want = {}
    for name, s in atlas.summaries.items():
        rows = np.asarray(s["top_rows"])
        n = (rows >= 0).sum(1)
        early = ((rows >= 0) & (rows % atlas.ctx >= 1) & (rows % atlas.ctx < 8)).sum(1)
        want[name] = int(((n >= 5) & (early >= 0.5 * n)).sum())
    with with_atlas(tiny_engine, atlas):
        p = tiny_client.get("/api/profile").json()
        page = tiny_client.get("/profile").text
    assert p["atlas_position_artefacts"] == want
    assert f"coarse <b>{want['coarse']}</b>" in page and f"fine <b>{want['fine']}</b>" in page
    with with_atlas(tiny_engine, None):
        assert tiny_client.get("/api/profile").json()["atlas_position_artefacts"] is None
