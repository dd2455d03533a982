"""Batched steered generation (app/engine/batched.py) against the single-prompt steering path, on the tiny model."""
from __future__ import annotations

import pytest
import torch

from app.engine.batched import BatchedFastDecoder, BatchRow, BatchState, batched_generate, row_steer
from app.engine.generation import generate
from app.engine.sampling import SamplingParams
from app.engine.steering import SteerFeature, SteerOptions, steered_generate

PROMPTS = ["Hello there", "The capital of France is", "a", "Once upon a time in a land far away", "Bonjour"]
FEATURES = [
    [],
    [SteerFeature("coarse", 3, "add", 5.0)],
    [SteerFeature("fine", 7, "clamp", 4.0), SteerFeature("coarse", 1, "add", -3.0)],
    [SteerFeature("coarse", 2, "clamp", 0.0)],
    [SteerFeature("fine", 11, "add", 8.0), SteerFeature("fine", 12, "add", 6.0)],
]


def _ids(engine, prompts):
    return [tuple(engine.tokenizer.encode(p, add_special_tokens=False)) for p in prompts]


@pytest.mark.parametrize("sink_norm", [None, 60.0])
def test_greedy_batched_equals_unbatched_steered(tiny_engine, sink_norm):
    e = tiny_engine
    opts = SteerOptions(sink_norm=sink_norm)
    ids = _ids(e, PROMPTS)
    with e.session():
        rows = [BatchRow(i, row_steer(e.saes, f)) for i, f in zip(ids, FEATURES)]
        got = batched_generate(e.model, e.saes, e.hook_name, rows, 24, (), opts, batch_size=8)
        for i, f, g in zip(ids, FEATURES, got):
            ref = steered_generate(e.model, e.saes, e.hook_name, i, f, SamplingParams(), 24, (), opts)
            assert g.ids == ref.ids
            assert g.decoder == BatchedFastDecoder.name
            assert [t.prob for t in g.tokens] == pytest.approx([t.prob for t in ref.tokens], rel=1e-4, abs=1e-6)
        # steering changes what the model writes (so the equality above is not vacuous)
        plain = generate(e.model, ids[1], 24, SamplingParams())
        assert plain.ids != got[1].ids


def test_sampled_rows_reproducible_and_match_unbatched(tiny_engine):
    e = tiny_engine
    ids = _ids(e, PROMPTS)
    params = [SamplingParams(temperature=1.0, seed=s) for s in (7, 8, 9, 10, 11)]
    with e.session():
        rows = [BatchRow(i, row_steer(e.saes, f), p) for i, f, p in zip(ids, FEATURES, params)]
        a = batched_generate(e.model, e.saes, e.hook_name, rows, 16, batch_size=3)
        b = batched_generate(e.model, e.saes, e.hook_name, list(reversed(rows)), 16, batch_size=5)[::-1]
        assert [g.ids for g in a] == [g.ids for g in b]
        for i, f, p, g in zip(ids, FEATURES, params, a):
            assert g.ids == steered_generate(e.model, e.saes, e.hook_name, i, f, p, 16).ids


def test_fallback_sequential_equals_batched(tiny_engine):
    e = tiny_engine
    ids = _ids(e, PROMPTS)
    with e.session():
        rows = [BatchRow(i, row_steer(e.saes, f)) for i, f in zip(ids, FEATURES)]
        fast = batched_generate(e.model, e.saes, e.hook_name, rows, 12)
        seq = batched_generate(e.model, e.saes, e.hook_name, rows, 12, prefer_batched=False)
        assert [g.ids for g in fast] == [g.ids for g in seq]
        assert seq[0].decoder != BatchedFastDecoder.name


def test_stop_ids_end_a_row_only(tiny_engine):
    e = tiny_engine
    ids = _ids(e, PROMPTS[:3])
    with e.session():
        rows = [BatchRow(i) for i in ids]
        free = batched_generate(e.model, e.saes, e.hook_name, rows, 10)
        stop = free[0].ids[3]
        got = batched_generate(e.model, e.saes, e.hook_name, rows, 10, stop_ids=(stop,))
    assert got[0].ids == free[0].ids[: free[0].ids.index(stop) + 1] and got[0].finish_reason == "stop"
    for f, g in zip(free[1:], got[1:]):
        if stop in f.ids:
            assert g.ids == f.ids[: f.ids.index(stop) + 1]
        else:
            assert g.ids == f.ids and g.finish_reason == "length"


def test_extra_direction_is_added(tiny_engine):
    """An arbitrary direction (the random control arm) steers like an SAE feature with that decoder row."""
    e = tiny_engine
    ids = _ids(e, ["The capital of France is"])
    W = e.saes["coarse"].W_dec.float()
    with e.session():
        via_extra = batched_generate(e.model, e.saes, e.hook_name, [BatchRow(ids[0], row_steer(e.saes, [], 6.0 * W[5]))], 16)
        via_feature = steered_generate(e.model, e.saes, e.hook_name, ids[0], [SteerFeature("coarse", 5, "add", 6.0)],
                                       SamplingParams(), 16)
    assert via_extra[0].ids == via_feature.ids


def test_batch_state_masks_pads_and_sink():
    from app.engine.batched import batch_steered_mask

    st = BatchState(start=0, pads=torch.tensor([2, 0]), prompt_lens=torch.tensor([3, 5]))
    m = batch_steered_mask(torch.ones(2, 5, 4), st, SteerOptions())
    assert m.tolist() == [[False, False, False, True, True], [False, True, True, True, True]]
