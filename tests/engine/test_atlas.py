"""app.engine.atlas against a brute-force numpy computation over the dense activation matrix (tiny profile)."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from app.engine import atlas as at
from app.engine.atlas.core import EARLY_POSITIONS
from app.engine.tokens import token_text

CTX, N_WIN = 32, 22
PARAMS = dict(top_examples=6, n_quantiles=3, per_quantile=4, n_bins=7, n_tokens=5, n_neighbours=4)
COFIRE_WINDOWS = 5  # the compact atlas keeps the codes of the first 5 windows only (the split map's sample)


def plain_resid(model, windows, layer: int) -> torch.Tensor:
    """Residual after block `layer` for each window [n, ctx, d], via a hook on a full forward (not the code under test)."""
    out = []

    def make_grab_hook():
        def grab(act, hook):
            out.append(act.detach().clone())
        return grab

    with torch.inference_mode(), model.hooks(fwd_hooks=[(f"blocks.{layer}.hook_resid_post", make_grab_hook())]):
        for w in windows:
            model(torch.tensor([w]))
    return torch.cat(out).float()


def topk_encode(sae, x):
    """Plain-torch TopK encode from the weights (apply_b_dec_to_input)."""
    pre = (x - sae.b_dec.detach()) @ sae.W_enc.detach() + sae.b_enc.detach()
    v, i = pre.topk(sae.cfg.k, dim=-1)
    return torch.zeros_like(pre).scatter(-1, i, v.relu())


@pytest.fixture(scope="module")
def corpus(tiny_engine):
    rng = np.random.default_rng(0)
    text_ids = tiny_engine.tokenizer.encode("The capital of France is Paris. Water boils at 100 degrees; "
                                            "Berlin is in Germany and Rome is in Italy. " * 12,
                                            add_special_tokens=False)
    windows = []
    for w in range(N_WIN):
        s = int(rng.integers(0, len(text_ids) - CTX))
        win = list(text_ids[s: s + CTX])
        if w % 5 == 2:
            win[7] = 257  # a special token (<|im_start|>): never counted
        windows.append(win)
    eng = tiny_engine
    layer = eng.profile.hook_layer
    resid = plain_resid(eng.model, windows, layer)  # [n, ctx, d]
    norms = resid.norm(dim=-1)
    sink_norm = float(norms[:, 1:].flatten().quantile(0.97))  # a few massive positions, as on SmolLM2
    valid = torch.ones(N_WIN, CTX, dtype=torch.bool)
    valid[:, 0] = False
    valid &= torch.tensor(windows) < 256
    valid &= norms <= sink_norm
    dense = {}
    for n, sae in eng.saes.items():
        d = topk_encode(sae, resid.reshape(-1, resid.shape[-1])).numpy()
        d = d.astype(np.float16).astype(np.float32)  # the atlas stores fp16 activations
        d[~valid.reshape(-1).numpy()] = 0
        dense[n] = d
    return windows, sink_norm, valid.reshape(-1).numpy(), dense


@pytest.fixture(scope="module")
def built(tiny_engine, corpus):
    windows, sink_norm, _, _ = corpus
    eng = tiny_engine
    with eng.session():
        return at.build_atlas(eng.model, eng.saes, windows, eng.hook_name, fingerprint="fp", sink_norm=sink_norm,
                              batch_size=3, chunk_windows=5, cofire_tokens=COFIRE_WINDOWS * CTX, **PARAMS)


def brute_force(dense: np.ndarray, tokens: np.ndarray, valid: np.ndarray, f: int) -> dict:
    col = dense[:, f]
    fire = col > 0
    out = {"n_firing": int(fire.sum()), "density": fire.sum() / valid.sum(),
           "mean": float(col[fire].mean()) if fire.any() else 0.0, "max": float(col.max())}
    out["hist"] = (np.histogram(col[fire], bins=PARAMS["n_bins"], range=(0, col.max()))[0]
                   if fire.any() else np.zeros(PARAMS["n_bins"], int))
    per_win = col.reshape(-1, CTX)
    late = per_win[:, EARLY_POSITIONS:]
    has_late = late.max(1) > 0
    # a window's example: its strongest position >= EARLY_POSITIONS if it fires there, else its strongest; first wins
    warg = np.where(has_late, EARLY_POSITIONS + late.argmax(1), per_win.argmax(1))
    wmax = per_win[np.arange(len(per_win)), warg]
    fired = [w for w in range(len(wmax)) if wmax[w] > 0]
    ranked = sorted(fired, key=lambda w: (-wmax[w], w))
    top = sorted(fired, key=lambda w: (not has_late[w], -wmax[w], w))
    out["top_rows"] = [w * CTX + int(warg[w]) for w in top[: PARAMS["top_examples"]]]
    n, Q, m = len(ranked), PARAMS["n_quantiles"], PARAMS["per_quantile"]
    bands = []
    for q in range(Q):
        lo, hi = q * n // Q, (q + 1) * n // Q
        picks = []
        for j in range(m):
            r = lo + ((2 * j + 1) * (hi - lo)) // (2 * m)
            if hi > lo and r not in picks:
                picks.append(r)
        bands.append([ranked[r] * CTX + int(warg[ranked[r]]) for r in picks])
    out["quant_rows"] = bands
    cnt = Counter(tokens[fire].tolist())
    sums = {t: float(col[fire & (tokens == t)].astype(np.float64).sum()) for t in cnt}
    order = sorted(cnt, key=lambda t: (-cnt[t], -sums[t], t))[: PARAMS["n_tokens"]]
    out["tokens"] = [(t, cnt[t], sums[t] / cnt[t]) for t in order]
    return out


def test_summaries_equal_brute_force(built, corpus):
    windows, _, valid, dense = corpus
    tokens = np.asarray(windows).reshape(-1)
    assert np.array_equal(built.tokens, tokens) and np.array_equal(built.valid, valid)
    assert built.n_valid == valid.sum() < valid.size
    checked_fire = moved = 0
    for n, d in dense.items():
        s = built.summaries[n]
        assert built.codes[n].shape == (COFIRE_WINDOWS * CTX, d.shape[1])  # only the co-firing sample is kept
        assert np.allclose(built.codes[n].toarray(), d[: COFIRE_WINDOWS * CTX], rtol=0, atol=0)
        for f in range(d.shape[1]):
            b = brute_force(d, tokens, valid, f)
            assert s["n_firing"][f] == b["n_firing"]
            assert built.density[n][f] == pytest.approx(b["density"], rel=1e-12)
            assert built.mean_when_firing[n][f] == pytest.approx(b["mean"], rel=1e-5)
            assert built.max_act[n][f] == b["max"]
            assert s["hist"][f].tolist() == list(b["hist"])
            assert [r for r in s["top_rows"][f] if r >= 0] == b["top_rows"]
            per_win = d[:, f].reshape(-1, CTX)  # the plain rule, a window's max anywhere: does the early rule change it?
            plain = sorted((w for w in range(len(per_win)) if per_win[w].max() > 0), key=lambda w: (-per_win[w].max(), w))
            moved += [w * CTX + int(per_win[w].argmax()) for w in plain[: PARAMS["top_examples"]]] != b["top_rows"]
            assert [[r for r in band if r >= 0] for band in s["quant_rows"][f]] == b["quant_rows"]
            got = [(int(t), int(c), float(m)) for t, c, m in zip(s["tok_ids"][f], s["tok_counts"][f], s["tok_mean"][f]) if c > 0]
            assert [(t, c) for t, c, _ in got] == [(t, c) for t, c, _ in b["tokens"]]
            assert np.allclose([m for *_, m in got], [m for *_, m in b["tokens"]], rtol=1e-5)
            checked_fire += b["n_firing"] > 0
    assert checked_fire > 100  # most features fire on the corpus: the comparison is not vacuous
    assert 0 < moved < checked_fire  # the early-position rule reorders some features' examples, not all


def brute_label(built, b: dict, tokens: np.ndarray, valid: np.ndarray, min_count=3, min_lift=4.0,
                min_window_share=1 / 3, min_window_lift=5.0) -> str:
    """The label rule written out with Counters and loops over the brute-force summary (not the code under test)."""
    if b["n_firing"] == 0:
        return "(never fires on the atlas corpus)"
    n_valid = int(valid.sum())
    corpus = Counter(tokens[valid].tolist())

    def key(t):
        raw = built.tok(t)
        return raw.strip() or (raw.replace(" ", "␣").replace("\n", "↵").replace("\t", "⇥") or "∅")

    merged: dict = {}
    for t, c, _ in b["tokens"]:
        lift = (c / b["n_firing"]) / (corpus[t] / n_valid)
        k = key(t)
        c0, l0 = merged.get(k, (0, 0.0))
        merged[k] = (c0 + c, max(l0, lift))
    ranked = sorted(merged, key=lambda k: -merged[k][0] * np.log(max(merged[k][1], 1.0)))
    parts = [k for k in ranked if merged[k][0] >= min_count and merged[k][1] >= min_lift][:3]
    wins = sorted({r // CTX for r in b["top_rows"]})
    context = []
    if len(wins) >= 3:
        present = Counter(t for w in wins for t in set(tokens[w * CTX:(w + 1) * CTX][valid[w * CTX:(w + 1) * CTX]].tolist()))
        cands = []
        for t, k in present.items():
            chance = 1 - (1 - corpus[t] / n_valid) ** CTX
            if k / len(wins) >= min_window_share and (k / len(wins)) / chance >= min_window_lift:
                cands.append(((k / len(wins)) / chance, t))
        for _, t in sorted(cands, key=lambda x: -x[0]):
            k = key(t)
            if k not in parts and k not in context and any(ch.isalnum() for ch in k):
                context.append(k)
        context = context[:2]
    label = " · ".join(parts) if parts else "(no selective token)"
    return f"{label} (in: {' · '.join(context)})" if context else label


def test_labels_name_selective_tokens_equal_brute_force(built, corpus):
    windows, _, valid, dense = corpus
    tokens = np.asarray(windows).reshape(-1)
    kinds = Counter()
    for n, d in dense.items():
        for f in range(d.shape[1]):
            b = brute_force(d, tokens, valid, f)
            want = brute_label(built, b, tokens, valid)
            assert built.label(n, f) == want, (n, f)
            kinds["context" if "(in:" in want else "tokens" if not want.startswith("(") else "none"] += 1
    assert kinds["tokens"] > 50 and kinds["none"] > 0, kinds  # both outcomes of the token rule are exercised
    # a token on nearly every position (the most common in the corpus) never names a feature by count alone
    common = built.tok(Counter(tokens[valid].tolist()).most_common(1)[0][0]).strip()
    assert sum(common in built.label("fine", f).split(" (in:")[0].split(" · ") for f in range(dense["fine"].shape[1])) \
        < sum(common == built.tok(t).strip() for f in range(dense["fine"].shape[1])
              for t in built.summaries["fine"]["tok_ids"][f][:1])


def test_label_context_names_a_topic_token_of_the_top_windows():
    """A feature that fires on common tokens, but only in windows about one topic: labelled by the topic."""
    rng = np.random.default_rng(1)
    ctx, n_win = 16, 60
    tokens = rng.integers(10, 40, size=n_win * ctx).astype(np.int32)  # filler ids 10..39
    topic = [0, 3, 5, 8, 11, 14]
    for w in topic:
        tokens[w * ctx + 4] = 7  # "Paris": only in the topic windows
    tokens[9 * ctx + 2] = 7  # once elsewhere
    tokens[::ctx] = 2  # position 0 of every window: a BOS, not counted
    valid = np.ones_like(tokens, dtype=bool)
    valid[::ctx] = False
    strings = {i: f" w{i}" for i in range(10, 40)} | {7: " Paris", 2: "<s>"}
    rows = np.array([w * ctx + 9 for w in topic], dtype=np.int64)  # fires at position 9 (a filler token)
    fired_tok = tokens[rows]
    ids, counts = np.unique(fired_tok, return_counts=True)
    summ = {"n_firing": np.array([len(rows)]), "top_rows": rows[None, :],
            "tok_ids": ids[None, :], "tok_counts": counts[None, :]}
    atlas = at.Atlas(fingerprint="x", tokens=tokens, ctx=ctx, valid=valid, codes={}, density={}, mean_when_firing={},
                     max_act={}, summaries={"fine": summ}, token_strings=strings)
    label = atlas.label("fine", 0)
    assert label.endswith("(in: Paris)"), label
    # the same feature without the topic token in its windows: no context part
    tokens2 = tokens.copy()
    tokens2[tokens2 == 7] = 11
    atlas2 = at.Atlas(fingerprint="x", tokens=tokens2, ctx=ctx, valid=valid, codes={}, density={}, mean_when_firing={},
                      max_act={}, summaries={"fine": summ}, token_strings=strings)
    assert "(in:" not in atlas2.label("fine", 0)


def test_neighbours_equal_numpy_cosine_topk(built, tiny_engine):
    W = {n: s.W_dec.detach().numpy().astype(np.float64) for n, s in tiny_engine.saes.items()}
    U = {n: w / np.linalg.norm(w, axis=1, keepdims=True) for n, w in W.items()}
    k = PARAMS["n_neighbours"]
    for n, other in (("coarse", "fine"), ("fine", "coarse")):
        same = U[n] @ U[n].T
        np.fill_diagonal(same, -np.inf)
        cross = U[n] @ U[other].T
        s = built.summaries[n]
        assert np.array_equal(s["nb_same_idx"], np.argsort(-same, axis=1, kind="stable")[:, :k])
        assert np.allclose(s["nb_same_cos"], -np.sort(-same, axis=1)[:, :k], atol=1e-5)
        assert np.array_equal(s["nb_other_idx"], np.argsort(-cross, axis=1, kind="stable")[:, :k])
        assert np.allclose(s["nb_other_cos"], -np.sort(-cross, axis=1)[:, :k], atol=1e-5)
        nb = built.feature(n, 3).neighbours
        assert [x.index for x in nb[other]] == s["nb_other_idx"][3].tolist() and nb[other][0].sae == other


def test_feature_examples_show_context_activations(built, corpus, tiny_engine):
    windows, _, _, dense = corpus
    tokens = np.asarray(windows).reshape(-1)
    f = int(np.argmax(built.summaries["fine"]["n_firing"]))
    fa = built.feature("fine", f, left=5, right=2)
    late = dense["fine"][:, f].reshape(-1, CTX)[:, EARLY_POSITIONS:]
    assert fa.max_act == dense["fine"][:, f].max()
    assert fa.examples and fa.examples[0].activation == late.max() > 0  # the strongest with context comes first
    assert all(ex.position >= EARLY_POSITIONS for ex in fa.examples[: int((late.max(1) > 0).sum())])
    for ex in fa.examples + tuple(e for _, band in fa.quantiles for e in band):
        g0 = ex.window * CTX + ex.start
        assert ex.token_ids == tuple(tokens[g0: g0 + len(ex.token_ids)].tolist())
        assert np.array_equal(np.asarray(ex.acts, np.float32), dense["fine"][g0: g0 + len(ex.acts), f])
        assert ex.tokens[ex.position - ex.start] == token_text(tiny_engine.tokenizer, tokens[g0 + ex.position - ex.start])
        assert ex.position - ex.start <= 5 and len(ex.acts) <= 8
    assert any(ex.window >= COFIRE_WINDOWS for ex in fa.examples)  # contexts stored, not read from the codes
    wide = built.feature("fine", f, left=40, right=40)  # wider than stored: clipped to the stored context
    assert all(ex.position - ex.start <= 16 and ex.start + len(ex.acts) - ex.position <= 7 for ex in wide.examples)
    with pytest.raises(IndexError, match="co-firing sample"):
        built.example("fine", f, COFIRE_WINDOWS * CTX)
    assert sum(fa.hist_counts) == fa.n_firing and fa.hist_edges[-1] == pytest.approx(fa.max_act)
    assert fa.label == built.label("fine", f) and fa.label
    with pytest.raises(IndexError, match="0..511"):
        built.feature("fine", 512)


def test_save_load_roundtrip(built, tmp_path):
    at.save_atlas(built, tmp_path / "a")
    got = at.load_atlas(tmp_path / "a")
    assert got.fingerprint == "fp" and got.ctx == CTX
    assert np.array_equal(got.tokens, built.tokens) and np.array_equal(got.valid, built.valid)
    for n in built.codes:
        assert (got.codes[n] != built.codes[n]).nnz == 0
        for k, v in built.summaries[n].items():
            assert np.array_equal(got.summaries[n][k], v), k
    assert got.feature("coarse", 1) == built.feature("coarse", 1)
    assert at.load_atlas(tmp_path / "none") is None
    atlas, status = at.load_for_engine(tmp_path / "a", "other-fp", "tiny")
    assert atlas is None and status.startswith("stale") and "python -m app atlas --profile tiny" in status
    atlas, status = at.load_for_engine(tmp_path / "a", "fp", "tiny")
    assert status == "ok" and atlas is not None


def test_resume_after_interruption_gives_the_same_atlas(tiny_engine, corpus, built, tmp_path, monkeypatch):
    windows, sink_norm, _, _ = corpus
    eng = tiny_engine

    class Stop(Exception):
        pass

    def stop_after_two(done, total):
        if done >= 2 * 5 * CTX:
            raise Stop

    kw = dict(fingerprint="fp", sink_norm=sink_norm, batch_size=3, chunk_windows=5, work_dir=tmp_path / "w",
              cofire_tokens=COFIRE_WINDOWS * CTX, **PARAMS)
    with eng.session(), pytest.raises(Stop):
        at.build_atlas(eng.model, eng.saes, windows, eng.hook_name, progress=stop_after_two, **kw)
    assert sorted(p.name for p in (tmp_path / "w").glob("chunk_*.npz")) == ["chunk_00000.npz", "chunk_00001.npz"]
    calls = []
    real = at.forward_to_hook
    # build_atlas looks forward_to_hook up in the module that defines it (app/engine/atlas/build.py)
    monkeypatch.setattr(at.build, "forward_to_hook", lambda *a: calls.append(1) or real(*a))
    with eng.session():
        again = at.build_atlas(eng.model, eng.saes, windows, eng.hook_name, **kw)
    assert len(calls) == sum(-(-min(5, N_WIN - c) // 3) for c in range(10, N_WIN, 5))  # only the missing chunks ran
    for n in built.codes:
        assert (again.codes[n] != built.codes[n]).nnz == 0
        for k, v in built.summaries[n].items():
            assert np.array_equal(again.summaries[n][k], v), k


def test_search_by_text_equals_direct_encode(tiny_engine, built):
    eng = tiny_engine
    prefix = eng.tokenizer.encode("\n\n", add_special_tokens=False)
    query = eng.tokenizer.encode("Paris, France", add_special_tokens=False)
    with eng.session():
        hits = at.search_by_text(eng.model, eng.saes, eng.hook_name, prefix, query, top=15, atlas=built, by="activation")
        unusual = at.search_by_text(eng.model, eng.saes, eng.hook_name, prefix, query, top=15, atlas=built)
    resid = plain_resid(eng.model, [prefix + query], eng.profile.hook_layer)[0, len(prefix):]
    for n, sae in eng.saes.items():
        acts = topk_encode(sae, resid).numpy()
        mx = acts.max(0)
        want = [int(i) for i in np.argsort(-mx, kind="stable") if mx[i] > 0][:15]
        assert [h.index for h in hits[n]] == want
        assert np.allclose([h.activation for h in hits[n]], mx[want], rtol=1e-5)
        assert hits[n][0].token == token_text(eng.tokenizer, query[int(acts[:, want[0]].argmax())])
        # most unusual: the max activation over the mean activation when firing on the atlas, dense ones last
        typical, dense = built.mean_when_firing[n], built.density[n] > 0.10
        ratio = np.where(typical > 0, mx / np.maximum(typical, 1e-30), 0)
        fired = [int(i) for i in np.flatnonzero(mx > 0)]
        want_u = sorted(fired, key=lambda i: (dense[i], -ratio[i], -mx[i], i))[:15]
        assert [h.index for h in unusual[n]] == want_u
        assert np.allclose([h.score for h in unusual[n]], ratio[want_u], rtol=1e-5)
        assert [h.dense for h in unusual[n]] == [bool(dense[i]) for i in want_u]
        assert hits[n][0].label == built.label(n, want[0])


def _naive_word_positions(atlas, query):
    """Brute force: for every token, does some occurrence of the query, with no letter or digit right before or
    after it in its window's text, overlap the token's characters?"""
    q = query.casefold()
    out = []
    for w in range(atlas.n_windows):
        ids = atlas.tokens[w * atlas.ctx:(w + 1) * atlas.ctx]
        strs = [atlas.tok(int(t)).casefold() for t in ids]
        text = "".join(strs)
        spans, i = [], text.find(q)
        while i >= 0:
            before = text[i - 1] if i else " "
            after = text[i + len(q)] if i + len(q) < len(text) else " "
            if not (before.isalnum() or before == "_") and not (after.isalnum() or after == "_"):
                spans.append((i, i + len(q)))
            i = text.find(q, i + 1)
        off = 0
        for j, st in enumerate(strs):
            if any(a < off + len(st) and off < b for a, b in spans) and atlas.valid[w * atlas.ctx + j]:
                out.append(w * atlas.ctx + j)
            off += len(st)
    return out


def test_search_atlas_ranks_by_top_examples_then_lift_on_whole_words(built, corpus):
    """Listed: the lift filters; order: the share of the top examples with the word next to the activation (naive
    positions, brute-force top examples), then lift."""
    from app.engine.atlas import words

    listed = reordered = 0
    for query in ("Paris", "France", "water", "Berlin", "Rome", "degrees", "boils", "the", "is", "100"):
        pos = _naive_word_positions(built, query)
        assert words.matching_positions(built, query).tolist() == pos and pos
        dense = {n: (d > 0) for n, d in corpus[3].items()}  # all the corpus's codes (the atlas keeps a sample only)
        hits = at.search_atlas(built, query, top=50)
        for n, fires in dense.items():
            on_word = fires[pos].sum(0)
            lift = (on_word / len(pos)) / np.maximum(fires[built.valid].mean(0), 1 / built.n_valid)
            share = on_word / np.maximum(fires.sum(0), 1)
            ok = (on_word >= words.MIN_MATCHED_FIRINGS) & (lift >= words.MIN_LIFT) & (share >= words.MIN_SHARE)
            near = {}
            for i in np.flatnonzero(ok):
                top = brute_force(corpus[3][n], np.asarray(corpus[0]).reshape(-1), corpus[2], i)["top_rows"]
                top = top[: words.TOP_CHECKED]
                near[i] = sum(any(p // CTX == r // CTX and r - words.NEAR_LEFT <= p <= r + words.NEAR_RIGHT
                                  for p in pos) for r in top) / len(top)
            want = sorted(np.flatnonzero(ok), key=lambda i: (-near[i], -lift[i], -on_word[i], i))[:50]
            assert [h.index for h in hits[n]] == want, (query, n)
            assert [h.top_share for h in hits[n]] == pytest.approx([near[i] for i in want])
            reordered += want != sorted(np.flatnonzero(ok), key=lambda i: (-lift[i], -on_word[i], i))[:50]
            listed += len(want)
            assert np.allclose([h.score for h in hits[n]], lift[want])
            mean_on_word = (corpus[3][n][pos] * fires[pos]).sum(0) / np.maximum(on_word, 1)
            assert np.allclose([h.activation for h in hits[n]], mean_on_word[want], rtol=1e-3)
            assert all(built.tok(int(built.tokens[pos[0]])) == h.token for h in hits[n])
    assert listed > 0 and reordered > 0  # not vacuous: the top-example share changes some orders
    assert at.search_atlas(built, "   ") == {"coarse": (), "fine": ()}


def test_word_index_equals_naive_whole_word_positions(built):
    """The build-time word index (every \\w+ word of the corpus text): its valid positions per word."""
    from app.engine.atlas import compact

    w = built.words
    assert w["words"] == sorted(w["words"]) and len(w["words"]) > 10
    full = compact.word_index(built.tokens, built.valid, built.ctx, built.tok)
    for i, word in enumerate(w["words"]):
        pos = _naive_word_positions(built, word)
        assert int(w["n_pos"][i]) == len(pos), word
        assert int(w["first"][i]) == (pos[0] if pos else -1)
        assert full["pos"][full["word"] == i].tolist() == pos


def test_compact_atlas_on_disk_keeps_no_per_token_codes(built, tmp_path):
    at.save_atlas(built, tmp_path / "a")
    for n in built.summaries:
        z = np.load(tmp_path / "a" / f"codes_{n}.npz")
        assert tuple(z["shape"])[0] == COFIRE_WINDOWS * CTX < len(built.tokens)
    assert np.load(tmp_path / "a" / "tokens.npy").dtype == np.uint16  # the tiny vocabulary fits


def test_a_query_never_matches_inside_a_word(built):
    from dataclasses import replace

    from app.engine.atlas import words

    strings = {0: " comparison", 1: " Paris", 2: ",", 3: " dangerous", 4: " anger", 5: " Compare", 6: "Paris",
               7: "ian", 8: " Christ", 9: "mas", 10: " Christmas"}
    toks = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 1, 3, 4, 2, 6], np.int32)
    fake = replace(built, tokens=toks, ctx=8, valid=np.ones(16, bool), token_strings=strings, _cache={})
    assert words.matching_positions(fake, "Paris").tolist() == [1, 11, 15]  # not " comparison", not "Paris"+"ian"
    assert words.matching_positions(fake, "anger").tolist() == [4, 13]  # not " dangerous"
    assert words.matching_positions(fake, "compar").tolist() == []
    assert words.matching_positions(fake, "christmas").tolist() == [8, 9, 10]  # a word over two tokens
    assert words.matching_positions(fake, "paris,").tolist() == [1, 2]
    assert _naive_word_positions(fake, "Paris") == [1, 11, 15]


def test_pair_independence_equals_numpy(tiny_engine):
    C = tiny_engine.saes["coarse"].W_dec.detach().numpy().astype(np.float64)
    F = tiny_engine.saes["fine"].W_dec.detach().numpy().astype(np.float64)
    Cn, Fn = C / np.linalg.norm(C, axis=1, keepdims=True), F / np.linalg.norm(F, axis=1, keepdims=True)
    n = len(Cn)
    for fine in (Fn, np.vstack([Cn + 0.01 * Fn[:n], Fn[n:]])):  # independent, then initialised together
        got = at.pair_independence(torch.tensor(C), torch.tensor(fine))
        fu = fine / np.linalg.norm(fine, axis=1, keepdims=True)
        assert got.mean_same_index_cosine == pytest.approx((Cn * fu[:n]).sum(1).mean(), abs=1e-5)
        assert got.share_best_is_same == pytest.approx(((Cn @ fu.T).argmax(1) == np.arange(n)).mean())
        assert got.n_checked == n
    assert got.initialised_together and got.share_best_is_same == 1.0
    assert not at.pair_independence(torch.tensor(C), torch.tensor(F)).initialised_together
    assert tiny_engine.pair_check is not None and (tiny_engine.atlas_status == "ok") == (tiny_engine.atlas is not None)


def test_label_detection_score_equals_brute_force_on_held_out_windows(built, corpus):
    """Label made from windows w % 4 != 3 (the label rule, written out with Counters), scored on the others."""
    from app.engine.atlas.label_score import SCORE_EVERY, label_score

    windows, _, valid, dense = corpus
    tokens = np.asarray(windows).reshape(-1)
    held = (np.arange(len(tokens)) // CTX) % SCORE_EVERY == SCORE_EVERY - 1
    lab, sco = valid & ~held, valid & held
    base = Counter(tokens[lab].tolist())
    n_lab = int(lab.sum())

    def key(t):
        raw = built.tok(t)
        return raw.strip() or (raw.replace(" ", "␣").replace("\n", "↵").replace("\t", "⇥") or "∅")

    checked = Counter()
    for n, d in dense.items():
        for f in range(d.shape[1]):
            fires = d[:, f] > 0
            fl = Counter(tokens[fires & lab].tolist())
            nf = max(1, int((fires & lab).sum()))
            merged: dict = {}
            for t, c in fl.items():
                lift = (c / nf) / (base[t] / n_lab)
                c0, l0 = merged.get(key(t), (0, 0.0))
                merged[key(t)] = (c0 + c, max(l0, lift))
            ranked = sorted(merged, key=lambda k: -merged[k][0] * np.log(max(merged[k][1], 1.0)))
            parts = [k for k in ranked if merged[k][0] >= 3 and merged[k][1] >= 4.0][:3]
            pred = sco & np.isin(tokens, [t for t in set(tokens.tolist()) if key(t) in parts])
            both = int((pred & fires).sum())
            got = label_score(built, n, f)
            assert list(got.parts) == parts, (n, f)
            assert (got.n_predicted, got.n_firing, got.n_both) == (int(pred.sum()), int((fires & sco).sum()), both)
            if parts and pred.sum() and (fires & sco).sum():
                p, r = both / pred.sum(), both / (fires & sco).sum()
                assert got.precision == pytest.approx(p) and got.recall == pytest.approx(r)
                assert got.f1 == pytest.approx(2 * p * r / (p + r) if p + r else 0.0)
                checked["scored"] += 1
    assert checked["scored"] > 20


def test_a_version_1_folder_upgrades_to_the_same_compact_atlas(built, corpus, tmp_path):
    """A folder in the old format (every token's codes, nothing precomputed) is refused as stale, and
    compact.upgrade turns it into the atlas a fresh build gives, without running the model."""
    import json

    import scipy.sparse as sp

    from app.engine.atlas import compact

    windows, sink_norm, valid, dense = corpus
    tokens = np.asarray(windows, np.int32).reshape(-1)
    old = tmp_path / "v1"
    old.mkdir()
    np.save(old / "tokens.npy", tokens)
    np.save(old / "valid.npy", np.packbits(valid))
    for n, d in dense.items():
        m = sp.csr_matrix(d)
        np.savez(old / f"codes_{n}.npz", data=m.data.astype(np.float16), indices=m.indices.astype(np.uint16),
                 indptr=m.indptr.astype(np.int64), shape=np.asarray(m.shape))
        np.savez_compressed(old / f"summary_{n}.npz", **{k: v for k, v in built.summaries[n].items()
                                                        if k in ("n_firing", "mean_when_firing", "max_act", "hist",
                                                                 "top_rows", "quant_rows", "tok_ids", "tok_counts",
                                                                 "tok_mean", "nb_same_idx", "nb_same_cos",
                                                                 "nb_other_idx", "nb_other_cos")})
    (old / "token_strings.json").write_text(json.dumps(sorted(built.token_strings.items())))
    (old / "meta.json").write_text(json.dumps({"version": 1, "fingerprint": "fp", "ctx": CTX, "saes": ["coarse", "fine"]}))
    atlas, status = at.load_for_engine(old, "fp", "tiny")
    assert atlas is None and status.startswith("stale") and "version 1" in status
    up = compact.upgrade(old, cofire_tokens=COFIRE_WINDOWS * CTX)
    assert up.meta["version"] == at.ATLAS_VERSION and up.meta["upgraded_from_version"] == 1
    assert up.label_parts == built.label_parts and up.words["words"] == built.words["words"]
    for n in built.summaries:
        for k, v in built.summaries[n].items():
            assert np.array_equal(up.summaries[n][k], v), (n, k)
    at.save_atlas(up, old)
    atlas, status = at.load_for_engine(old, "fp", "tiny")
    assert status == "ok" and atlas.feature("fine", 5) == built.feature("fine", 5)
    assert compact.upgrade(old) is None  # already compact


def test_position_artefacts_equal_brute_force(built, corpus):
    """Features whose top examples mostly sit at early window positions, recounted from the dense codes."""
    windows, _, valid, dense = corpus
    tokens = np.asarray(windows).reshape(-1)
    flagged_some = False
    for early, share in ((8, 0.5), (40, 0.3), (64, 0.6)):
        for n, d in dense.items():
            want = []
            for f in range(d.shape[1]):
                rows = brute_force(d, tokens, valid, f)["top_rows"]
                pos = [r % CTX for r in rows]
                if len(rows) >= 5 and sum(1 <= p < early for p in pos) / len(rows) >= share:
                    want.append(f)
            got = at.position_artefacts(built, n, early=early, min_share=share).tolist()
            assert got == want
            flagged_some |= 0 < len(want) < d.shape[1]
    assert flagged_some  # some setting splits the features: the comparison is not vacuous


@pytest.mark.embedded
def test_embedded_atlas_has_no_position_artefacts(embedded_engine):
    """No feature of the shipped pair has its atlas top examples at window positions 1-7 half the time or more."""
    if embedded_engine.atlas is None:
        pytest.skip(f"no embedded atlas: {embedded_engine.atlas_status}")
    for sae in ("coarse", "fine"):
        assert at.position_artefacts(embedded_engine.atlas, sae).tolist() == []


def test_encode_sparse_equals_the_dense_encode(tiny_engine):
    """The TopK shortcut (k codes per row, no dense scan) gives the CSR the dense sae.encode gives, rows not kept
    empty, values rounded to the storage dtype; a non-TopK SAE takes the dense path."""
    from app.engine.atlas.build import encode_sparse, topk_parts
    from app.engine.atlas.core import VALUE_DTYPE
    from app.engine.compat import JumpReLUSAE, JumpReLUSAEConfig

    g = torch.Generator().manual_seed(3)
    d = tiny_engine.model.cfg.d_model
    x = torch.randn(50, d, generator=g) * 4
    keep = torch.rand(50, generator=g) > 0.3
    jump = JumpReLUSAE(JumpReLUSAEConfig(d_in=d, d_sae=40, dtype="float32", device="cpu"))
    with torch.no_grad():
        for p in jump.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    assert topk_parts(jump, x) is None
    for sae in list(tiny_engine.saes.values()) + [jump]:
        with torch.no_grad():
            dense = (sae.encode(x) * keep.unsqueeze(-1)).numpy().astype(VALUE_DTYPE).astype(np.float32)
        got = encode_sparse(sae, x, keep)
        assert got.has_sorted_indices and np.array_equal(got.toarray(), dense)
        assert got.nnz == int((dense != 0).sum()) > 0
