"""app.engine.ranking: the display order of features, against a brute-force sort written independently."""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from app.engine.ranking import DENSE_DENSITY, rank_features


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 30))
def test_unusual_order_puts_dense_last_then_ratio(seed, n):
    g = np.random.default_rng(seed)
    width = 200
    typical = g.uniform(0.5, 20, width)
    typical[g.integers(0, width, 10)] = 0.0  # never fired on the atlas
    density = g.uniform(0, 0.3, width)
    idx = g.choice(width, n, replace=False)
    vals = g.uniform(0.1, 40, n)
    got = rank_features(idx, vals, typical, density)
    # brute force: non-dense features before dense ones; within each group larger value/typical first
    rows = []
    for i, v in zip(idx, vals):
        r = v / typical[i] if typical[i] > 0 else 0.0
        rows.append((density[i] > DENSE_DENSITY, -r, -v, int(i)))
    want = [int(r[3]) for r in sorted(rows)]
    assert [r.index for r in got] == want
    for r in got:
        assert r.dense == (density[r.index] > 0.10)
        if typical[r.index] > 0:
            assert r.ratio == np.float64(r.value / typical[r.index]).item() or abs(r.ratio - r.value / typical[r.index]) < 1e-9
        else:
            assert r.ratio is None
    # activation order is plain activation, dense ones still marked
    by_act = rank_features(idx, vals, typical, density, by="activation")
    assert [r.index for r in by_act] == [int(i) for _, i in sorted(zip(-vals, idx))]
    assert {r.index for r in by_act if r.dense} == {int(i) for i in idx if density[i] > DENSE_DENSITY}


def test_without_an_atlas_the_order_is_by_activation():
    got = rank_features([5, 3, 9], [1.0, 7.0, 3.0], None, None)
    assert [r.index for r in got] == [3, 9, 5] and all(r.ratio is None and not r.dense for r in got)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 20))
def test_mixed_saes_share_one_order_and_dense_last_keeps_each_group(seed, n):
    from app.engine.ranking import dense_last, rank_mixed

    g = np.random.default_rng(seed)
    typical = {"coarse": g.uniform(0.5, 20, 50), "fine": g.uniform(0.5, 20, 300)}
    density = {"coarse": g.uniform(0, 0.3, 50), "fine": g.uniform(0, 0.3, 300)}
    cands = [("coarse" if g.random() < 0.4 else "fine", 0, float(g.uniform(0.1, 40))) for _ in range(n)]
    cands = [(s, int(g.integers(0, 50 if s == "coarse" else 300)), v) for s, _, v in cands]
    got = rank_mixed(cands, typical, density)
    want = sorted(cands, key=lambda c: (density[c[0]][c[1]] > 0.10, -c[2] / typical[c[0]][c[1]], -c[2], c[0], c[1]))
    assert [(r.sae, r.index, r.value) for r in got] == want
    assert all(r.ratio == c[2] / typical[c[0]][c[1]] for r, c in zip(got, want))
    raw = rank_mixed(cands, typical, density, by="activation")
    assert [(r.sae, r.index, r.value) for r in raw] == sorted(cands, key=lambda c: (-c[2], c[0], c[1]))
    assert [(r.sae, r.index) for r in rank_mixed(cands, None, None)] == [(s, i) for s, i, _ in
                                                                        sorted(cands, key=lambda c: (-c[2], c[0], c[1]))]
    flags = [bool(x) for x in g.random(n) < 0.5]
    items = list(range(n))
    assert dense_last(items, flags) == [i for i in items if not flags[i]] + [i for i in items if flags[i]]
