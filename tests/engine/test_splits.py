"""app/engine/splits.py against independent numpy / scipy computations on the tiny profile's decoders with a
planted split: coarse feature C's fine children are two rotated halves of its direction (each firing on part
of C's tokens), plus an absorbing child that fires where C is silent."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.optimize
import scipy.sparse as sp
import torch

from app.engine import splits

C, HALF_A, HALF_B, ABSORB = 3, 10, 11, 12  # planted coarse feature and its fine children
SILENT = 7  # a coarse feature that never fires on the corpus


def _unit(v):
    return v / np.linalg.norm(v)


@pytest.fixture(scope="module")
def planted(tiny_engine):
    """Decoders from the tiny profile with the split planted, and synthetic corpus codes (T tokens)."""
    rng = np.random.default_rng(0)
    Wc = tiny_engine.saes["coarse"].W_dec.detach().float().numpy().copy()  # [64, 32]
    Wf = tiny_engine.saes["fine"].W_dec.detach().float().numpy().copy()  # [512, 32]
    # Make sure no random fine row accidentally sits near C (so the children are exactly the planted ones).
    u = _unit(Wc[C])
    for f in range(Wf.shape[0]):
        if abs(_unit(Wf[f]) @ u) > 0.4:
            Wf[f] = Wf[f] - (Wf[f] @ u) * u
    v = _unit(rng.normal(size=u.shape) - (rng.normal(size=u.shape) @ u) * u)
    v = _unit(v - (v @ u) * u)
    th = np.deg2rad(30)
    Wf[HALF_A] = 2.0 * (np.cos(th) * u + np.sin(th) * v)  # decoder norms need not be 1
    Wf[HALF_B] = 0.5 * (np.cos(th) * u - np.sin(th) * v)
    Wf[ABSORB] = _unit(0.95 * u + 0.31 * _unit(rng.normal(size=u.shape)))

    T, ctx = 600, 20
    A = np.zeros((T, Wc.shape[0]), dtype=np.float32)
    B = np.zeros((T, Wf.shape[0]), dtype=np.float32)
    # background: a few random features per token
    for t in range(T):
        A[t, rng.choice(Wc.shape[0], 3, replace=False)] = rng.random(3) + 0.1
        B[t, rng.choice(Wf.shape[0], 6, replace=False)] = rng.random(6) + 0.1
    A[:, [C, SILENT]] = 0
    B[:, [HALF_A, HALF_B, ABSORB]] = 0
    A[0:200, C] = 1.0 + rng.random(200)  # C fires on 0..199
    B[0:100, HALF_A] = 0.5 + rng.random(100)  # half A takes 0..99
    B[100:180, HALF_B] = 0.5 + rng.random(80)  # half B takes 100..179; 180..199 are holes
    B[400:430, ABSORB] = 2.0 + rng.random(30)  # the absorbing child fires where C never does
    B[150:160, ABSORB] = 0.2  # ...and weakly together with C sometimes
    valid = np.ones(T, dtype=bool)
    valid[::ctx] = False  # window starts (sinks) are not counted
    valid[185] = True
    return {"Wc": Wc, "Wf": Wf, "A": A, "B": B, "valid": valid, "T": T}


@pytest.fixture(scope="module")
def index(planted):
    return splits.SplitIndex(sp.csr_matrix(planted["A"]), sp.csr_matrix(planted["B"]), planted["Wc"], planted["Wf"],
                             valid=planted["valid"], chunk=100)


def _unit_rows(W):
    return W / np.linalg.norm(W, axis=1, keepdims=True)


def test_max_cosine_equals_dense_numpy(planted, index):
    cos = _unit_rows(planted["Wf"]) @ _unit_rows(planted["Wc"]).T
    np.testing.assert_allclose(index.max_cos, cos.max(1), atol=1e-5)
    assert np.array_equal(index.partner, cos.argmax(1))
    assert index.partner[HALF_A] == C and index.partner[HALF_B] == C and index.partner[ABSORB] == C
    assert index.max_cos[HALF_A] == pytest.approx(np.cos(np.deg2rad(30)), abs=1e-5)


def test_split_map_cofiring_equals_numpy_and_finds_the_split(planted, index):
    A, B, valid = planted["A"][planted["valid"]], planted["B"][planted["valid"]], planted["valid"]
    rows = np.flatnonzero(valid)
    m = splits.split_map(index, C, child_cos=0.5, top=10, strong_frac=0.3, n_examples=50)
    fc, ff = A[:, C] > 0, B > 0
    n_both = (fc[:, None] & ff).sum(0)
    assert m.n_tokens == valid.sum() and m.n_coarse == fc.sum()
    cos = _unit_rows(planted["Wf"]) @ _unit(planted["Wc"][C])
    for match in m.by_cosine + m.by_cofiring + m.children:
        f = match.fine
        assert match.n_both == n_both[f] and match.n_fine == ff[:, f].sum()
        assert match.p_fine_given_coarse == pytest.approx(n_both[f] / fc.sum())
        assert match.p_coarse_given_fine == pytest.approx(n_both[f] / ff[:, f].sum())
        assert match.cosine == pytest.approx(cos[f], abs=1e-5)
    assert [x.fine for x in m.by_cosine] == list(np.argsort(-cos, kind="stable")[:10])
    # the split is found: exactly the planted children, ranked by cosine
    assert {x.fine for x in m.children} == {HALF_A, HALF_B, ABSORB}
    assert m.children[0].fine == ABSORB and all(x.child for x in m.children)
    # co-firing ranking: the two halves are C's best co-firing partners (Jaccard), in numpy's order
    jac = n_both / (fc.sum() + ff.sum(0) - n_both)
    want = [f for f in np.lexsort((np.arange(len(jac)), -jac)) if n_both[f] > 0][:10]
    assert [x.fine for x in m.by_cofiring] == want
    assert {m.by_cofiring[0].fine, m.by_cofiring[1].fine} == {HALF_A, HALF_B}
    # P(C | half) = 1 (a half never fires without C); P(half A | C) ~ 1/2
    a = next(x for x in m.children if x.fine == HALF_A)
    assert a.p_coarse_given_fine == 1.0 and 0.4 < a.p_fine_given_coarse < 0.6
    # coverage: fraction of C's tokens where any child fires
    child_any = ff[:, [HALF_A, HALF_B, ABSORB]].any(1)
    assert m.coverage == pytest.approx((fc & child_any).sum() / fc.sum())
    # holes: C strong (>= 0.3 max), no child -> the tokens 180..199 that are counted
    strong = A[:, C] >= 0.3 * A[:, C].max()
    hole_rows = rows[strong & ~child_any]
    assert m.n_holes == len(hole_rows) and set(hole_rows) <= set(range(180, 200)) and len(hole_rows) >= 18
    assert {h.position for h in m.holes} == set(hole_rows)
    acts = [h.activation for h in m.holes]
    assert acts == sorted(acts, reverse=True)
    assert all(h.activation == pytest.approx(planted["A"][h.position, C]) for h in m.holes)
    # reverse holes: the absorbing child fires strongly where C is silent (400..429)
    rev = set()
    for f in (HALF_A, HALF_B, ABSORB):
        rev |= set(rows[(B[:, f] >= 0.3 * B[:, f].max()) & ~fc])
    assert m.n_reverse_holes == len(rev) and rev == {r for r in range(400, 430) if valid[r]}
    assert all(h.feature == ABSORB and h.sae == "fine" for h in m.reverse_holes)


def test_split_map_of_a_feature_that_never_fires(planted, index):
    m = splits.split_map(index, SILENT)
    assert m.n_coarse == 0 and np.isnan(m.coverage) and m.n_holes == 0 and m.by_cofiring == ()


def test_stitch_summary_equals_numpy(planted, index):
    s = splits.stitch_summary(index, threshold=0.7, child_cos=0.5, bins=20)
    cos = _unit_rows(planted["Wf"]) @ _unit_rows(planted["Wc"]).T  # [Df, Dc]
    mc = cos.max(1)
    counts, _ = np.histogram(np.clip(mc, 0, 1), bins=20, range=(0, 1))
    assert np.abs(np.array(s.counts) - counts).sum() <= 2 and sum(s.counts) == len(mc)
    assert s.n_reconstruction == (mc >= 0.7).sum() and s.n_novel == (mc < 0.7).sum()
    child = cos >= 0.5
    np.testing.assert_array_equal(s.n_children, child.sum(0))
    A, B = planted["A"][planted["valid"]] > 0, planted["B"][planted["valid"]] > 0
    for c in range(planted["Wc"].shape[0]):
        if A[:, c].sum() == 0:
            assert np.isnan(s.coverage[c])
            continue
        want = (A[:, c] & B[:, child[:, c]].any(1)).sum() / A[:, c].sum()
        assert s.coverage[c] == pytest.approx(want), c
    m = splits.split_map(index, C, child_cos=0.5)
    assert s.coverage[C] == pytest.approx(m.coverage) and s.n_children[C] == 3


def test_nonneg_decomposition_recovers_a_planted_mix_and_matches_scipy_nnls(planted):
    Wc = _unit_rows(planted["Wc"])
    target = 0.7 * Wc[5] + 0.4 * Wc[20]
    d = splits.nonneg_decomposition(target, Wc, max_terms=5)
    assert [j for j, _ in d.terms] == [5, 20]
    np.testing.assert_allclose([c for _, c in d.terms], [0.7, 0.4], atol=1e-6)
    assert d.residual < 1e-6 and d.cosine == pytest.approx(1.0)
    # a generic direction: <= 5 non-negative terms; coefficients = scipy NNLS on the chosen support
    rng = np.random.default_rng(3)
    y = rng.normal(size=Wc.shape[1])
    d = splits.nonneg_decomposition(y, Wc, max_terms=5)
    support = [j for j, _ in d.terms]
    assert 1 <= len(support) <= 5 and all(c > 0 for _, c in d.terms)
    ref, rnorm = scipy.optimize.nnls(Wc[support].T, y)
    np.testing.assert_allclose([c for _, c in d.terms], ref, rtol=1e-6, atol=1e-9)
    assert d.residual == pytest.approx(rnorm / np.linalg.norm(y), rel=1e-6)
    mix = Wc[support].T @ ref
    assert d.cosine == pytest.approx(mix @ y / np.linalg.norm(mix) / np.linalg.norm(y), rel=1e-6)
    # the first atom is the best-correlated one (OMP's first step)
    assert support[0] in [int(np.argmax(Wc @ y))] or d.terms[0][1] >= max(c for _, c in d.terms)


def test_meta_decomposition_of_a_split_half_names_its_parent(planted, index):
    d = splits.meta_decomposition(index.fine_unit, index.coarse_unit, HALF_A)
    assert d.terms[0][0] == C and d.terms[0][1] > 0.5 and len(d.terms) <= 5


def test_stitching_on_the_tiny_model_equals_plain_torch(tiny_engine):
    eng = tiny_engine
    model, cs, fs = eng.model, eng.saes["coarse"], eng.saes["fine"]
    ids = list(b"The capital of France is Paris")
    with eng.session():
        _, cache = model.run_with_cache(torch.tensor([ids]), names_filter=eng.hook_name)
        x = cache[eng.hook_name][0].float()
        acts = cs.encode(x[1:])
        c = int(acts.sum(0).argmax())  # a coarse feature that fires on the prompt
        children = [int(i) for i in (fs.W_dec @ cs.W_dec[c]).topk(3).indices]
        st = splits.stitch_on_prompt(model, cs, fs, eng.hook_name, ids, c, children)  # sinks: position 0 only here
        # plain-torch TopK encode (apply_b_dec_to_input) and decode from the saved weights
        def enc(sae, v):
            pre = torch.relu((v - sae.b_dec) @ sae.W_enc + sae.b_enc)
            vals, idx = pre.topk(sae.cfg.k, dim=-1)
            return torch.zeros_like(pre).scatter(-1, idx, vals)
        xk = x[1:]
        a, b = enc(cs, xk), enc(fs, xk)
        x_hat = a @ cs.W_dec + cs.b_dec
        stitched = x_hat - a[:, c:c + 1] * cs.W_dec[c] + b[:, children] @ fs.W_dec[children]
        assert st.rel_error_coarse == pytest.approx(float(((xk - x_hat) ** 2).sum() / (xk ** 2).sum()), rel=1e-4)
        assert st.rel_error_stitched == pytest.approx(float(((xk - stitched) ** 2).sum() / (xk ** 2).sum()), rel=1e-4)
        np.testing.assert_allclose(st.coarse_act, a[:, c].numpy(), rtol=1e-4, atol=1e-5)
        # next-token distributions: run the rest of the model from the replaced residual (no hooks)
        layer = int(eng.hook_name.split(".")[1])
        for rep, top, kl in ((x_hat, st.next_coarse, st.kl_coarse), (stitched, st.next_stitched, st.kl_stitched)):
            r = x.clone()
            r[1:] = rep
            logits = model(r[None], start_at_layer=layer + 1)[0, -1].float()
            clean = model(torch.tensor([ids]))[0, -1].float()
            lp, lq = clean.log_softmax(-1), logits.log_softmax(-1)
            assert kl == pytest.approx(float((lp.exp() * (lp - lq)).sum()), rel=1e-3, abs=1e-6)
            p, i = lq.exp().topk(5)
            assert [t for t, _ in top] == i.tolist()
            np.testing.assert_allclose([q for _, q in top], p.numpy(), rtol=1e-4)
    assert st.positions == tuple(range(1, len(ids)))
