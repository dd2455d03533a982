"""app/engine/attribution.py: attribution = finite differences of the logit (tiny model in float64, to 1e-3);
the error/bias/sink entries complete the sum; the ablation check equals a hand-written clamp."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from app.engine import attribution as A
from app.engine import tiny
from app.engine.profiles import get_profile

IDS = list(b"The capital of France is Paris, and of Italy is")


@pytest.fixture(scope="module")
def f64():
    """The tiny profile's model and SAEs in float64 (finite differences need the precision)."""
    p = get_profile("tiny")
    model = tiny.tiny_model(p.options).to(torch.float64)
    saes = {s.name: tiny.tiny_sae(p, s).to(dtype=torch.float64).eval() for s in (p.coarse, p.fine)}
    return model, saes, p.hook_name


def _logit(model, hook_name, ids, target, delta=None):
    """Target logit at the last position, with `delta` [pos, d] added to the residual at the hook (plain hook)."""
    def add(resid, hook):
        return resid + delta[None].to(resid.dtype)
    hooks = [(hook_name, add)] if delta is not None else []
    with torch.no_grad(), model.hooks(fwd_hooks=hooks):
        return float(model(torch.tensor([ids]))[0, -1, target])


def _resid(model, hook_name, ids):
    _, cache = model.run_with_cache(torch.tensor([ids]), names_filter=hook_name)
    return cache[hook_name][0]


def test_attribution_equals_finite_differences(f64):
    model, saes, hook = f64
    att = A.attribute(model, saes, hook, IDS, top=6)
    assert att.target == int(model(torch.tensor([IDS]))[0, -1].argmax())
    x = _resid(model, hook, IDS)
    eps = 1e-4
    checked = 0
    for fa in att.features:
        sae = saes[fa.sae]
        acts = sae.encode(x)[:, fa.index].detach()
        acts[0] = 0  # position 0 is not decomposed
        delta = acts[:, None] * sae.W_dec[fa.index].detach()[None]  # the feature's whole contribution
        fd = (_logit(model, hook, IDS, att.target, eps * delta) - _logit(model, hook, IDS, att.target, -eps * delta)) / (2 * eps)
        assert fa.attribution == pytest.approx(fd, abs=1e-3), (fa, fd)
        # per-position entries are the same quantity at one position
        p, a, at = fa.positions[0]
        d1 = torch.zeros_like(delta)
        d1[p] = delta[p]
        fd1 = (_logit(model, hook, IDS, att.target, eps * d1) - _logit(model, hook, IDS, att.target, -eps * d1)) / (2 * eps)
        assert at == pytest.approx(fd1, abs=1e-3) and a == pytest.approx(float(acts[p]), rel=1e-6)
        checked += 1
    assert checked == 6
    # the total is the directional derivative along x itself
    fd_total = (_logit(model, hook, IDS, att.target, eps * x) - _logit(model, hook, IDS, att.target, -eps * x)) / (2 * eps)
    assert att.total == pytest.approx(fd_total, abs=1e-3)


def test_features_bias_error_and_sink_add_up_per_sae(f64):
    model, saes, hook = f64
    att = A.attribute(model, saes, hook, IDS, top=100_000)  # every firing feature
    terms = {(t.name, t.sae): t.attribution for t in att.terms}
    for name in saes:
        s = sum(f.attribution for f in att.features if f.sae == name)
        assert s + terms[("bias", name)] + terms[("error", name)] + terms[("sink", None)] == pytest.approx(att.total, abs=1e-8)
    assert att.decomposed == tuple(range(1, len(IDS)))
    mags = [abs(f.attribution) for f in att.features]
    assert mags == sorted(mags, reverse=True)


def test_position_and_target_arguments(f64):
    model, saes, hook = f64
    att = A.attribute(model, saes, hook, IDS, position=10, target=ord("x"), top=3)
    assert att.token_ids == tuple(IDS[:11]) and att.position == 10 and att.target == ord("x")
    logits = model(torch.tensor([IDS[:11]]))[0, -1].double()
    assert att.logit == pytest.approx(float(logits[ord("x")]), rel=1e-9)
    assert att.prob == pytest.approx(float(logits.softmax(-1)[ord("x")]), rel=1e-9)
    assert [i for i, _ in att.top_next] == logits.topk(10).indices.tolist()
    with pytest.raises(IndexError):
        A.attribute(model, saes, hook, IDS, position=len(IDS))


def test_ablation_check_equals_a_hand_clamp_inside_a_session(tiny_engine):
    eng = tiny_engine
    with eng.session():  # inference mode: attribution switches grad back on locally
        att = A.attribute(eng.model, eng.saes, eng.hook_name, IDS, top=10)
        att = A.validate_by_ablation(eng.model, eng.saes, eng.hook_name, att, n=10)
        x = _resid(eng.model, eng.hook_name, IDS).float()
        clean = _logit(eng.model, eng.hook_name, IDS, att.target)
        assert eng.attached_hooks() == 0
        for ab in att.ablations:
            sae = eng.saes[ab.sae]
            a = sae.encode(x)[:, ab.index]
            a[0] = 0
            delta = -a[:, None] * sae.W_dec[ab.index][None]
            want = _logit(eng.model, eng.hook_name, IDS, att.target, delta) - clean
            assert ab.actual == pytest.approx(want, abs=2e-4)
            fa = next(f for f in att.features if (f.sae, f.index) == (ab.sae, ab.index))
            assert ab.estimate == -fa.attribution
    assert len(att.ablations) == 10
    est, act = [a.estimate for a in att.ablations], [a.actual for a in att.ablations]
    assert att.correlation == pytest.approx(np.corrcoef(est, act)[0, 1], rel=1e-9)
    assert att.correlation > 0.5  # the linear estimate tracks the real effect even on the random model


def test_pearson_edge_cases():
    assert np.isnan(A.pearson([1.0], [2.0])) and np.isnan(A.pearson([1, 1, 1], [1, 2, 3]))
    assert A.pearson([1, 2, 3], [2, 4, 7]) == pytest.approx(np.corrcoef([1, 2, 3], [2, 4, 7])[0, 1])


def test_report_on_tiny(tiny_engine):
    text = A.report(tiny_engine, "The capital of France is", target_text="x", top=5, validate=5,
                    labels=lambda sae, i: f"L{sae[0]}{i}")
    assert "Pearson r =" in text and "target 'x'" in text and "Lc" in text or "Lf" in text
