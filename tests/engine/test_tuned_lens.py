"""Tuned lens: the translators as the lens applies them (through transformer-lens, chunked, batched) against an
independent computation -- a plain-torch affine map h + A h + b of the HF model's hidden states, then the HF
model's own final norm and lm_head -- on a small random Llama saved with save_pretrained; the package's folder
format; KL against torch's log_softmax; what a missing or mismatched lens says."""
from __future__ import annotations

import json

import pytest
import torch

from app.engine import analysis as an
from app.engine import tuned_lens as TL
from app.engine.analysis import lens as lens_mod
from app.engine.analysis import unembed
from app.engine.loading import load_model
from app.engine.profiles import Profile, SAESpec
from app.engine.random_models import save_random_hf
from app.engine.tokens import token_text

PROMPT = list(range(40, 75))


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    from transformers import AutoModelForCausalLM

    folder = save_random_hf("llama", tmp_path_factory.mktemp("llama") / "model")
    prof = Profile(name="llama", display="llama", loader="hf_dir", hook_layer=1, coarse=SAESpec("coarse", "c"),
                   fine=SAESpec("fine", "f"), model_name=str(folder), hook="blocks.1.hook_resid_post")
    hf = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    return load_model(prof).model, hf


def random_lens(n: int, d: int, folder, seed: int = 0) -> TL.TunedLens:
    """A far-from-identity lens saved in the package's format and loaded back (fp16 on disk)."""
    g = torch.Generator().manual_seed(seed)
    lens = TL.TunedLens(torch.eye(d) + 0.3 * torch.randn(n, d, d, generator=g), torch.randn(n, d, generator=g), "x")
    TL.save_tuned_lens(lens, folder, "random-llama")
    return TL.load_tuned_lens(folder, n, d)


def independent(hf, folder, ids):
    """Per lens row, logits from plain torch: the HF hidden states (embedding, blocks 0..n-2) through h + A h + b
    with A, b read straight from params.pt, then hf.model.norm and hf.lm_head; the last row is HF's own output."""
    state = torch.load(folder / "params.pt", weights_only=True)
    with torch.no_grad():
        out = hf(torch.tensor([ids]), output_hidden_states=True)
        rows = []
        for i, h in enumerate(out.hidden_states[:-1]):
            A, b = state[f"{i}.weight"].float(), state[f"{i}.bias"].float()
            h = h[0] + h[0] @ A.T + b
            rows.append(hf.lm_head(hf.model.norm(h)))
        rows.append(out.logits[0])
    return torch.stack(rows).float()  # [n+1, pos, vocab]


def test_tuned_lens_matches_plain_torch_affine_then_hf_norm_and_lm_head(llama, tmp_path, monkeypatch):
    """Top-k probabilities and every cell's KL to the output, to 1e-5, with chunks that split layers (the maths, on the
    exact fp32 kernel; the int8 and bf16 kernels' bar against it is tests/engine/test_lens_precision.py)."""
    monkeypatch.setattr(unembed, "pick_precision", lambda W_U, low_precision: "fp32")
    model, hf = llama
    n, d = model.cfg.n_layers, model.cfg.d_model
    lens = random_lens(n, d, tmp_path)
    monkeypatch.setattr(lens_mod, "LENS_ROWS_PER_CHUNK", 7)  # chunk edges inside layers: the KL's position indexing
    got = an.logit_lens(model, PROMPT, top=4, tuned=lens)
    ref = independent(hf, tmp_path, PROMPT).log_softmax(-1)
    pv, pi = ref.exp().topk(4, dim=-1)
    assert got.kind == "tuned"
    assert torch.tensor(got.top_probs).numpy() == pytest.approx(pv.numpy(), abs=1e-5)
    assert [[list(c) for c in row] for row in got.top_tokens] == \
        [[[token_text(model.tokenizer, t) for t in c] for c in row] for row in pi.tolist()]
    final = ref[-1]
    kl = (final.exp() * (final - ref)).sum(-1)  # [n+1, pos]
    assert torch.tensor(got.kl).numpy() == pytest.approx(kl.numpy(), abs=1e-5)
    assert float(kl[:-1].mean()) > 0.1  # the map is far from the identity: the check is not vacuous


def test_logit_lens_kl_and_identity_tuned_lens(llama, monkeypatch):
    """The logit lens's KL against torch (exact fp32 kernel); an identity-initialised tuned lens reads exactly as the
    logit lens."""
    monkeypatch.setattr(unembed, "pick_precision", lambda W_U, low_precision: "fp32")
    model, hf = llama
    n, d = model.cfg.n_layers, model.cfg.d_model
    logit = an.logit_lens(model, PROMPT, top=3)
    with torch.no_grad():
        out = hf(torch.tensor([PROMPT]), output_hidden_states=True)
        ref = torch.stack([hf.lm_head(hf.model.norm(h[0])) for h in out.hidden_states[:-1]] + [out.logits[0]])
    lp, lq = ref[-1].expand_as(ref).float().log_softmax(-1), ref.float().log_softmax(-1)
    kl = (lp.exp() * (lp - lq)).sum(-1)  # KL(final || layer) in nats, plain torch
    assert torch.tensor(logit.kl).numpy() == pytest.approx(kl.numpy(), abs=1e-5)
    same = an.logit_lens(model, PROMPT, top=3, tuned=TL.identity_lens(n, d))
    assert same.top_tokens == logit.top_tokens
    assert torch.tensor(same.top_probs).numpy() == pytest.approx(torch.tensor(logit.top_probs).numpy(), abs=1e-6)
    assert logit.kl_mean == pytest.approx(kl[:, 1:].mean(-1).tolist(), abs=1e-5)  # position 0 left out
    assert logit.sink[0] and not any(logit.sink[1:])


def test_tuned_and_logit_lenses_are_cached_apart(llama, tmp_path):
    model, _ = llama
    lens = random_lens(model.cfg.n_layers, model.cfg.d_model, tmp_path)
    cache = an.ResidualCache()
    key = cache.key("fp", PROMPT)
    a = an.logit_lens(model, PROMPT, resid_cache=cache, cache_key=key)
    b = an.logit_lens(model, PROMPT, resid_cache=cache, cache_key=key, tuned=lens)
    assert (a.kind, b.kind) == ("logit", "tuned") and a.top_probs != b.top_probs
    assert an.logit_lens(model, PROMPT, resid_cache=cache, cache_key=key, tuned=lens) is b


def test_folder_format_is_the_packages(tmp_path):
    """config.json keys and params.pt's `{i}.weight` = A (translator added residually), fp16 on disk."""
    lens = random_lens(3, 8, tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["num_hidden_layers"] == 3 and cfg["d_model"] == 8 and cfg["lens_type"] == "linear_tuned_lens"
    state = torch.load(tmp_path / "params.pt", weights_only=True)
    assert sorted(state) == sorted(f"{i}.{w}" for i in range(3) for w in ("weight", "bias"))
    assert state["0.weight"].dtype == torch.float16
    assert torch.allclose(lens.weight[1], state["1.weight"].float() + torch.eye(8))


def test_missing_or_mismatched_lens_says_why(tmp_path):
    with pytest.raises(TL.LensUnavailable, match="no tuned lens in"):
        TL.load_tuned_lens(tmp_path / "none", 3, 8)
    random_lens(3, 8, tmp_path)
    with pytest.raises(TL.LensUnavailable, match="for 3 layers of width 8; the model has 4 of width 8"):
        TL.load_tuned_lens(tmp_path, 4, 8)
    prof = Profile(name="p", display="p", loader="random", hook_layer=0, coarse=SAESpec("coarse", "c"),
                   fine=SAESpec("fine", "f"))
    lens, why = TL.find_tuned_lens(prof, 3, 8, root=tmp_path / "lenses", hf_home=tmp_path / "hf")
    assert lens is None and "no tuned lens in" in why and "make lens" in why
    (tmp_path / "lenses").mkdir()
    random_lens(3, 8, tmp_path / "lenses" / "p")
    lens, why = TL.find_tuned_lens(prof, 3, 8, root=tmp_path / "lenses", hf_home=tmp_path / "hf")
    assert why == "ok" and lens is not None and lens.n_layers == 3


def test_published_lens_found_in_the_hf_cache(tmp_path):
    """A lens of the tuned-lens project's space in the HF cache, found by the model's repo name."""
    prof = Profile(name="gpt2-small", display="g", loader="pretrained", hook_layer=0, coarse=SAESpec("coarse", "c"),
                   fine=SAESpec("fine", "f"), hf_repo="gpt2")
    folder = tmp_path / "hf" / "hub" / TL.HF_LENS_SPACE / "snapshots" / "abc" / "lens" / "gpt2"
    random_lens(3, 8, folder)
    lens, why = TL.find_tuned_lens(prof, 3, 8, root=tmp_path / "none", hf_home=tmp_path / "hf")
    assert why == "ok" and lens.source == str(folder)
