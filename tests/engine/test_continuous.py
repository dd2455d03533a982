"""Continuous batching (app/engine/continuous.py, app/engine/slots.py) against the unbatched steering path, on the
tiny model: rows of concurrent requests share decode steps, join and leave between steps, and each row's greedy
tokens equal `steering.steered_generate`'s token for token."""
from __future__ import annotations

import threading
import time

import pytest
import torch

from app.engine import slots
from app.engine.continuous import GenJob
from app.engine.sampling import SamplingParams
from app.engine.steering import SteerFeature, SteerOptions, steered_generate, steered_next_token_logits

PROMPTS = ["Hello there", "The capital of France is", "a", "Once upon a time in a land far away", "Bonjour"]
FEATURES = [
    (),
    (SteerFeature("coarse", 3, "add", 5.0),),
    (SteerFeature("fine", 7, "clamp", 4.0), SteerFeature("coarse", 1, "add", -3.0)),
    (SteerFeature("coarse", 2, "clamp", 0.0),),
    (SteerFeature("fine", 11, "add", 8.0), SteerFeature("fine", 12, "add", 6.0)),
]
OPTS = [SteerOptions(), SteerOptions(sink_norm=60.0), SteerOptions(generated_only=True), SteerOptions(skip_first=False),
        SteerOptions()]


def _ids(engine, text):
    return tuple(engine.tokenizer.encode(text, add_special_tokens=False))


@pytest.fixture()
def steps(monkeypatch):
    """The batch size of every decode step the slot decoder runs."""
    sizes: list[int] = []
    real = slots.SlotDecoder.step
    monkeypatch.setattr(slots.SlotDecoder, "step", lambda self, ids: sizes.append(len(ids)) or real(self, ids))
    return sizes


def _reference(e, job: GenJob):
    with e.session():
        return steered_generate(e.model, e.saes, e.hook_name, job.prompt_ids, job.features, job.params, job.max_new_tokens,
                                job.stop_ids, job.opts)


def _concurrently(e, groups: list[list[GenJob]], delays: list[float]) -> None:
    errors = []

    def go(jobs, delay):
        time.sleep(delay)
        try:
            e.generate_rows(jobs)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=go, args=(g, d)) for g, d in zip(groups, delays)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors


def test_greedy_rows_of_concurrent_requests_equal_unbatched(tiny_engine, steps):
    e = tiny_engine
    jobs = [GenJob(_ids(e, p), f, SamplingParams(), 12 + 5 * i, (), o) for i, (p, f, o) in enumerate(zip(PROMPTS, FEATURES, OPTS))]
    _concurrently(e, [[j] for j in jobs], [0.0] * len(jobs))
    assert max(steps) >= 2  # rows really shared decode steps
    for j in jobs:
        ref = _reference(e, j)
        assert [t.id for t in j.tokens] == list(ref.ids), j.prompt_ids
        assert [t.prob for t in j.tokens] == pytest.approx([t.prob for t in ref.tokens], rel=1e-4, abs=1e-6)
        assert j.run.finish_reason == ref.finish_reason and j.run.decoder == ref.decoder == "fast"
        assert torch.allclose(j.run.first_logits, next_token_logits_steered(e, j), atol=1e-4)
    # steering changes what the model writes (so the equality is not vacuous)
    assert [t.id for t in jobs[1].tokens] != list(_reference(e, GenJob(jobs[1].prompt_ids, (), SamplingParams(), 17)).ids)


def next_token_logits_steered(e, job):
    with e.session():
        return steered_next_token_logits(e.model, e.saes, e.hook_name, job.prompt_ids, job.features, job.opts)


def test_a_row_joins_a_running_batch_and_a_short_one_leaves_first(tiny_engine, steps, monkeypatch):
    """A long row is decoding; a request arriving later joins between steps (no wait for the long one), finishes
    first, and both equal their unbatched runs."""
    e = tiny_engine
    real = slots.SlotDecoder.step
    monkeypatch.setattr(slots.SlotDecoder, "step", lambda self, ids: (time.sleep(0.01), steps.append(len(ids)), real(self, ids))[2])
    long = GenJob(_ids(e, PROMPTS[3]), FEATURES[1], SamplingParams(), 60)
    short = GenJob(_ids(e, PROMPTS[1]), FEATURES[2], SamplingParams(), 5)
    ends = {}
    for name, j in (("long", long), ("short", short)):
        j.on_start = (lambda n: lambda: ends.setdefault(n + " start", time.perf_counter()))(name)
    t = threading.Thread(target=lambda: (e.generate_rows([long]), ends.setdefault("long", time.perf_counter())))
    t.start()
    deadline = time.monotonic() + 120
    while len(long.tokens) < 10 and not long.done.is_set():  # a failed row must fail the test, not hang it
        assert time.monotonic() < deadline, "the long row made no progress"
        time.sleep(0.002)
    assert long.error is None and len(long.tokens) >= 10
    e.generate_rows([short])
    ends["short"] = time.perf_counter()
    t.join(120)
    assert ends["short"] < ends["long"] and ends["short start"] > ends["long start"]
    assert 2 in steps and steps[0] == 1  # alone first, then together
    for j in (long, short):
        assert [t.id for t in j.tokens] == list(_reference(e, j).ids)


def test_sampled_rows_equal_unbatched_with_the_same_seed(tiny_engine):
    e = tiny_engine
    jobs = [GenJob(_ids(e, p), f, SamplingParams(temperature=1.0, seed=s), 10) for p, f, s in zip(PROMPTS, FEATURES, range(7, 12))]
    _concurrently(e, [jobs[:2], jobs[2:]], [0.0, 0.0])
    for j in jobs:
        assert [t.id for t in j.tokens] == list(_reference(e, j).ids)


def test_stop_cancel_and_zero_tokens_end_only_their_row(tiny_engine):
    e = tiny_engine
    free = GenJob(_ids(e, PROMPTS[0]), (), SamplingParams(), 10)
    e.generate_rows([free])
    stop = free.tokens[3].id
    cancel = threading.Event()
    seen = []
    stopped = GenJob(_ids(e, PROMPTS[0]), (), SamplingParams(), 10, (stop,))
    cancelled = GenJob(_ids(e, PROMPTS[1]), (), SamplingParams(), 40, cancel=cancel,
                       on_token=lambda i, t: seen.append(i) or (cancel.set() if i == 4 else None))
    none = GenJob(_ids(e, PROMPTS[2]), (), SamplingParams(), 0)
    other = GenJob(_ids(e, PROMPTS[4]), FEATURES[4], SamplingParams(), 20)
    e.generate_rows([stopped, cancelled, none, other])
    ids = [t.id for t in stopped.tokens]
    assert ids == [t.id for t in free.tokens][: ids.index(stop) + 1] and stopped.run.finish_reason == "stop"
    assert len(cancelled.tokens) == 5 and cancelled.run.finish_reason == "cancelled" and seen == [0, 1, 2, 3, 4]
    assert none.tokens == [] and none.run.finish_reason == "length" and none.run.first_logits is not None
    assert [t.id for t in other.tokens] == list(_reference(e, other).ids)
    assert not e.busy and e.attached_hooks() == 0


def test_a_failing_row_fails_alone_and_the_engine_is_left_clean(tiny_engine):
    e = tiny_engine

    def boom(i, t):
        raise ValueError("client went away")

    bad = GenJob(_ids(e, PROMPTS[0]), FEATURES[1], SamplingParams(), 8, on_token=boom)
    good = GenJob(_ids(e, PROMPTS[1]), FEATURES[2], SamplingParams(), 8)
    with pytest.raises(ValueError):
        e.generate_rows([bad, good])
    assert [t.id for t in good.tokens] == list(_reference(e, good).ids)
    deadline = time.time() + 10
    while e.busy and time.time() < deadline:
        time.sleep(0.01)
    assert not e.busy and e.attached_hooks() == 0


def test_without_batching_the_rows_run_one_at_a_time_with_the_same_result(tiny_engine, steps, monkeypatch):
    e = tiny_engine
    jobs = [GenJob(_ids(e, p), f, SamplingParams(), 8) for p, f in zip(PROMPTS[:3], FEATURES[:3])]
    monkeypatch.setattr(e, "batching", False)
    plain = [GenJob(j.prompt_ids, j.features, j.params, j.max_new_tokens) for j in jobs]
    e.generate_rows(plain)
    assert steps == []
    monkeypatch.setattr(e, "batching", True)
    e.generate_rows(jobs)
    assert [[t.id for t in j.tokens] for j in jobs] == [[t.id for t in j.tokens] for j in plain]
