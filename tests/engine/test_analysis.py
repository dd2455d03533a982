"""app.engine.analysis against independent computations (plain torch / numpy from the weights)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from app.engine import analysis as an
from app.engine.analysis import lens as lens_mod
from app.engine.tokens import token_text, token_texts

PROMPT = "The capital of France is Paris. <|im_end|> Water boils at 100 degrees."


@pytest.fixture(scope="module")
def tiny(tiny_engine):
    ids = tiny_engine.tokenizer.encode(PROMPT, add_special_tokens=False)
    return tiny_engine, ids


def plain_resid(model, ids, layer: int) -> torch.Tensor:
    """Residual stream after block `layer`, via a hook (not the code under test)."""
    out = {}

    def make_grab_hook():
        def grab(act, hook):
            out["r"] = act.detach().clone()
        return grab

    with torch.inference_mode(), model.hooks(fwd_hooks=[(f"blocks.{layer}.hook_resid_post", make_grab_hook())]):
        model(torch.tensor([ids]))
    return out["r"][0].float()


def topk_encode(W_enc, b_enc, b_dec, x, k):
    W_enc, b_enc, b_dec = W_enc.detach(), b_enc.detach(), b_dec.detach()
    pre = (x - b_dec) @ W_enc + b_enc
    v, i = pre.topk(k, dim=-1)
    return torch.zeros_like(pre).scatter(-1, i, v.relu())


def rms_norm(x, w, eps):
    return x / torch.sqrt((x ** 2).mean(-1, keepdim=True) + eps) * w


def random_jumprelu(d: int, width: int, seed: int = 0):
    from sae_lens import JumpReLUSAE, JumpReLUSAEConfig

    g = torch.Generator().manual_seed(seed)
    sae = JumpReLUSAE(JumpReLUSAEConfig(d_in=d, d_sae=width, dtype="float32", device="cpu", apply_b_dec_to_input=False))
    with torch.no_grad():
        sae.W_enc.copy_(torch.randn(d, width, generator=g) / d ** 0.5)
        sae.W_dec.copy_(torch.randn(width, d, generator=g) / d ** 0.5)
        sae.b_enc.copy_(torch.randn(width, generator=g) * 0.1)
        sae.b_dec.copy_(torch.randn(d, generator=g) * 0.1)
        sae.threshold.copy_(torch.rand(width, generator=g) * 2)
    return sae


# --------------------------------------------------------------------------- analyze()
def test_topk_activations_match_plain_torch(tiny):
    eng, ids = tiny
    a = an.analyze(eng.model, eng.saes, eng.hook_name, ids, top_k=50)
    x = plain_resid(eng.model, ids, eng.profile.hook_layer)
    assert a.resid_norm == pytest.approx(x.norm(dim=-1).tolist(), rel=1e-5)
    for name, sae in eng.saes.items():
        acts = topk_encode(sae.W_enc, sae.b_enc, sae.b_dec, x, sae.cfg.k)
        x_hat = acts @ sae.W_dec.detach() + sae.b_dec.detach()
        for p, view in enumerate(a.per_sae[name]):
            nz = acts[p].nonzero().flatten()
            order = nz[acts[p][nz].argsort(descending=True)]
            assert list(view.indices) == order.tolist(), (name, p)
            assert view.values == pytest.approx(acts[p][order].tolist(), rel=1e-5, abs=1e-6)
            assert view.l0 == len(nz) <= sae.cfg.k
            err = (x[p] - x_hat[p]).norm() / x[p].norm()
            assert view.rel_error == pytest.approx(err.item(), rel=1e-4, abs=1e-6)
            assert view.cosine == pytest.approx(torch.nn.functional.cosine_similarity(x[p], x_hat[p], dim=0).item(), abs=1e-5)
        # explained variance over non-sink positions, in numpy
        keep = ~np.array(a.sink)
        xn, hn = x.numpy()[keep].astype(np.float64), x_hat.numpy()[keep].astype(np.float64)
        ev = 1 - ((xn - hn) ** 2).sum() / ((xn - xn.mean(0)) ** 2).sum()
        assert a.explained_variance[name] == pytest.approx(ev, abs=1e-5)


def test_jumprelu_activations_match_plain_torch(tiny):
    eng, ids = tiny
    sae = random_jumprelu(eng.model.cfg.d_model, 128)
    a = an.analyze(eng.model, {"j": sae}, eng.hook_name, ids, top_k=128)
    x = plain_resid(eng.model, ids, eng.profile.hook_layer)
    W_enc, b_enc, W_dec, b_dec, thr = (t.detach() for t in (sae.W_enc, sae.b_enc, sae.W_dec, sae.b_dec, sae.threshold))
    pre = x @ W_enc + b_enc  # Gemma Scope: no b_dec subtraction on the way in
    acts = (pre > thr) * pre.relu()
    assert (acts > 0).any()
    x_hat = acts @ W_dec + b_dec
    borderline = (pre - thr).abs() < 1e-4  # float summation order can flip these either way
    for p, view in enumerate(a.per_sae["j"]):
        ours, ref = set(view.indices), set(acts[p].nonzero().flatten().tolist())
        assert all(borderline[p, i] for i in ours ^ ref), (p, ours ^ ref)
        assert abs(view.l0 - len(ref)) <= int(borderline[p].sum())
        both = sorted(ours & ref)
        assert [dict(zip(view.indices, view.values))[i] for i in both] == pytest.approx(acts[p, both].tolist(), rel=1e-5)
        if not borderline[p].any():
            assert ours == ref
        assert view.rel_error == pytest.approx(((x[p] - x_hat[p]).norm() / x[p].norm()).item(), rel=1e-4)


def test_next_tokens_match_full_forward(tiny):
    eng, ids = tiny
    a = an.analyze(eng.model, eng.saes, eng.hook_name, ids, next_top=5)
    with torch.inference_mode():
        probs = eng.model(torch.tensor([ids]))[0, -1].softmax(-1)
    v, i = probs.topk(5)
    assert [t for t, _ in a.next_token_top] == [token_text(eng.tokenizer, t) for t in i.tolist()]
    assert [p for _, p in a.next_token_top] == pytest.approx(v.tolist(), rel=1e-5)
    assert a.tokens == tuple(token_texts(eng.tokenizer, ids))


def test_sinks(tiny):
    eng, ids = tiny
    x = plain_resid(eng.model, ids, eng.profile.hook_layer)
    special = eng.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert special in ids
    a = an.analyze(eng.model, eng.saes, eng.hook_name, ids)
    expect = [p == 0 or t == special for p, t in enumerate(ids)]
    assert list(a.sink) == expect
    # a massive-norm position: threshold between the largest and second largest non-special norm
    norms = x.norm(dim=-1).numpy()
    cand = [p for p in range(1, len(ids)) if not expect[p]]
    order = sorted(cand, key=lambda p: -norms[p])
    thr = float((norms[order[0]] + norms[order[1]]) / 2)
    a2 = an.analyze(eng.model, eng.saes, eng.hook_name, ids, sink_norm=thr)
    assert [p for p, s in enumerate(a2.sink) if s] == sorted({0, order[0]} | {p for p, e in enumerate(expect) if e})
    # explained variance leaves sinks out
    sae = eng.saes["coarse"]
    acts = topk_encode(sae.W_enc, sae.b_enc, sae.b_dec, x, sae.cfg.k)
    x_hat = (acts @ sae.W_dec.detach() + sae.b_dec.detach()).numpy()
    keep = ~np.array(a2.sink)
    xn = x.numpy()[keep]
    ev = 1 - ((xn - x_hat[keep]) ** 2).sum() / ((xn - xn.mean(0)) ** 2).sum()
    assert a2.explained_variance["coarse"] == pytest.approx(ev, abs=1e-4)


def test_explained_variance_and_sink_mask_units():
    x = torch.tensor([[1.0, 0.0], [3.0, 2.0], [5.0, 4.0]])
    x_hat = torch.tensor([[1.0, 1.0], [3.0, 2.0], [4.0, 4.0]])
    assert an.explained_variance(x, x_hat) == pytest.approx(1 - 2 / 16)
    assert np.isnan(an.explained_variance(x[:1], x_hat[:1]))


# --------------------------------------------------------------------------- logit lens
def test_logit_lens_matches_per_layer_computation(tiny):
    eng, ids = tiny
    m = eng.model
    lens = an.logit_lens(m, ids, top=5)
    n = m.cfg.n_layers
    assert lens.layers == ("embed",) + tuple(str(i) for i in range(n))
    resids = []

    def make_grab_hook(i):
        def grab(act, hook):
            resids.append((i, act[0].detach().clone()))
        return grab

    hooks = [("blocks.0.hook_resid_pre", make_grab_hook(-1))] + [(f"blocks.{i}.hook_resid_post", make_grab_hook(i)) for i in range(n)]
    with torch.inference_mode(), m.hooks(fwd_hooks=hooks):
        m(torch.tensor([ids]))
    resids = [r for _, r in sorted(resids, key=lambda t: t[0])]
    w_ln, W_U, b_U = m.ln_final.w.detach(), m.W_U.detach(), m.b_U.detach()
    for li, r in enumerate(resids):
        probs = (rms_norm(r, w_ln, m.cfg.eps) @ W_U + b_U).softmax(-1)
        v, i = probs.topk(5, dim=-1)
        for p in range(len(ids)):
            assert lens.top_tokens[li][p] == tuple(token_text(eng.tokenizer, t) for t in i[p].tolist()), (li, p)
            assert lens.top_probs[li][p] == pytest.approx(v[p].tolist(), abs=1e-4)  # the lens's bar is 1e-3
    # the last layer's lens is the model's output distribution
    with torch.inference_mode():
        out = m(torch.tensor([ids]))[0].softmax(-1)
    assert [c[0] for c in lens.top_probs[-1]] == pytest.approx(out.max(-1).values.tolist(), abs=1e-4)


def test_logit_lens_positions_subset(tiny):
    eng, ids = tiny
    full = an.logit_lens(eng.model, ids, top=3)
    sub = an.logit_lens(eng.model, ids, top=3, positions=[0, len(ids) - 1])
    for li in range(len(full.layers)):
        assert sub.top_tokens[li] == (full.top_tokens[li][0], full.top_tokens[li][-1])
        assert sub.top_probs[li][1] == pytest.approx(full.top_probs[li][-1], rel=1e-5)


def test_logit_lens_chunking_is_invisible(tiny, monkeypatch):
    eng, ids = tiny
    ref = an.logit_lens(eng.model, ids)
    monkeypatch.setattr(lens_mod, "LENS_ROWS_PER_CHUNK", 7)
    got = an.logit_lens(eng.model, ids)
    assert got.top_tokens == ref.top_tokens
    assert np.allclose(np.array(got.top_probs), np.array(ref.top_probs), rtol=1e-5)


# --------------------------------------------------------------------------- feature cards
def test_feature_card_matches_numpy(tiny):
    eng, ids = tiny
    sae = eng.saes["fine"]
    f = 17
    card = an.feature_card(eng.model, sae, "fine", f, top=6, token_ids=ids, hook_name=eng.hook_name)
    logit_dir = sae.W_dec[f].detach().numpy().astype(np.float64) @ eng.model.W_U.detach().numpy().astype(np.float64)
    order = np.argsort(-logit_dir)
    assert [t for t, _ in card.promoted] == [token_text(eng.tokenizer, i) for i in order[:6]]
    assert [v for _, v in card.promoted] == pytest.approx(logit_dir[order[:6]].tolist(), rel=1e-4)
    assert [v for _, v in card.suppressed] == pytest.approx(logit_dir[order[::-1][:6]].tolist(), rel=1e-4)
    assert card.decoder_norm == pytest.approx(float(np.linalg.norm(sae.W_dec[f].detach().numpy())), rel=1e-6)
    x = plain_resid(eng.model, ids, eng.profile.hook_layer)
    acts = topk_encode(sae.W_enc, sae.b_enc, sae.b_dec, x, sae.cfg.k)[:, f]
    assert card.activations == pytest.approx(acts.tolist(), abs=1e-5)
    assert card.max_activation == pytest.approx(acts.max().item(), abs=1e-5)


# --------------------------------------------------------------------------- embedded: the shipped SAEs
@pytest.mark.embedded
def test_shipped_saes_match_plain_torch_on_real_prompt(request):
    from safetensors.torch import load_file

    from app.engine.profiles import get_profile

    prof = get_profile("smollm2-135m")
    if not all((s.path / "cfg.json").exists() for s in (prof.coarse, prof.fine)):
        pytest.skip("the embedded SAEs are not trained yet")  # before paying for the model load
    eng = request.getfixturevalue("embedded_engine")
    ids = list(eng.tokenizer.encode("The capital of France is Paris, and the Eiffel Tower is", add_special_tokens=False))
    a = an.analyze(eng.model, eng.saes, eng.hook_name, ids, top_k=32, sink_norm=eng.profile.sink_norm)
    x = plain_resid(eng.model, ids, eng.profile.hook_layer)
    assert a.sink[0] and not any(a.sink[1:])
    for name, spec in (("coarse", eng.profile.coarse), ("fine", eng.profile.fine)):
        w = {k: v.float() for k, v in load_file(spec.path / "sae_weights.safetensors").items()}
        k = eng.saes[name].cfg.k
        acts = topk_encode(w["W_enc"], w["b_enc"], w["b_dec"], x, k)
        for p in range(1, len(ids)):
            view = a.per_sae[name][p]
            order = acts[p].nonzero().flatten()
            order = order[acts[p][order].argsort(descending=True)]
            assert list(view.indices[:10]) == order[:10].tolist()
            assert view.values == pytest.approx(acts[p][order].tolist()[: len(view.values)], rel=1e-3, abs=1e-3)
        x_hat = acts @ w["W_dec"] + w["b_dec"]
        xn, hn = x[1:].numpy().astype(np.float64), x_hat[1:].numpy().astype(np.float64)
        ev = 1 - ((xn - hn) ** 2).sum() / ((xn - xn.mean(0)) ** 2).sum()
        assert a.explained_variance[name] == pytest.approx(ev, abs=1e-3)
        assert ev > 0.5


@pytest.mark.embedded
def test_near_sink_tokens_are_left_out_of_rankings(request):
    """The profile's sink rule catches tokens on their way to becoming sinks, not only full sinks.

    The lone " " after " See" (atlas window 232) has a residual norm ~1,750 against ~160 for ordinary tokens; with
    the old rule (norm > 2,000) it counted and gave C-672 a 614 activation (typical: 15), its top atlas example.
    """
    from safetensors.torch import load_file

    eng = request.getfixturevalue("embedded_engine")
    ids = list(eng.tokenizer.encode(" See 1st {Defile}.] (Compare the river.", add_special_tokens=False))
    x = plain_resid(eng.model, ids, eng.profile.hook_layer)
    norms = x.norm(dim=-1)
    ordinary = norms[2:].median()
    assert norms[1] > 5 * ordinary  # the premise: position 1 is a near-sink here
    a = an.analyze(eng.model, eng.saes, eng.hook_name, ids, top_k=32, sink_norm=eng.profile.sink_norm)
    assert a.sink[0] and a.sink[1] and not any(a.sink[2:])
    w = {k: v.float() for k, v in load_file(eng.profile.coarse.path / "sae_weights.safetensors").items()}
    acts = topk_encode(w["W_enc"], w["b_enc"], w["b_dec"], x, eng.saes["coarse"].cfg.k)
    kept = [p for p in range(len(ids)) if not a.sink[p]]
    assert float(acts[1].max()) > 300  # what the old rule let through
    assert float(acts[kept].max()) < 150  # nothing left at several times an ordinary activation
