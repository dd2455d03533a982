"""The gemma-2-2b path, structurally: Gemma 2's architecture options on a narrow random model (checked against
HF transformers' Gemma 2), Gemma Scope SAEs written in their own params.npz layout and loaded by sae-lens's
converter for that release, the shared loader and analysis on top; and the missing-weights failure at start."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from app.engine import analysis as an
from app.engine.tiny import GEMMA2_SCALED, gemma2_scaled_profile, tiny_gemma2_hf, tiny_gemma2_model

ROOT = Path(__file__).resolve().parents[2]
REPO = "google/gemma-scope-2b-pt-res"
FOLDERS = {"coarse": "layer_12/width_16k/average_l0_82", "fine": "layer_12/width_262k/average_l0_121"}


def gemma_scope_params(d: int, width: int, seed: int) -> dict[str, np.ndarray]:
    """Gemma Scope's params.npz keys and shapes: W_enc [d, F], W_dec [F, d], b_enc [F], b_dec [d], threshold [F]."""
    rng = np.random.default_rng(seed)
    return {"W_enc": (rng.standard_normal((d, width)) / d ** 0.5).astype(np.float32),
            "W_dec": (rng.standard_normal((width, d)) / d ** 0.5).astype(np.float32),
            "b_enc": (rng.standard_normal(width) * 0.1).astype(np.float32),
            "b_dec": (rng.standard_normal(d) * 0.1).astype(np.float32),
            "threshold": rng.uniform(0.0, 1.5, width).astype(np.float32)}


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory):
    """A Hugging Face hub cache holding the two Gemma Scope folders the profile names (scaled-down arrays)."""
    cache = tmp_path_factory.mktemp("hf") / "hub"
    commit = "0" * 40
    snap = cache / f"models--{REPO.replace('/', '--')}" / "snapshots" / commit
    params = {}
    for i, (name, folder) in enumerate(FOLDERS.items()):
        width = (128, 512)[i]
        params[name] = gemma_scope_params(GEMMA2_SCALED["d_model"], width, seed=i)
        (snap / folder).mkdir(parents=True)
        np.savez(snap / folder / "params.npz", **params[name])
    (cache / f"models--{REPO.replace('/', '--')}" / "refs").mkdir()
    (cache / f"models--{REPO.replace('/', '--')}" / "refs" / "main").write_text(commit)
    return cache, params


@pytest.fixture(scope="module")
def gemma_engine(hub_cache):
    import huggingface_hub.constants as C

    from app.engine.engine import Engine

    cache, _ = hub_cache
    mp = pytest.MonkeyPatch()
    mp.setattr(C, "HF_HUB_CACHE", str(cache))
    mp.setattr(C, "HF_HUB_OFFLINE", True)
    try:
        yield Engine.build(gemma2_scaled_profile((128, 512)), device="cpu")
    finally:
        mp.undo()


def test_model_has_gemma2_options_and_matches_hf():
    m = tiny_gemma2_model({})
    cfg = m.cfg
    assert cfg.original_architecture == "Gemma2ForCausalLM"
    assert cfg.n_layers == 26 and cfg.attn_types == ["local", "global"] * 13
    assert (cfg.attn_scores_soft_cap, cfg.output_logits_soft_cap) == (50.0, 30.0)
    assert cfg.use_normalization_before_and_after and cfg.act_fn == "gelu_pytorch_tanh" and cfg.gated_mlp
    assert cfg.n_key_value_heads < cfg.n_heads and cfg.window_size == GEMMA2_SCALED["window_size"]
    hf = tiny_gemma2_hf({})
    ids = torch.tensor([[256] + list(range(40, 88))])  # longer than the sliding window: local layers matter
    with torch.inference_mode():
        ref, ours = hf(ids).logits, m(ids)
    assert ref.abs().max() > 25  # near the output soft cap: the cap is exercised
    assert (ours - ref).abs().max().item() < 1e-3


def test_gemma_scope_saes_through_sae_lens_converter(gemma_engine, hub_cache):
    from sae_lens import JumpReLUSAE

    _, params = hub_cache
    for name, sae in gemma_engine.saes.items():
        p = params[name]
        assert isinstance(sae, JumpReLUSAE)
        assert sae.cfg.metadata.hook_name == "blocks.12.hook_resid_post" == gemma_engine.hook_name
        assert sae.cfg.apply_b_dec_to_input is False  # Gemma Scope encodes x, not x - b_dec
        for key in ("W_enc", "W_dec", "b_enc", "b_dec", "threshold"):
            np.testing.assert_array_equal(getattr(sae, key).detach().numpy(), p[key])


def test_analysis_on_gemma_path_matches_plain_torch(gemma_engine, hub_cache):
    _, params = hub_cache
    eng = gemma_engine
    ids = [256] + list(eng.tokenizer.encode("Gemma Scope JumpReLU on a narrow Gemma 2.", add_special_tokens=False))
    a = an.analyze(eng.model, eng.saes, eng.hook_name, ids, top_k=512)
    store = {}

    def make_grab_hook():
        def grab(act, hook):
            store["x"] = act[0].detach().clone()
        return grab

    with torch.inference_mode(), eng.model.hooks(fwd_hooks=[(eng.hook_name, make_grab_hook())]):
        logits = eng.model(torch.tensor([ids]))
    x = store["x"].numpy().astype(np.float64)
    for name in ("coarse", "fine"):
        p = {k: v.astype(np.float64) for k, v in params[name].items()}
        pre = x @ p["W_enc"] + p["b_enc"]
        acts = (pre > p["threshold"]) * np.maximum(pre, 0)
        clear = np.abs(pre - p["threshold"]) > 1e-4
        for pos, view in enumerate(a.per_sae[name]):
            ref = set(np.nonzero(acts[pos])[0].tolist())
            if clear[pos].all():
                assert set(view.indices) == ref and view.l0 == len(ref)
            got = dict(zip(view.indices, view.values))
            for i in set(got) & ref:
                assert got[i] == pytest.approx(acts[pos, i], rel=1e-4)
        x_hat = acts @ p["W_dec"] + p["b_dec"]
        keep = ~np.array(a.sink)
        ev = 1 - ((x[keep] - x_hat[keep]) ** 2).sum() / ((x[keep] - x[keep].mean(0)) ** 2).sum()
        assert a.explained_variance[name] == pytest.approx(ev, abs=1e-3)
    probs = logits[0, -1].softmax(-1)
    assert [q for _, q in a.next_token_top][:3] == pytest.approx(probs.topk(3).values.tolist(), rel=1e-4)
    lens = an.logit_lens(eng.model, ids, top=3)  # the last row is the model's output, soft cap included
    assert [c[0] for c in lens.top_probs[-1]] == pytest.approx(logits[0].softmax(-1).max(-1).values.tolist(), rel=1e-4)


def test_serve_gemma_without_weights_fails_with_one_line(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "TRANSFORMERS_OFFLINE": "1",
           "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    env.pop("HF_TOKEN", None)
    proc = subprocess.run([sys.executable, "-m", "app", "serve", "--profile", "gemma-2-2b", "--port", "18765"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    assert "gemma-2-2b" in errors[0] and "Hugging Face cache" in errors[0]
    assert "serving" not in proc.stdout


def test_docker_compose_serves_gemma_with_health_check():
    import yaml

    svc = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())["services"]["navigator"]
    assert svc["command"][-6:] == ["serve", "--profile", "gemma-2-2b", "--host", "0.0.0.0", "--port", "8000"][-6:]
    assert "/health" in " ".join(svc["healthcheck"]["test"])
    assert any(v.endswith(":/hf") for v in svc["volumes"]) and svc["environment"]["HF_HOME"] == "/hf"
    assert svc["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    assert "ARG TORCH_SPEC" in dockerfile and "HEALTHCHECK" in dockerfile and "/health" in dockerfile
