"""Every sae-lens architecture through the profile path: small SAEs (standard ReLU, gated, JumpReLU, TopK,
BatchTopK) built with sae-lens, saved with sae-lens's own save, loaded from the folder by a profile on the tiny
model; the engine's encode, reconstruction, clamp steering and discovery statistics against a plain-torch encode
from the saved safetensors."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from app.engine import analysis as an
from app.engine import discovery as disc
from app.engine import steering as ST
from app.engine.engine import Engine
from app.engine.loading import ProfileUnavailable
from app.engine.profiles import SAESpec, get_profile

HOOK = "blocks.1.hook_resid_post"
D = 32
ARCHS = ("standard", "gated", "jumprelu", "topk", "batchtopk")
PROMPTS = ["Sparse autoencoders of every kind.", "A second prompt, somewhat longer than the first one."]


def build_sae(arch: str, width: int, seed: int):
    """A random sae-lens SAE of `arch`: (SAE to save, save method name)."""
    import sae_lens as SL

    meta = SL.saes.sae.SAEMetadata(hook_name=HOOK, model_name="tiny")
    common = dict(d_in=D, d_sae=width, metadata=meta)
    if arch == "standard":
        sae, save = SL.StandardSAE(SL.StandardSAEConfig(**common)), "save_model"
    elif arch == "gated":
        sae, save = SL.GatedSAE(SL.GatedSAEConfig(**common)), "save_model"
    elif arch == "jumprelu":
        sae, save = SL.JumpReLUSAE(SL.JumpReLUSAEConfig(**common)), "save_model"
    elif arch == "topk":
        sae, save = SL.TopKSAE(SL.TopKSAEConfig(k=5, rescale_acts_by_decoder_norm=False, **common)), "save_model"
    elif arch == "batchtopk":  # trained with a batch-level top k; saved for inference as JumpReLU at its threshold
        sae = SL.BatchTopKTrainingSAE(SL.BatchTopKTrainingSAEConfig(k=5, rescale_acts_by_decoder_norm=False, **common))
        save = "save_inference_model"
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sae.named_parameters():
            if name in ("W_enc", "W_dec"):
                p.copy_(torch.randn(p.shape, generator=g) / D ** 0.5 * 3)
            elif name == "r_mag":
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
            elif name == "threshold":
                p.copy_(torch.rand(p.shape, generator=g) * 0.5)
            else:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
        if arch == "batchtopk":
            sae.topk_threshold.fill_(0.4)
    return sae, save


def plain_encode(arch: str, w: dict, cfg: dict, x: torch.Tensor) -> torch.Tensor:
    """Feature activations from the saved tensors with plain torch (float64)."""
    w = {k: v.double() for k, v in w.items()}
    x = x.double()
    if cfg.get("apply_b_dec_to_input", False):
        x = x - w["b_dec"]
    if arch == "gated":
        gate = (x @ w["W_enc"] + w["b_gate"]) > 0
        return gate * torch.relu(x @ (w["W_enc"] * w["r_mag"].exp()) + w["b_mag"])
    pre = x @ w["W_enc"] + w["b_enc"]
    if arch in ("jumprelu", "batchtopk"):
        return (pre > w["threshold"]) * torch.relu(pre)
    if arch == "topk":
        v, i = pre.topk(cfg["k"], dim=-1)
        return torch.zeros_like(pre).scatter(-1, i, v.relu())
    return torch.relu(pre)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """arch -> (engine, {name: (weights, cfg)}) with both SAEs of that architecture saved and loaded by path."""
    import json

    tiny = get_profile("tiny")
    out = {}
    for a, arch in enumerate(ARCHS):
        specs, raw = {}, {}
        for name, width in (("coarse", 48), ("fine", 160)):
            folder = tmp_path_factory.mktemp(f"{arch}-{name}")
            sae, save = build_sae(arch, width, seed=10 * a + width)
            getattr(sae, save)(folder)
            raw[name] = (load_file(str(folder / "sae_weights.safetensors")), json.loads((folder / "cfg.json").read_text()))
            specs[name] = SAESpec(name, f"{arch} {width}", path=folder)
        prof = dataclasses.replace(tiny, name=f"tiny-{arch}", coarse=specs["coarse"], fine=specs["fine"])
        out[arch] = (Engine.build(prof, "cpu"), raw)
    return out


def resid(eng, ids) -> torch.Tensor:
    with torch.inference_mode():
        _, cache = eng.model.run_with_cache(torch.tensor([ids]), names_filter=HOOK)
    return cache[HOOK][0].float()


@pytest.mark.parametrize("arch", ARCHS)
def test_loaded_architecture(saved, arch):
    eng, raw = saved[arch]
    expect = {"batchtopk": "jumprelu"}.get(arch, arch)
    for name in ("coarse", "fine"):
        assert eng.saes[name].cfg.architecture() == expect == raw[name][1]["architecture"]
        assert eng.saes[name].cfg.d_in == D


@pytest.mark.parametrize("arch", ARCHS)
def test_analysis_encode_and_reconstruction(saved, arch):
    eng, raw = saved[arch]
    ids = eng.tokenizer.encode(PROMPTS[0], add_special_tokens=False)
    a = an.analyze(eng.model, eng.saes, HOOK, ids, top_k=200)
    x = resid(eng, ids)
    keep = ~torch.tensor(a.sink)
    for name in ("coarse", "fine"):
        w, cfg = raw[name]
        acts = plain_encode(arch, w, cfg, x)
        assert (acts[keep] > 0).any(), "the random SAE should fire somewhere"
        for pos, view in enumerate(a.per_sae[name]):
            ref = {i: float(acts[pos, i]) for i in torch.nonzero(acts[pos] > 0).flatten().tolist()}
            got = dict(zip(view.indices, view.values))
            assert set(got) == set(ref), (name, pos)
            for i in ref:
                assert got[i] == pytest.approx(ref[i], rel=1e-4, abs=1e-5)
        x_hat = acts @ w["W_dec"].double() + w["b_dec"].double()
        xk, hk = x[keep].double().numpy(), x_hat[keep].numpy()
        ev = 1 - ((xk - hk) ** 2).sum() / ((xk - xk.mean(0)) ** 2).sum()
        assert a.explained_variance[name] == pytest.approx(ev, abs=1e-4)


@pytest.mark.parametrize("arch", ARCHS)
def test_clamp_reads_the_sae_own_encoder(saved, arch):
    eng, raw = saved[arch]
    ids = eng.tokenizer.encode(PROMPTS[1], add_special_tokens=False)
    x = resid(eng, ids)
    w, cfg = raw["fine"]
    acts = plain_encode(arch, w, cfg, x)
    f = int(acts[1:].amax(0).argmax())
    assert acts[1:, f].max() > 0
    delta = ST.steering_delta(eng.saes, [ST.SteerFeature("fine", f, "clamp", 1.5)], x)
    expected = (1.5 - acts[:, f:f + 1]) * w["W_dec"][f].double()
    torch.testing.assert_close(delta.double(), expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("arch", ARCHS)
def test_discovery_stats(saved, arch):
    eng, raw = saved[arch]
    id_lists = [eng.tokenizer.encode(p, add_special_tokens=False) for p in PROMPTS]
    st = disc.collect_stats(eng.model, eng.saes, HOOK, id_lists, 1, sink_norm=eng.profile.sink_norm)
    for name in ("coarse", "fine"):
        w, cfg = raw[name]
        dense = st.per_sae[name].dense(range(w["W_dec"].shape[0]), "max")
        for p, ids in enumerate(id_lists):
            x = resid(eng, ids)
            keep = ~an.sink_mask(eng.model, ids, x, eng.profile.sink_norm)
            ref = plain_encode(arch, w, cfg, x[keep]).amax(0).clamp_min(0)
            np.testing.assert_allclose(dense[p].numpy(), ref.numpy(), rtol=1e-4, atol=1e-5)


def test_pair_validation_one_line(saved, tmp_path):
    """Wrong hook, wrong width, fine not wider: each stops the load with one line naming the problem."""
    eng, _ = saved["standard"]
    tiny = get_profile("tiny")
    coarse, fine = eng.profile.coarse, eng.profile.fine
    bad_hook = dataclasses.replace(tiny, hook="blocks.2.hook_resid_post", coarse=coarse, fine=fine)
    with pytest.raises(ProfileUnavailable, match="trained on blocks.1.hook_resid_post, not on the profile's hook"):
        Engine.build(bad_hook, "cpu")
    swapped = dataclasses.replace(tiny, coarse=dataclasses.replace(fine, name="coarse"),
                                  fine=dataclasses.replace(coarse, name="fine"))
    with pytest.raises(ProfileUnavailable, match="must be wider than the coarse one"):
        Engine.build(swapped, "cpu")
    wide = dataclasses.replace(tiny, options={**tiny.options, "d_model": 64}, coarse=coarse, fine=fine)
    with pytest.raises(ProfileUnavailable, match="d_in 32, the model's width is 64"):
        Engine.build(wide, "cpu")
    nohook = dataclasses.replace(tiny, hook="blocks.7.hook_resid_post", coarse=coarse, fine=fine)
    with pytest.raises(ProfileUnavailable, match="no hook point blocks.7.hook_resid_post"):
        Engine.build(nohook, "cpu")
    missing = dataclasses.replace(tiny, coarse=dataclasses.replace(coarse, path=tmp_path / "nope"), fine=fine)
    with pytest.raises(ProfileUnavailable, match="SAE coarse missing at"):
        Engine.build(missing, "cpu")
