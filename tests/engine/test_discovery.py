"""app/engine/discovery.py against independent recomputation (unbatched forwards, numpy TopK encode, numpy stats),
and a planted concept in a tiny synthetic setup."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from app.engine import decomposition as dec
from app.engine import discovery as disc

PROMPTS = Path(__file__).resolve().parents[2] / "data" / "prompts"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def lines(name, n):
    return disc.parse_prompt_lines((PROMPTS / f"{name}.txt").read_text())[:n]


def numpy_topk_encode(sae, x: np.ndarray) -> np.ndarray:
    """TopK SAE encode in numpy from the saved weights: relu(top-k of (x - b_dec) W_enc + b_enc), rest 0."""
    W_enc = sae.W_enc.detach().double().numpy()
    b_enc = sae.b_enc.detach().double().numpy()
    b_dec = sae.b_dec.detach().double().numpy()
    pre = (x - b_dec) @ W_enc + b_enc
    k = sae.cfg.k
    out = np.zeros_like(pre)
    top = np.argpartition(-pre, k - 1, axis=1)[:, :k]
    rows = np.arange(pre.shape[0])[:, None]
    out[rows, top] = np.maximum(pre[rows, top], 0)
    return out


def independent_per_prompt(engine, id_lists, aggregate):
    """[P, F] per SAE: each prompt forwarded alone (full model, no padding), sinks = position 0 + specials."""
    specials = set(engine.tokenizer.all_special_ids)
    out = {name: [] for name in engine.saes}
    for ids in id_lists:
        with torch.inference_mode():
            _, cache = engine.model.run_with_cache(torch.tensor([list(ids)]), names_filter=engine.hook_name)
        r = cache[engine.hook_name][0].double().numpy()
        keep = np.array([p > 0 and int(t) not in specials for p, t in enumerate(ids)])
        for name, sae in engine.saes.items():
            F = sae.cfg.d_sae
            if keep.sum() == 0:
                out[name].append(np.zeros(F))
                continue
            a = numpy_topk_encode(sae, r[keep])
            out[name].append(a.max(0) if aggregate == "max" else a.mean(0))
    return {k: np.stack(v) for k, v in out.items()}


@pytest.fixture(scope="module")
def small_sets():
    concept, contrast = lines("france", 9), lines("neutral", 7)  # unequal sizes on purpose
    return concept, contrast


@pytest.fixture(scope="module")
def collected(tiny_engine, small_sets):
    concept, contrast = small_sets
    ids = disc.encode_prompt_set(tiny_engine.tokenizer, concept + contrast, max_tokens=64)
    calls = []
    st = disc.collect_stats(tiny_engine.model, tiny_engine.saes, tiny_engine.hook_name, ids, len(concept),
                            batch_size=4, progress=lambda d, t: calls.append((d, t)))
    return ids, st, calls


def test_parse_and_hash():
    assert disc.parse_prompt_lines("  a \n\n b\r\n  \n") == ["a", "b"]
    h = disc.prompt_set_hash(["a", "b"], ["c"])
    assert h == disc.prompt_set_hash(["a", "b"], ["c"])
    assert h != disc.prompt_set_hash(["b", "a"], ["c"])
    assert h != disc.prompt_set_hash(["a"], ["b", "c"])  # the split between the sets matters


def test_progress_called_per_batch(tiny_engine, collected, small_sets):
    ids, st, calls = collected
    n = sum(map(len, small_sets))
    rows = disc.pack_rows([len(i) for i in ids], disc.PACK_ROW_TOKENS)
    n_batches = -(-len(rows) // disc.PACK_ROWS_PER_BATCH)
    assert len(calls) == n_batches > 1 and calls[-1] == (n, n)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls) and all(t == n for _, t in calls)
    assert st.n_concept == 9 and st.n_contrast == 7
    unpacked = []
    disc.collect_stats(tiny_engine.model, tiny_engine.saes, tiny_engine.hook_name, ids, 9, batch_size=4,
                       pack_tokens=None, progress=lambda d, t: unpacked.append((d, t)))
    assert unpacked == [(4, n), (8, n), (12, n), (16, n)]


def test_pack_rows_first_fit_decreasing():
    rows = disc.pack_rows([5, 0, 3, 9, 2, 4, 12], 10)
    assert rows == [[6], [3], [0, 5], [2, 4]]  # 12 > 10 gets a row of its own; the empty prompt is left out
    assert sorted(i for r in rows for i in r) == [0, 2, 3, 4, 5, 6]


def test_packed_residuals_equal_each_prompt_alone(tiny_engine, small_sets):
    """Positions restart per prompt and attention stays inside it: each packed prompt's residual at the hook
    equals its own unpadded forward."""
    e = tiny_engine
    ids = disc.encode_prompt_set(e.tokenizer, small_sets[0][:5], max_tokens=40)
    with torch.inference_mode():
        got = disc.packed_resid_at_hook(e.model, e.hook_name, [ids[:3], ids[3:]])
        for row, row_ids in zip(got, [ids[:3], ids[3:]]):
            for r, one in zip(row, row_ids):
                _, cache = e.model.run_with_cache(torch.tensor([list(one)]), names_filter=e.hook_name)
                ref = cache[e.hook_name][0]
                assert r.shape == ref.shape
                torch.testing.assert_close(r, ref, rtol=1e-5, atol=1e-5)
    assert sum(len(i) for i in ids[:3]) > 64  # the row is long enough that unrestarted positions would differ


@pytest.mark.parametrize("aggregate", ["max", "mean"])
def test_packed_tables_equal_unpacked(tiny_engine, collected, small_sets, aggregate):
    """The packed collection gives today's (padded batches of 16) statistics and tables."""
    ids, st, _ = collected
    e = tiny_engine
    ref = disc.collect_stats(e.model, e.saes, e.hook_name, ids, 9, batch_size=16, pack_tokens=None)
    assert (st.n_positions, st.n_tokens_used) == (ref.n_positions, ref.n_tokens_used)
    for name in e.saes:
        a, b = st.per_sae[name], ref.per_sae[name]
        np.testing.assert_allclose(a.dense(range(a.width), aggregate).numpy(), b.dense(range(b.width), aggregate).numpy(),
                                   rtol=1e-5, atol=1e-5)
    prompts = small_sets[0] + small_sets[1]
    params = disc.DiscoveryParams(aggregate=aggregate, top_k=10, min_fire_rate=0.2)
    got, want = disc.summarize(st, e.saes, params, prompts), disc.summarize(ref, e.saes, params, prompts)
    for name in e.saes:
        assert [r["index"] for r in got["tables"][name]] == [r["index"] for r in want["tables"][name]]
        assert [r["top_prompt"] for r in got["tables"][name]] == [r["top_prompt"] for r in want["tables"][name]]
        for r, w in zip(got["tables"][name], want["tables"][name]):
            assert r["selectivity"] == pytest.approx(w["selectivity"], rel=1e-5, abs=1e-6)
            assert r["mean_concept"] == pytest.approx(w["mean_concept"], rel=1e-5, abs=1e-6)
    assert got["mapping"]["coarse"] == want["mapping"]["coarse"] and got["mapping"]["fine"] == want["mapping"]["fine"]
    np.testing.assert_allclose(got["mapping"]["corr"], want["mapping"]["corr"], atol=1e-4)


@pytest.mark.parametrize("aggregate", ["max", "mean"])
def test_per_prompt_stats_match_unbatched_numpy(tiny_engine, collected, aggregate):
    ids, st, _ = collected
    ref = independent_per_prompt(tiny_engine, ids, aggregate)
    for name, sparse in st.per_sae.items():
        got = sparse.dense(range(sparse.width), aggregate).numpy()
        assert got.shape == ref[name].shape
        np.testing.assert_allclose(got, ref[name], rtol=1e-4, atol=1e-4)
        assert (ref[name] > 0).sum() > 50  # the comparison is not all zeros
    assert st.n_positions == sum(len(i) for i in ids)
    assert st.n_tokens_used == sum(len(i) - 1 for i in ids)  # only position 0 is a sink for plain text here


def test_feature_stats_match_numpy(collected):
    ids, st, _ = collected
    for name, sparse in st.per_sae.items():
        for aggregate in ("max", "mean"):
            d = sparse.dense(range(sparse.width), aggregate).numpy().astype(np.float64)
            mx = sparse.dense(range(sparse.width), "max").numpy()
            c, n = d[: st.n_concept], d[st.n_concept:]
            mc, mn = c.mean(0), n.mean(0)
            with np.errstate(invalid="ignore", divide="ignore"):
                sel = np.where(mc + mn > 0, mc / (mc + mn), 0.0)
            fs = disc.feature_stats(sparse, st.n_concept, aggregate)
            np.testing.assert_allclose(fs.mean_concept.numpy(), mc, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(fs.mean_contrast.numpy(), mn, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(fs.selectivity.numpy(), sel, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(fs.fire_concept.numpy(), (mx[: st.n_concept] > 0).mean(0), atol=1e-6)
            np.testing.assert_allclose(fs.fire_contrast.numpy(), (mx[st.n_concept:] > 0).mean(0), atol=1e-6)


def test_top_features_order_filter_and_noisy():
    # 6 features over 4 concept + 4 contrast prompts, per-prompt max values chosen by hand
    dense = torch.tensor([
        # f0 sel 1, fires 4/4 | f1 sel 1, fires 1/4 | f2 loud, sel .5 | f3 sel .75 | f4 never | f5 sel 1, quieter than f0
        [2.0, 0.0, 9.0, 3.0, 0.0, 1.0],
        [2.0, 0.0, 9.0, 3.0, 0.0, 1.0],
        [2.0, 0.0, 9.0, 3.0, 0.0, 1.0],
        [2.0, 5.0, 9.0, 3.0, 0.0, 1.0],
        [0.0, 0.0, 9.0, 1.0, 0.0, 0.0],
        [0.0, 0.0, 9.0, 1.0, 0.0, 0.0],
        [0.0, 0.0, 9.0, 1.0, 0.0, 0.0],
        [0.0, 0.0, 9.0, 1.0, 0.0, 0.0],
    ])
    p, f = (dense > 0).nonzero(as_tuple=True)
    sp = disc.SparsePromptStats(8, 6, p, f, dense[p, f], dense[p, f])
    fs = disc.feature_stats(sp, 4)
    assert fs.selectivity.tolist() == pytest.approx([1.0, 1.0, 0.5, 0.75, 0.0, 1.0])
    rows = disc.top_features(fs, top=3, min_fire_rate=0.5, loud=2)
    # f1 (fires on 1/4 < 0.5) is filtered; ties at selectivity 1 broken by mean_concept (f0 before f5)
    assert [r.index for r in rows[:3]] == [0, 5, 3]
    # the loudest (f2, mean 9) is appended and flagged noisy: loud but selectivity 0.5
    assert [r.index for r in rows[3:]] == [2]
    # noisy = mean_concept >= median of the selective rows (2.0) and selectivity < 0.8: f3 (3.0, 0.75) and f2
    assert [r.noisy for r in rows] == [False, False, True, True]
    assert rows[0].fire_concept == 1.0 and rows[0].fire_contrast == 0.0


def test_dense_subset_columns(collected):
    _, st, _ = collected
    sp = st.per_sae["fine"]
    full = sp.dense(range(sp.width))
    cols = [5, 0, 511, 17]
    np.testing.assert_array_equal(sp.dense(cols).numpy(), full[:, cols].numpy())


# ------------------------------------------------------------------ planted concept
MARK = "@"


def planted_saes(engine, id_lists, n_concept, concept_positions):
    """Coarse feature 0 reads a direction u that separates the marker positions; fine 7 = decoder rotated from u
    (cosine 0.8) reading the same direction (a true sub-feature), fine 9 = decoder orthogonal to u reading u
    (a co-occurring concept)."""
    from app.training.topk_trainer import make_topk_sae

    rs, is_mark = [], []
    for i, ids in enumerate(id_lists):
        with torch.inference_mode():
            _, cache = engine.model.run_with_cache(torch.tensor([list(ids)]), names_filter=engine.hook_name)
        r = cache[engine.hook_name][0].float()
        for p in range(1, len(ids)):
            rs.append(r[p])
            is_mark.append(i < n_concept and p == concept_positions[i])
    R, m = torch.stack(rs), torch.tensor(is_mark)
    u = R[m].mean(0) - R[~m].mean(0)
    u = u / u.norm()
    proj = R @ u
    lo, hi = proj[~m].max().item(), proj[m].min().item()
    assert hi > lo, "marker positions not separable in this tiny model"
    mid = (lo + hi) / 2
    scale = 200.0 / max(hi - mid, 1e-3)

    def build(sae, planted: dict):
        W_enc, b_enc = sae.W_enc.detach().clone(), sae.b_enc.detach().clone()
        W_dec, b_dec = sae.W_dec.detach().clone(), sae.b_dec.detach().clone()
        for idx, dec_dir in planted.items():
            W_enc[:, idx] = u * scale
            b_enc[idx] = -mid * scale + (b_dec @ u) * scale  # the SAE subtracts b_dec before encoding
            W_dec[idx] = dec_dir
        return make_topk_sae(W_enc, b_enc, W_dec, b_dec, sae.cfg.k, engine.hook_name)

    g = torch.Generator().manual_seed(3)
    v = torch.randn(u.shape[0], generator=g)
    v = v - (v @ u) * u
    v = v / v.norm()
    rotated = 0.8 * u + 0.6 * v
    coarse = build(engine.saes["coarse"], {0: u})
    fine = build(engine.saes["fine"], {7: rotated, 9: v})
    return {"coarse": coarse, "fine": fine}, u, v


def test_planted_concept_found_and_classified_blue(tiny_engine):
    base = lines("neutral", 24)
    contrast = base[12:]
    concept, positions = [], []
    for s in base[:12]:
        k = len(s) // 2
        concept.append(s[:k] + MARK + s[k:])
        positions.append(k)  # byte tokenizer: one token per byte, ASCII prompts
    ids = disc.encode_prompt_set(tiny_engine.tokenizer, concept + contrast)
    assert all(ids[i][positions[i]] == tiny_engine.tokenizer.encode(MARK, add_special_tokens=False)[0] for i in range(12))
    saes, u, v = planted_saes(tiny_engine, ids, 12, positions)
    st = disc.collect_stats(tiny_engine.model, saes, tiny_engine.hook_name, ids, 12, batch_size=8)
    res = disc.summarize(st, saes, disc.DiscoveryParams(top_k=10, min_fire_rate=0.5, n_coarse=3, n_fine=10), concept + contrast)

    row = next(r for r in res["tables"]["coarse"] if r["index"] == 0)
    assert row["selectivity"] == 1.0 and row["fire_concept"] == 1.0 and row["fire_contrast"] == 0.0
    assert MARK in row["top_prompt"]
    assert res["tables"]["coarse"][0]["index"] == 0  # the loudest of the perfectly selective features

    m = res["mapping"]
    assert m["coarse"][0] == 0
    assert 7 in m["fine"] and 9 in m["fine"]
    j7, j9 = m["fine"].index(7), m["fine"].index(9)
    assert m["cos"][0][j7] == pytest.approx(0.8, abs=1e-4)
    assert m["corr"][0][j7] == pytest.approx(1.0, abs=1e-4)  # same encoder direction: same per-prompt activations
    assert abs(m["cos"][0][j9]) < 1e-4 and m["corr"][0][j9] == pytest.approx(1.0, abs=1e-4)
    assert dec.classify(m["corr"][0][j7], m["cos"][0][j7]) == "blue"
    assert dec.classify(m["corr"][0][j9], m["cos"][0][j9]) == "red"
    # the full scan finds fine 7 as coarse 0's best match
    assert m["scan"]["matches"][0][0][0] == 7 and m["scan"]["matches"][0][0][1] == pytest.approx(0.8, abs=1e-4)


@pytest.mark.embedded
@pytest.mark.slow
def test_embedded_france_feature_is_selective(embedded_engine):
    """The real SmolLM2 + its SAEs: some coarse feature fires on most France prompts and almost never on neutral ones."""
    concept, contrast = lines("france", 40), lines("neutral", 40)
    e = embedded_engine
    ids = disc.encode_prompt_set(e.tokenizer, concept + contrast, max_tokens=64)
    st = disc.collect_stats(e.model, e.saes, e.hook_name, ids, len(concept), e.profile.sink_norm, 16, e.session)
    res = disc.summarize(st, e.saes, disc.DiscoveryParams(top_k=10, min_fire_rate=0.5, n_coarse=3), concept + contrast)
    best = res["tables"]["coarse"][0]
    assert best["selectivity"] >= 0.9 and best["fire_concept"] >= 0.5, best
    assert res["mapping"]["scan"]["n_fine"] == e.saes["fine"].cfg.d_sae


@pytest.mark.embedded
@pytest.mark.slow
def test_embedded_packed_tables_equal_padded_on_shipped_400(embedded_engine):
    """The shipped 200 France + 200 neutral prompts on SmolLM2: packed rows give today's (padded) tables."""
    e = embedded_engine
    concept, contrast = lines("france", 200), lines("neutral", 200)
    ids = disc.encode_prompt_set(e.tokenizer, concept + contrast, max_tokens=256)
    packed = disc.collect_stats(e.model, e.saes, e.hook_name, ids, len(concept), e.profile.sink_norm)
    padded = disc.collect_stats(e.model, e.saes, e.hook_name, ids, len(concept), e.profile.sink_norm, 16, pack_tokens=None)
    assert (packed.n_positions, packed.n_tokens_used) == (padded.n_positions, padded.n_tokens_used)
    for name in e.saes:
        a, b = packed.per_sae[name], padded.per_sae[name]
        ka = dict(zip((a.prompt * a.width + a.feature).tolist(), a.max.tolist()))
        kb = dict(zip((b.prompt * b.width + b.feature).tolist(), b.max.tolist()))
        # the same features fired (float summation order may swap a near-tie at the k-th place of a TopK, rarely)
        assert len(ka.keys() ^ kb.keys()) <= 1e-3 * len(kb), len(ka.keys() ^ kb.keys())
        common = sorted(ka.keys() & kb.keys())
        np.testing.assert_allclose([ka[k] for k in common], [kb[k] for k in common], rtol=1e-4, atol=1e-3)
    p = disc.DiscoveryParams()
    got, want = disc.summarize(packed, e.saes, p, concept + contrast), disc.summarize(padded, e.saes, p, concept + contrast)
    for name in e.saes:
        assert [r["index"] for r in got["tables"][name]] == [r["index"] for r in want["tables"][name]]
    assert got["mapping"]["coarse"] == want["mapping"]["coarse"] and got["mapping"]["fine"] == want["mapping"]["fine"]
