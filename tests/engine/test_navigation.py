"""Prompts on the map (tiny profile): placement against a direct numpy computation from run_with_cache activations,
the system prompt's pull, long-context drift and the steered path."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from app.engine import navigation as nav
from app.engine.analysis import sink_mask
from app.engine.layout import Layout
from app.engine.prompts import encode_prompt
from app.engine.steering import SteerFeature


@pytest.fixture(scope="module")
def layout(tiny_engine):
    """A stand-in layout (random coordinates): placement does not depend on how xy was computed."""
    w = tuple(int(tiny_engine.saes[n].W_dec.shape[0]) for n in ("coarse", "fine"))
    rng = np.random.default_rng(0)
    xy = rng.uniform(-10, 10, (sum(w), 2)).astype(np.float32)
    return Layout(("coarse", "fine"), w, xy, np.zeros(sum(w), dtype=np.int32), (), 0.5)


def reference_acts(engine, ids):
    """Independent path: full run_with_cache, the hook's activation, each SAE's encode -> numpy."""
    toks = torch.tensor([list(ids)])
    with torch.inference_mode():
        _, cache = engine.model.run_with_cache(toks)
        resid = cache[engine.hook_name][0]
        acts = {n: s.encode(resid).numpy().astype(np.float64) for n, s in engine.saes.items()}
    return resid, acts


def place(layout, acts, t):
    num, den = np.zeros(2), 0.0
    for name, off in (("coarse", 0), ("fine", layout.widths[0])):
        for f in np.flatnonzero(acts[name][t] > 0):
            num += acts[name][t, f] * layout.xy[off + f].astype(np.float64)
            den += acts[name][t, f]
    return num / den


def test_prompt_path_equals_numpy(tiny_engine, layout):
    eng = tiny_engine
    ids = encode_prompt(eng.tokenizer, "The cat sat on the mat.").token_ids
    with eng.session():
        path, _, _ = nav.prompt_path(eng.model, eng.saes, eng.hook_name, ids, layout, eng.profile.sink_norm)
    resid, acts = reference_acts(eng, ids)
    sink = sink_mask(eng.model, ids, resid, eng.profile.sink_norm).tolist()
    assert [p.sink for p in path.points] == sink and sink[0]
    assert path.points[0].xy is None
    placed = 0
    for t, p in enumerate(path.points):
        if sink[t]:
            continue
        np.testing.assert_allclose(p.xy, place(layout, acts, t), atol=2e-4)
        placed += 1
        best = max(((n, int(i), acts[n][t, i]) for n in acts for i in np.flatnonzero(acts[n][t])), key=lambda c: c[2])
        assert p.top[0][:2] == best[:2] and p.top[0][2] == pytest.approx(best[2], rel=1e-4)
    assert placed == len(ids) - 1


def test_system_pull_and_drift(tiny_engine, layout):
    eng = tiny_engine
    user, system = "Tell me about cats.", "You are a pirate."
    ids0 = encode_prompt(eng.tokenizer, user, None, chat=True).token_ids
    ids1 = encode_prompt(eng.tokenizer, user, system, chat=True).token_ids
    with eng.session():
        pull = nav.system_pull(eng.model, eng.saes, eng.hook_name, layout, ids0, ids1, eng.profile.sink_norm, top_moved=5)
        dr = nav.drift(eng.model, eng.saes, eng.hook_name, eng.tokenizer, user, system, (0, 1, 2), max_tokens=256)
    r0, a0 = reference_acts(eng, ids0)
    r1, a1 = reference_acts(eng, ids1)
    assert len(pull.with_system.points) == len(ids1) and len(pull.without.points) == len(ids0)
    # moved: the 5 largest |delta| at the last token over both SAEs, values from the reference activations
    deltas = sorted(((abs(a1[n][-1, i] - a0[n][-1, i]), n, i) for n in a0 for i in range(a0[n].shape[1])), reverse=True)
    assert len(pull.moved) == 5
    for m, (d, n, i) in zip(pull.moved, deltas[:5]):
        assert (m.sae, m.index) == (n, i)
        assert m.without == pytest.approx(a0[n][-1, i], abs=1e-4) and m.with_system == pytest.approx(a1[n][-1, i], abs=1e-4)
    f0 = np.concatenate([a0["coarse"][-1], a0["fine"][-1]])
    f1 = np.concatenate([a1["coarse"][-1], a1["fine"][-1]])
    assert pull.feature_shift == pytest.approx(1 - f0 @ f1 / np.linalg.norm(f0) / np.linalg.norm(f1), abs=1e-5)
    v0, v1 = r0[-1].double().numpy(), r1[-1].double().numpy()
    assert pull.resid_shift == pytest.approx(1 - v0 @ v1 / np.linalg.norm(v0) / np.linalg.norm(v1), abs=1e-5)
    q0, q1 = place(layout, a0, len(ids0) - 1), place(layout, a1, len(ids1) - 1)
    assert pull.map_shift == pytest.approx(np.linalg.norm(q1 - q0), abs=1e-3)
    # drift at k = 0 is the same comparison; fillers lengthen the conversation
    assert [d.k for d in dr] == [0, 1, 2]
    assert dr[0].feature_shift == pytest.approx(pull.feature_shift, abs=1e-6)
    assert dr[0].n_tokens == len(ids1) < dr[1].n_tokens < dr[2].n_tokens
    with eng.session():
        short = nav.drift(eng.model, eng.saes, eng.hook_name, eng.tokenizer, user, system, (0, 1, 2), max_tokens=dr[1].n_tokens)
    assert [d.k for d in short] == [0, 1]


def test_steered_path_moves_toward_the_feature(tiny_engine, layout):
    eng = tiny_engine
    ids = list(encode_prompt(eng.tokenizer, "Hello there").token_ids)
    feat = SteerFeature("coarse", 3, "add", 50.0)
    with eng.session():
        sp = nav.steered_paths(eng.model, eng.saes, eng.hook_name, layout, ids, [feat], 4, eng.profile.sink_norm)
        plain, _, _ = nav.prompt_path(eng.model, eng.saes, eng.hook_name, sp.unsteered.token_ids, layout, eng.profile.sink_norm)
    assert sp.prompt_len == len(ids) and sp.unsteered == plain
    assert sp.marked == (("coarse", 3, tuple(round(float(v), 5) for v in layout.xy[3])),)
    target = layout.xy[3].astype(np.float64)
    t = len(ids) - 1  # last prompt token: steered in both runs' prefix, same token
    d_plain = np.linalg.norm(np.array(sp.unsteered.points[t].xy) - target)
    d_steer = np.linalg.norm(np.array(sp.steered.points[t].xy) - target)
    assert d_steer < d_plain
    assert any(("coarse", 3) == top[:2] for top in sp.steered.points[t].top)
