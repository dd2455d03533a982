"""Generation: the fast KV-cache decoder against full forwards, greedy/seeded behaviour, cancel, stop, fallback;
and (embedded) greedy output token for token against HF transformers' generate on the same weights."""
from __future__ import annotations

import threading

import pytest
import torch

from app.engine import generation as G
from app.engine.sampling import SamplingParams

PROMPT = "The cat sat on the mat."


@pytest.fixture(scope="module")
def tiny(tiny_engine):
    return tiny_engine.model


def ids_of(model, text=PROMPT):
    return model.tokenizer.encode(text, add_special_tokens=False)


def naive_greedy(model, ids, n):
    """Reference: a full forward over the whole sequence for every new token, argmax."""
    seq = list(ids)
    with torch.inference_mode():
        for _ in range(n):
            seq.append(int(model(torch.tensor([seq]))[0, -1].argmax()))
    return seq[len(ids):]


def test_fast_decoder_matches_full_forward(tiny):
    assert G.fast_path_supported(tiny)
    ids = ids_of(tiny)
    with torch.inference_mode():
        full = tiny(torch.tensor([ids]))[0]
        dec = G.FastLlamaDecoder(tiny, len(ids))
        # prefill a chunk, then one token, then a multi-token chunk at an offset (masked attention)
        out = [dec.step(ids[:5])]
        out.append(dec.step(ids[5:6]))
        out.append(dec.step(ids[6:]))
    torch.testing.assert_close(out[0], full[4], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out[1], full[5], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out[2], full[-1], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("fast", [True, False])
def test_greedy_equals_naive_loop(tiny, fast):
    ids = ids_of(tiny)
    g = G.generate(tiny, ids, 12, SamplingParams(), prefer_fast=fast)
    assert g.decoder == ("fast" if fast else "transformer-lens")
    assert list(g.ids) == naive_greedy(tiny, ids, 12)
    assert g.finish_reason == "length" and len(g.tokens) == 12
    assert g.text == tiny.tokenizer.decode(list(g.ids))


def test_first_logits_are_the_prompt_logits(tiny):
    ids = ids_of(tiny)
    run = G.GenerationRun()
    G.generate(tiny, ids, 2, SamplingParams(), run=run)
    with torch.inference_mode():
        ref = tiny(torch.tensor([ids]))[0, -1]
    torch.testing.assert_close(run.first_logits, ref, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(G.next_token_logits(tiny, ids), run.first_logits)


def test_seeded_sampling_is_reproducible(tiny):
    ids = ids_of(tiny)
    p = SamplingParams(temperature=1.0, top_k=50, top_p=0.95, seed=123)
    a = G.generate(tiny, ids, 16, p)
    b = G.generate(tiny, ids, 16, p)
    c = G.generate(tiny, ids, 16, SamplingParams(temperature=1.0, top_k=50, top_p=0.95, seed=124))
    assert a.ids == b.ids
    assert a.ids != c.ids
    # the reported probability is the model's softmax probability of the drawn token
    run = G.GenerationRun()
    first = G.generate(tiny, ids, 1, p, run=run).tokens[0]
    assert first.prob == pytest.approx(float(run.first_logits.softmax(-1)[first.id]), rel=1e-5)


def test_sampled_fast_equals_sampled_tl(tiny):
    ids = ids_of(tiny)
    p = SamplingParams(temperature=0.8, seed=5)
    assert G.generate(tiny, ids, 10, p, prefer_fast=True).ids == G.generate(tiny, ids, 10, p, prefer_fast=False).ids


def test_cancel_stops_the_work(tiny):
    ids = ids_of(tiny)
    cancel = threading.Event()
    run = G.GenerationRun()
    got = []
    for t in G.iter_generate(tiny, ids, 50, SamplingParams(), cancel=cancel, run=run):
        got.append(t)
        if len(got) == 3:
            cancel.set()
    assert len(got) == 3 and run.finish_reason == "cancelled"


def test_stop_token_ends_generation(tiny):
    ids = ids_of(tiny)
    ref = G.generate(tiny, ids, 8, SamplingParams())
    stop = ref.ids[3]
    g = G.generate(tiny, ids, 8, SamplingParams(), stop_ids=(stop,))
    k = ref.ids.index(stop)
    assert g.ids == ref.ids[: k + 1] and g.finish_reason == "stop"
    assert set(G.stop_token_ids(tiny.tokenizer)) >= {tiny.tokenizer.eos_token_id}


def test_foreign_hook_forces_the_transformer_lens_path(tiny):
    seen = []

    def make_pattern_hook():
        def pattern_hook(t, hook):
            seen.append(t.shape)
        return pattern_hook

    ids = ids_of(tiny)
    with tiny.hooks(fwd_hooks=[("blocks.0.attn.hook_pattern", make_pattern_hook())]):
        assert G.hooks_outside_fast_path(tiny) == ["blocks.0.attn.hook_pattern"]
        g = G.generate(tiny, ids, 3, SamplingParams())
    assert g.decoder == "transformer-lens"
    assert len(seen) == 3  # the hook fired on the prompt and on both decode steps
    assert not G.hooks_outside_fast_path(tiny)


# ---------------------------------------------------------------- embedded: HF cross-check
@pytest.fixture(scope="module")
def smol(embedded_engine, embedded_hf):
    """The embedded model as the app loads it, and the HF transformers reference read from the same GGUF."""
    return embedded_engine, embedded_hf[1]


@pytest.mark.embedded
def test_greedy_matches_hf_generate_token_for_token(smol):
    from app.engine.prompts import encode_prompt

    lm, hf = smol
    stops = list(G.stop_token_ids(lm.tokenizer))
    for prompt, system in [("The capital of France is", None), ("Write a haiku about rivers.", "You are a poet.")]:
        ids = list(encode_prompt(lm.tokenizer, prompt, system).token_ids)
        ours = G.generate(lm.model, ids, 24, SamplingParams(), stop_ids=stops)
        # HF's greedy choice after every prefix of our output, in one forward (HF's generate makes the same argmax
        # step by step): token for token the same, and it ends where HF's generate would (a stop token, or 24)
        with torch.inference_mode():
            logits = hf(torch.tensor([ids + list(ours.ids)])).logits[0].float()
        theirs = logits[len(ids) - 1: len(ids) - 1 + len(ours.ids)].argmax(-1).tolist()
        assert list(ours.ids) == theirs, (prompt, lm.tokenizer.decode(list(ours.ids)), lm.tokenizer.decode(theirs))
        assert len(ours.ids) == 24 or ours.ids[-1] in stops, ours
        assert not any(t in stops for t in ours.ids[:-1])
        assert ours.decoder == "fast"
    # and the seeded sampled run is reproducible on the real model
    p = SamplingParams(temperature=0.9, top_p=0.9, seed=42)
    ids = list(encode_prompt(lm.tokenizer, "Once upon a time", None).token_ids)
    assert G.generate(lm.model, ids, 12, p).ids == G.generate(lm.model, ids, 12, p).ids
