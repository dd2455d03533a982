"""Steering maths against a plain-torch computation from the SAE's saved tensors, at the hook, on the prompt and
on every cached decode step; hooks gone after errors."""
from __future__ import annotations

import pytest
import torch

from app.engine import generation as G
from app.engine import steering as ST
from app.engine.sampling import SamplingParams

PROMPT = "Steer me, please."


@pytest.fixture(scope="module")
def eng(tiny_engine):
    return tiny_engine


def ids_of(model):
    return model.tokenizer.encode(PROMPT, add_special_tokens=False)


def plain_topk_encode(sae, x):
    """Independent TopK encoder from the raw tensors: relu(topk((x - b_dec) @ W_enc + b_enc))."""
    pre = (x - sae.b_dec) @ sae.W_enc + sae.b_enc
    v, i = pre.topk(sae.cfg.k, dim=-1)
    return torch.zeros_like(pre).scatter(-1, i, v.relu())


def capture(model, hook_name, ids, steer_hooks):
    """Residual at the hook point before (unsteered run) and right after the steering hook (a second hook
    registered after it on the same point sees its output)."""
    seen = {}

    def make_capture_hook(key):
        def capture_hook(t, hook):
            seen[key] = t[0].clone()
        return capture_hook

    toks = torch.tensor([ids])
    with torch.inference_mode():
        with model.hooks(fwd_hooks=[(hook_name, make_capture_hook("before"))]):
            model(toks)
        with model.hooks(fwd_hooks=steer_hooks + [(hook_name, make_capture_hook("after"))]):
            logits = model(toks)
    return seen["before"], seen["after"], logits


def test_additive_adds_exactly_c_times_decoder_row(eng):
    m, hook = eng.model, eng.hook_name
    ids = ids_of(m)
    state = ST.PositionState(0, len(ids))
    f = ST.SteerFeature("coarse", 7, "add", 3.5)
    before, after, _ = capture(m, hook, ids, [(hook, ST.make_steering_hook(eng.saes, [f], state))])
    W = eng.saes["coarse"].W_dec.detach()
    diff = after - before
    torch.testing.assert_close(diff[0], torch.zeros_like(diff[0]))  # position 0 (sink) untouched
    torch.testing.assert_close(diff[1:], (3.5 * W[7]).expand_as(diff[1:]), atol=1e-5, rtol=1e-5)


def test_clamp_sets_the_encoder_activation_and_keeps_the_error(eng):
    m, hook = eng.model, eng.hook_name
    sae = eng.saes["fine"]
    ids = ids_of(m)
    # pick a feature that fires at some position so the clamp changes a non-zero activation
    with torch.inference_mode():
        _, cache = m.run_with_cache(torch.tensor([ids]), names_filter=hook)
    x0 = cache[hook][0]
    a0 = plain_topk_encode(sae, x0)
    f_idx = int(a0[1:].max(0).values.argmax())
    assert a0[1:, f_idx].max() > 0
    v = 2.25
    state = ST.PositionState(0, len(ids))
    before, after, _ = capture(m, hook, ids, [(hook, ST.make_steering_hook(eng.saes, [ST.SteerFeature("fine", f_idx, "clamp", v)], state))])
    torch.testing.assert_close(before, x0)
    a = plain_topk_encode(sae, before)
    W, b_dec = sae.W_dec.detach(), sae.b_dec.detach()
    expected = before + (v - a[:, f_idx:f_idx + 1]) * W[f_idx]
    expected[0] = before[0]
    torch.testing.assert_close(after, expected, atol=1e-5, rtol=1e-5)
    # i.e. the steered residual = the SAE's reconstruction with a_f := v, plus the unchanged SAE error
    err = before - (a @ W + b_dec)
    a_set = a.clone()
    a_set[:, f_idx] = v
    torch.testing.assert_close((after - err)[1:], (a_set @ W + b_dec)[1:], atol=1e-4, rtol=1e-4)


def test_clamp_zero_is_ablation_and_features_combine(eng):
    m, hook = eng.model, eng.hook_name
    ids = ids_of(m)
    sae_c, sae_f = eng.saes["coarse"], eng.saes["fine"]
    with torch.inference_mode():
        _, cache = m.run_with_cache(torch.tensor([ids]), names_filter=hook)
    x = cache[hook][0]
    ac = plain_topk_encode(sae_c, x)
    j = int(ac[1:].max(0).values.argmax())
    feats = [ST.SteerFeature("coarse", j, "clamp", 0.0), ST.SteerFeature("fine", 3, "add", -1.5),
             ST.SteerFeature("coarse", 5, "add", 2.0)]
    state = ST.PositionState(0, len(ids))
    before, after, _ = capture(m, hook, ids, [(hook, ST.make_steering_hook(eng.saes, feats, state))])
    expected = before - ac[:, j:j + 1] * sae_c.W_dec[j] - 1.5 * sae_f.W_dec[3] + 2.0 * sae_c.W_dec[5]
    torch.testing.assert_close(after[1:], expected[1:], atol=1e-5, rtol=1e-5)


def test_steering_applies_on_every_cached_decode_step(eng):
    """Steered KV-cache generation == a naive loop that re-runs the whole sequence under the hook each step."""
    m, hook = eng.model, eng.hook_name
    ids = ids_of(m)
    feats = [ST.SteerFeature("coarse", 11, "add", 40.0), ST.SteerFeature("fine", 2, "clamp", 5.0)]
    n = 10
    seq = list(ids)
    with torch.inference_mode():
        for _ in range(n):
            state = ST.PositionState(0, len(ids))
            with m.hooks(fwd_hooks=[(hook, ST.make_steering_hook(eng.saes, feats, state))]):
                seq.append(int(m(torch.tensor([seq]))[0, -1].argmax()))
    naive = seq[len(ids):]
    for fast in (True, False):
        g = ST.steered_generate(m, eng.saes, hook, ids, feats, SamplingParams(), n, prefer_fast=fast)
        assert list(g.ids) == naive, fast
    plain = G.generate(m, ids, n, SamplingParams())
    assert list(plain.ids) != naive  # the steering really changes the output at this strength


def test_generated_only_leaves_the_prompt_alone(eng):
    m, hook = eng.model, eng.hook_name
    ids = ids_of(m)
    record = []
    state = ST.PositionState()
    f = ST.SteerFeature("coarse", 1, "add", 1.0)
    with m.hooks(fwd_hooks=[(hook, ST.make_steering_hook(eng.saes, [f], state, ST.SteerOptions(generated_only=True), record))]):
        G.generate(m, ids, 3, SamplingParams(), position_state=state)
    (start0, mask0, _), *decode = record
    assert start0 == 0 and mask0.tolist() == [False] * (len(ids) - 1) + [True]
    assert [r[0] for r in decode] == [len(ids), len(ids) + 1] and all(r[1].all() for r in decode)


def test_sink_norm_skips_massive_positions():
    resid = torch.zeros(1, 4, 3)
    resid[0, 2] = 1000.0
    m = ST.steered_positions(0, resid, 4, ST.SteerOptions(sink_norm=100.0))
    assert m.tolist() == [False, True, False, True]


def test_no_hooks_left_after_an_error_inside_a_hook(eng):
    m, hook = eng.model, eng.hook_name
    ids = ids_of(m)

    def make_failing_hook():
        def failing_hook(t, hook):
            raise RuntimeError("boom")
        return failing_hook

    with pytest.raises(RuntimeError, match="boom"):
        with eng.session():
            with m.hooks(fwd_hooks=[(hook, make_failing_hook())]):
                G.generate(m, ids, 3, SamplingParams())
    assert all(not hp._forward_hooks for hp in m.hook_dict.values())
    # and a steering run with a bad feature index fails cleanly, leaving nothing attached
    with pytest.raises(IndexError):
        ST.steered_generate(m, eng.saes, hook, ids, [ST.SteerFeature("coarse", 10**6, "add", 1.0)], SamplingParams(), 2)
    assert all(not hp._forward_hooks for hp in m.hook_dict.values())


def test_feature_scale_reports_prompt_max(eng):
    m, hook = eng.model, eng.hook_name
    ids = ids_of(m)
    sae = eng.saes["coarse"]
    with torch.inference_mode():
        _, cache = m.run_with_cache(torch.tensor([ids]), names_filter=hook)
    a = plain_topk_encode(sae, cache[hook][0])[1:]
    j = int(a.max(0).values.argmax())
    fs = ST.feature_scale(m, eng.saes, hook, "coarse", j, ids)
    assert fs.max_on_prompt == pytest.approx(float(a[:, j].max()), rel=1e-5)
    assert fs.typical_max == fs.max_on_prompt
    ld = sae.W_dec[j] @ m.W_U
    assert [p[0] for p in fs.promoted] == ld.topk(5).indices.tolist()
