"""The logit lens of app/engine/analysis.py (residuals kept by the analysis forward, fused top-k + normaliser)
against the notebook way: transformer-lens run_with_cache, accumulated_resid(apply_ln=True), unembed, softmax."""
from __future__ import annotations

import contextlib

import pytest
import torch

from app.engine import analysis as an
from app.engine.analysis import core
from app.engine.analysis import lens as lens_mod
from app.engine.tokens import token_text

PROMPT = "The capital of France is Paris. <|im_end|> Water boils at 100 degrees."


@pytest.fixture(scope="module")
def tiny(tiny_engine):
    ids = tiny_engine.tokenizer.encode(PROMPT, add_special_tokens=False)
    return tiny_engine, ids


def notebook_lens(model, ids, top: int):
    """The notebook way: full cache, final norm on every layer's residual, unembed, softmax, top-k."""
    with torch.inference_mode():
        _, cache = model.run_with_cache(torch.tensor([list(ids)]))
        acc = cache.accumulated_resid(apply_ln=True)  # [layers+1, 1, pos, d]
        probs = model.unembed(acc).softmax(-1)[:, 0]
    return probs.topk(top, dim=-1)


def test_lens_from_the_analysis_forward_equals_the_notebook(tiny):
    eng, ids = tiny
    cache = an.ResidualCache()
    key = cache.key(eng.fingerprint, ids)
    an.analyze(eng.model, eng.saes, eng.hook_name, ids, resid_cache=cache, cache_key=key)
    assert len(cache) == 1
    calls = []
    # the lens must not run a forward when the analysis kept the residuals
    with eng.model.hooks(fwd_hooks=[("hook_embed", lambda a, hook: calls.append(1))]):
        lens = an.logit_lens(eng.model, ids, top=5, resid_cache=cache, cache_key=key)
    assert calls == []
    v, i = notebook_lens(eng.model, ids, 5)
    n_layers = eng.model.cfg.n_layers
    assert len(lens.layers) == n_layers + 1 == v.shape[0]
    top1 = [[token_text(eng.tokenizer, t) for t in row] for row in i[:, :, 0]]
    assert [[cell[0] for cell in row] for row in lens.top_tokens] == top1  # top-1 agreement 1.0
    # the path the lens picks here (int8 or bf16, fp32-rescored candidates): 1.7e-5 measured on int8; the bar is 1e-3
    assert torch.tensor(lens.top_probs).numpy() == pytest.approx(v.numpy(), abs=1e-4)
    ids5 = [[[token_text(eng.tokenizer, t) for t in cell] for cell in row] for row in i.tolist()]
    assert [[list(c) for c in row] for row in lens.top_tokens] == ids5


def test_lens_without_cache_equals_cached(tiny):
    eng, ids = tiny
    cache = an.ResidualCache()
    key = cache.key(eng.fingerprint, ids)
    plain = an.logit_lens(eng.model, ids, top=3)
    with_cache = an.logit_lens(eng.model, ids, top=3, resid_cache=cache, cache_key=key)  # fills the cache
    again = an.logit_lens(eng.model, ids, top=3, resid_cache=cache, cache_key=key)  # reads it
    assert plain.top_tokens == with_cache.top_tokens == again.top_tokens
    assert torch.tensor(plain.top_probs).numpy() == pytest.approx(torch.tensor(again.top_probs).numpy(), abs=1e-6)


def test_a_second_lens_of_the_same_prompt_unembeds_nothing(tiny, monkeypatch):
    """A feature click or a save asks for the lens again: it comes from the cache, equal to the notebook way; another
    top or another prompt is computed afresh."""
    eng, ids = tiny
    cache = an.ResidualCache()
    key = cache.key(eng.fingerprint, ids)
    unembeds = []
    real = an.lens_top
    monkeypatch.setattr(lens_mod, "lens_top", lambda *a, **k: unembeds.append(1) or real(*a, **k))
    first = an.logit_lens(eng.model, ids, top=5, resid_cache=cache, cache_key=key)
    again = an.logit_lens(eng.model, ids, top=5, resid_cache=cache, cache_key=key)
    assert unembeds == [1] and again == first
    v, _ = notebook_lens(eng.model, ids, 5)
    assert torch.tensor(again.top_probs).numpy() == pytest.approx(v.numpy(), abs=1e-4)
    an.logit_lens(eng.model, ids, top=3, resid_cache=cache, cache_key=key)
    other = list(ids[:-1])
    an.logit_lens(eng.model, other, top=5, resid_cache=cache, cache_key=cache.key(eng.fingerprint, other))
    assert unembeds == [1, 1, 1]


@contextlib.contextmanager
def unembed_bias_and_cap(m, b, cap: float, monkeypatch):
    """Inference mode with the model's unembedding bias b_U set to b (restored on leaving) and its output soft cap set
    to cap (monkeypatch restores it)."""
    with torch.inference_mode():
        orig = m.b_U.detach().clone()
        try:
            m.b_U.copy_(b)
            monkeypatch.setattr(m.cfg, "output_logits_soft_cap", cap)
            yield
        finally:
            m.b_U.copy_(orig)


@pytest.mark.parametrize("low_precision,tol", [(False, 1e-6), (True, 1e-4), ("int8", 1e-4)])
def test_lens_top_matches_logsumexp_with_bias_and_soft_cap(tiny, monkeypatch, low_precision, tol):
    """The fused normaliser and bias path against torch.log_softmax, with a non-zero b_U and a soft cap: the fp32
    path exactly, the bf16 and int8 paths (candidates rescored in fp32) within their bar."""
    eng, _ = tiny
    m = eng.model
    g = torch.Generator().manual_seed(0)
    rows = torch.randn(37, m.cfg.d_model, generator=g) * 3
    b = torch.randn(m.cfg.d_vocab_out, generator=g)
    monkeypatch.setattr(lens_mod, "LENS_ROWS_PER_CHUNK", 8)
    with unembed_bias_and_cap(m, b, 5.0, monkeypatch):
        pv, pi = an.lens_top(m, rows, 4, low_precision=low_precision)
        logits = m.ln_final(rows.unsqueeze(0))[0] @ m.W_U + b
        logits = 5.0 * torch.tanh(logits / 5.0)
        ref_v, ref_i = logits.log_softmax(-1).exp().topk(4, dim=-1)
    assert torch.equal(pi, ref_i)
    assert pv.numpy() == pytest.approx(ref_v.numpy(), abs=tol)


def test_residual_cache_is_bounded_lru():
    c = an.ResidualCache(max_bytes=3 * 400, max_entries=10)  # three [10, 10] float32 tensors
    t = {k: torch.full((10, 10), float(k)) for k in range(4)}
    for k in range(3):
        c.put(k, t[k])
    assert c.get(0) is t[0]  # 0 is now the most recent
    c.put(3, t[3])  # evicts 1, the least recently used
    assert c.get(1) is None and c.get(0) is t[0] and c.get(3) is t[3] and len(c) == 3 and c.nbytes == 1200
    c.put(9, torch.zeros(100, 100))  # larger than the whole budget: not kept, nothing evicted
    assert c.get(9) is None and len(c) == 3
    c2 = an.ResidualCache(max_bytes=10 ** 9, max_entries=2)
    for k in range(3):
        c2.put(k, t[k])
    assert c2.get(0) is None and len(c2) == 2


def test_analysis_from_cached_residuals_runs_no_forward_and_equals_fresh(tiny):
    eng, ids = tiny
    cache = an.ResidualCache()
    key = cache.key(eng.fingerprint, ids)
    fresh = an.analyze(eng.model, eng.saes, eng.hook_name, ids, top_k=8)
    first = an.analyze(eng.model, eng.saes, eng.hook_name, ids, top_k=8, resid_cache=cache, cache_key=key)
    calls = []
    with eng.model.hooks(fwd_hooks=[("hook_embed", lambda a, hook: calls.append(1))]):
        again = an.analyze(eng.model, eng.saes, eng.hook_name, ids, top_k=8, resid_cache=cache, cache_key=key)
    assert calls == []
    for a in (first, again):
        assert a.sink == fresh.sink and a.tokens == fresh.tokens
        assert [t for t, _ in a.next_token_top] == [t for t, _ in fresh.next_token_top]
        assert [p for _, p in a.next_token_top] == pytest.approx([p for _, p in fresh.next_token_top], abs=1e-6)
        assert a.resid_norm == pytest.approx(fresh.resid_norm, rel=1e-6)
        for name in eng.saes:
            assert [v.indices for v in a.per_sae[name]] == [v.indices for v in fresh.per_sae[name]]
            assert a.explained_variance[name] == pytest.approx(fresh.explained_variance[name], abs=1e-6)


@pytest.mark.parametrize("cap", [0.0, 5.0])
@pytest.mark.parametrize("low_precision,tol", [(False, 2e-5), (None, 1e-3), ("int8", 1e-3)])
def test_lens_kl_matches_torch_with_bias_and_soft_cap(tiny, monkeypatch, cap, low_precision, tol):
    """Each row's KL to a reference row, without a cap (the x . W_U p shortcut) and with one (read against p); on the
    exact fp32 path and on the path the lens picks (bf16 where the CPU has bf16 units; a soft cap takes fp32)."""
    eng, _ = tiny
    m = eng.model
    g = torch.Generator().manual_seed(1)
    rows = torch.randn(3 * 7, m.cfg.d_model, generator=g) * 3  # 3 layers x 7 positions, layer-major
    final = torch.randn(7, m.cfg.d_model, generator=g) * 3
    b = torch.randn(m.cfg.d_vocab_out, generator=g)
    monkeypatch.setattr(lens_mod, "LENS_ROWS_PER_CHUNK", 5)
    with unembed_bias_and_cap(m, b, cap, monkeypatch):
        def logp(x):
            z = m.ln_final(x.unsqueeze(0))[0] @ m.W_U + b
            return (cap * torch.tanh(z / cap) if cap > 0 else z).log_softmax(-1)
        _, _, kl = an.lens_top(m, rows, 4, an.lens_reference(m, final), low_precision=low_precision)
        p = logp(final)
        want = (p.exp() * (p - logp(rows).view(3, 7, -1))).sum(-1).reshape(-1)
    assert kl.numpy() == pytest.approx(want.numpy(), abs=tol)


def test_the_capturing_forward_runs_the_fast_decoder_and_equals_transformer_lens(tiny, monkeypatch):
    """The analysis forward goes through the architecture's fast decoder (transformer-lens's forward is not called)
    and captures the residuals transformer-lens computes; a hook on a point the fast decoder skips sends it back."""
    eng, ids = tiny
    m = eng.model
    names = an.lens_hook_names(m.cfg.n_layers)[:-1]
    last = f"blocks.{m.cfg.n_layers - 1}.hook_resid_post"
    with torch.inference_mode():
        _, ref = m.run_with_cache(torch.tensor([ids]), names_filter=lambda n: n in names or n == last)
    tl_calls = []
    real_forward = m.forward
    monkeypatch.setattr(m, "forward", lambda *a, **k: tl_calls.append(1) or real_forward(*a, **k))
    with torch.inference_mode():
        final, store = core._forward_capture(m, ids, names)
    assert tl_calls == []
    for n in names:
        assert store[n][0].numpy() == pytest.approx(ref[n][0].numpy(), rel=1e-4, abs=1e-5), n
    assert final[0].numpy() == pytest.approx(ref[last][0].numpy(), rel=1e-4, abs=1e-5)
    seen = []
    with torch.inference_mode(), m.hooks(fwd_hooks=[("blocks.0.attn.hook_pattern", lambda a, hook: seen.append(1))]):
        _, again = core._forward_capture(m, ids, names)
    assert tl_calls == [1] and seen == [1]
    assert again[names[-1]][0].numpy() == pytest.approx(ref[names[-1]][0].numpy(), rel=1e-4, abs=1e-5)


def test_lens_reads_inference_mode_rows_with_grad_enabled(tiny):
    """The residual cache is filled under inference_mode; a later lens with grad enabled must still read it. A final
    LayerNorm with weights (GPT-2-style models) saves its input for backward: before the fix that raised "Inference
    tensors cannot be saved for backward" (a 500 on /api/lens; the full suite hit it through test order)."""
    import copy

    m = copy.deepcopy(tiny[0].model)  # a copy: the session engine's model stays as it is
    ln = torch.nn.LayerNorm(m.cfg.d_model)  # weights require grad, as a loaded model's do
    m.ln_final = ln
    with torch.inference_mode():
        rows = torch.randn(5, m.cfg.d_model, generator=torch.Generator().manual_seed(0))
    with torch.enable_grad():
        got_p, got_i = lens_mod.lens_top(m, rows, 3)
    with torch.no_grad():
        want = m.unembed(ln(rows.clone())[None])[0].float().softmax(-1).topk(3, dim=-1)
    assert got_i.tolist() == want.indices.tolist()
    assert torch.allclose(got_p, want.values, atol=1e-3)
