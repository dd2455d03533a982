"""JSON API for generation, steering, dose-response, temperature and system-prompt views (tiny engine),
checked against plain transformer-lens forwards + torch softmax computed here."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch

from app.engine.prompts import encode_prompt

PROMPT = "Hello there, friend"


def full_logits(engine, ids, hooks=()):
    with torch.inference_mode(), engine.model.hooks(fwd_hooks=list(hooks)):
        return engine.model(torch.tensor([list(ids)]))[0, -1].float()


def naive(engine, ids, n, hooks_factory=None):
    seq = list(ids)
    for _ in range(n):
        hooks = hooks_factory() if hooks_factory else []
        seq.append(int(full_logits(engine, seq, hooks).argmax()))
    return seq[len(ids):]


def make_add_hook(vec):
    """Reference additive steering at every position except 0 (plain torch)."""
    def add_hook(t, hook):
        t = t.clone()
        t[:, 1:] += vec
        return t
    return add_hook


def ids_of(engine, prompt=PROMPT, system=None, chat=None):
    return list(encode_prompt(engine.tokenizer, prompt, system, chat).token_ids)


def test_generate_greedy_matches_naive_loop(tiny_client, tiny_engine):
    r = tiny_client.post("/api/generate", json={"prompt": PROMPT, "max_new_tokens": 8})
    assert r.status_code == 200, r.text
    g = r.json()["generation"]
    assert [t["id"] for t in g["tokens"]] == naive(tiny_engine, ids_of(tiny_engine), 8)
    assert g["n_new"] == 8 and g["finish_reason"] == "length"
    assert tiny_engine.attached_hooks() == 0


def test_sampled_generation_is_reproducible(tiny_client):
    body = {"prompt": PROMPT, "max_new_tokens": 10, "temperature": 1.2, "top_p": 0.9, "seed": 99}
    a = tiny_client.post("/api/generate", json=body).json()["generation"]["tokens"]
    b = tiny_client.post("/api/generate", json=body).json()["generation"]["tokens"]
    assert a == b


def test_steer_side_by_side(tiny_client, tiny_engine):
    W = tiny_engine.saes["coarse"].W_dec.detach()
    body = {"prompt": PROMPT, "max_new_tokens": 6, "steering": [{"sae": "coarse", "index": 4, "mode": "add", "value": 60.0}]}
    r = tiny_client.post("/api/steer", json=body)
    assert r.status_code == 200, r.text
    j = r.json()
    ids = ids_of(tiny_engine)
    hook = tiny_engine.hook_name
    un = naive(tiny_engine, ids, 6)
    st = naive(tiny_engine, ids, 6, lambda: [(hook, make_add_hook(60.0 * W[4]))])
    assert [t["id"] for t in j["unsteered"]["tokens"]] == un
    assert [t["id"] for t in j["steered"]["tokens"]] == st
    assert j["diverged"] == [a != b for a, b in zip(un, st)]
    assert j["first_divergence"] == next((i for i, d in enumerate(j["diverged"]) if d), None)
    # the shift table's probabilities are the two next-token distributions at the end of the prompt
    pa = full_logits(tiny_engine, ids).softmax(-1)
    pb = full_logits(tiny_engine, ids, [(hook, make_add_hook(60.0 * W[4]))]).softmax(-1)
    for row in j["shift"]:
        assert row["p_a"] == pytest.approx(float(pa[row["token_id"]]), abs=1e-5)
        assert row["p_b"] == pytest.approx(float(pb[row["token_id"]]), abs=1e-5)
        assert row["rank_a"] == int((pa > pa[row["token_id"]]).sum()) + 1
    assert tiny_engine.attached_hooks() == 0


def test_dose_response(tiny_client, tiny_engine):
    W = tiny_engine.saes["fine"].W_dec.detach()
    strengths = [-20.0, 0.0, 20.0]
    r = tiny_client.post("/api/dose", json={"prompt": PROMPT, "max_new_tokens": 4, "feature": {"sae": "fine", "index": 9, "mode": "add"},
                                            "strengths": strengths, "promoted_top": 3})
    assert r.status_code == 200, r.text
    j = r.json()
    ids = ids_of(tiny_engine)
    hook = tiny_engine.hook_name
    want_promoted = (W[9] @ tiny_engine.model.W_U).topk(3).indices.tolist()
    assert [p["token_id"] for p in j["promoted"]] == want_promoted
    for k, s in enumerate(strengths):
        probs = full_logits(tiny_engine, ids, [(hook, make_add_hook(s * W[9]))]).softmax(-1)
        for p in j["promoted"]:
            assert p["probs"][k] == pytest.approx(float(probs[p["token_id"]]), abs=1e-5)
        assert j["top_next"][k]["id"] == int(probs.argmax())
    # strength 0 is the unsteered completion
    assert [t["id"] for t in j["completions"][1]["tokens"]] == naive(tiny_engine, ids, 4)


def test_dose_chart_plots_the_tokens_that_moved_most(tiny_client, tiny_engine):
    """The chart's tokens are the top max - min of the next-token probability over the strengths (numpy over full
    reference distributions); the decoder-promoted tokens stay available behind the chart's second button."""
    from app.viz.steering import dose_figure

    W = tiny_engine.saes["coarse"].W_dec.detach()
    strengths = [-30.0, -10.0, 0.0, 10.0, 30.0]
    body = {"prompt": PROMPT, "max_new_tokens": 1, "feature": {"sae": "coarse", "index": 5, "mode": "add"},
            "strengths": strengths, "moved_top": 4}
    r = tiny_client.post("/api/dose", json=body)
    assert r.status_code == 200, r.text
    j = r.json()
    ids, hook = ids_of(tiny_engine), tiny_engine.hook_name
    P = np.stack([full_logits(tiny_engine, ids, [(hook, make_add_hook(s * W[5]))]).softmax(-1).numpy() for s in strengths])
    spread = P.max(0) - P.min(0)
    want = np.argsort(-spread, kind="stable")[:4]
    assert [m["token_id"] for m in j["moved"]] == [int(i) for i in want]
    for m in j["moved"]:
        assert m["spread"] == pytest.approx(float(spread[m["token_id"]]), abs=1e-5)
        np.testing.assert_allclose(m["probs"], P[:, m["token_id"]], atol=1e-5)
        assert m["spread"] == pytest.approx(max(m["probs"]) - min(m["probs"]), abs=1e-6)
    assert j["moved"][0]["spread"] > 0.01  # a real shift, not the ~1e-8 wiggles of unlikely tokens
    # the figure: the moved tokens shown, the promoted ones one button away
    fig = dose_figure(j, body)
    shown = [t["y"] for t in fig["data"] if t["visible"] is True]
    assert shown == [m["probs"] for m in j["moved"]]
    hidden = [t["y"] for t in fig["data"] if t["visible"] is False]
    assert hidden == [p["probs"] for p in j["promoted"]]
    labels = [b["label"] for b in fig["layout"]["updatemenus"][0]["buttons"]]
    assert labels == ["most moved", "decoder-promoted"]
    # a snapshot saved before `moved` existed still draws its promoted tokens
    old = {k: v for k, v in j.items() if k != "moved"}
    assert [t["y"] for t in dose_figure(old, body)["data"] if t["visible"] is True] == [p["probs"] for p in j["promoted"]]


def test_temperature_view_matches_numpy(tiny_client, tiny_engine):
    temps = [0.2, 0.7, 1.0, 1.5]
    r = tiny_client.post("/api/temperature", json={"prompt": PROMPT, "temperatures": temps, "top_k": 5, "top_p": 0.8, "top_n": 8})
    assert r.status_code == 200, r.text
    j = r.json()
    logits = full_logits(tiny_engine, ids_of(tiny_engine)).numpy().astype(np.float64)
    ids = [t["id"] for t in j["tokens"]]
    assert ids == list(np.argsort(-logits, kind="stable")[:8])
    for v, t in zip(j["views"], temps):
        p = np.exp((logits - logits.max()) / t)
        p /= p.sum()
        np.testing.assert_allclose(v["probs"], p[ids], atol=1e-5)
        assert v["entropy_bits"] == pytest.approx(float(-(p[p > 0] * np.log2(p[p > 0])).sum()), rel=1e-3, abs=1e-5)
        # top-k 5 then nucleus 0.8 over the renormalised top-5
        top5 = np.argsort(-p)[:5]
        q = p[top5] / p[top5].sum()
        keep = []
        cum = 0.0
        for i, qi in zip(top5, q):
            keep.append(i)
            cum += qi
            if cum >= 0.8:
                break
        assert [i for i, k in zip(ids, v["kept"]) if k] == [i for i in ids if i in keep]
        assert v["n_kept"] == len(keep)
        kept_p = p[keep] / p[keep].sum()
        for i, rn in zip(ids, v["renormalised"]):
            assert rn == pytest.approx(float(kept_p[keep.index(i)]) if i in keep else 0.0, abs=1e-5)


def test_system_shift(tiny_client, tiny_engine):
    body = {"prompt": PROMPT, "system_a": "", "system_b": "You are terse.", "top_n": 5}
    r = tiny_client.post("/api/system-shift", json=body)
    assert r.status_code == 200, r.text
    j = r.json()
    pa = full_logits(tiny_engine, ids_of(tiny_engine, chat=True)).softmax(-1)
    pb = full_logits(tiny_engine, ids_of(tiny_engine, system="You are terse.", chat=True)).softmax(-1)
    for row in j["rows"]:
        i = row["token_id"]
        assert row["p_a"] == pytest.approx(float(pa[i]), abs=1e-5)
        assert row["p_b"] == pytest.approx(float(pb[i]), abs=1e-5)
        assert row["delta"] == pytest.approx(float(pb[i] - pa[i]), abs=1e-5)
        assert row["rank_b"] == int((pb > pb[i]).sum()) + 1
    assert "terse" in j["text_b"] and "terse" not in j["text_a"]


@pytest.mark.parametrize("a, b, why", [(None, None, "both are empty"), ("", "", "both are empty"),
                                       ("Be brief.", "Be brief.", "same text")])
def test_system_shift_refuses_identical_arms(tiny_client, a, b, why):
    """None vs none would show a table of +0.0000 rows as if it were a result: 422 on system_b instead."""
    r = tiny_client.post("/api/system-shift", json={"prompt": PROMPT, "system_a": a, "system_b": b})
    assert r.status_code == 422, r.text
    (d,) = r.json()["detail"]
    assert d["loc"] == ["body", "system_b"] and "A and B are the same" in d["msg"] and why in d["msg"]


@pytest.mark.parametrize("body, field", [
    ({"prompt": PROMPT, "steering": [{"sae": "coarse", "index": 10**6, "value": 1}]}, "index"),
    ({"prompt": PROMPT, "temperature": 99}, "temperature"),
    ({"prompt": PROMPT, "max_new_tokens": 10**6}, "max_new_tokens"),
    ({"prompt": PROMPT, "steering": [{"sae": "coarse", "index": 1, "value": 1e9}]}, "value"),
    ({"prompt": PROMPT, "steering": [{"sae": "coarse", "index": 1}] * 50}, "steering"),
    ({"prompt": PROMPT, "top_p": 0}, "top_p"),
])
def test_bad_input_is_422_naming_the_field(tiny_client, body, field):
    r = tiny_client.post("/api/generate", json=body)
    assert r.status_code == 422, r.text
    assert any(field in [str(x) for x in d["loc"]] for d in r.json()["detail"]), r.text


def test_dose_and_temperature_limits(tiny_client):
    r = tiny_client.post("/api/dose", json={"prompt": PROMPT, "feature": {"sae": "coarse", "index": 1}, "strengths": list(range(50))})
    assert r.status_code == 422 and "strengths" in r.text
    r = tiny_client.post("/api/temperature", json={"prompt": PROMPT, "temperatures": [0.0]})
    assert r.status_code == 422 and "temperatures" in r.text


def test_feature_info(tiny_client, tiny_engine):
    r = tiny_client.post("/api/steer/feature", json={"prompt": PROMPT, "sae": "coarse", "index": 3})
    assert r.status_code == 200, r.text
    j = r.json()
    assert j["slider_max"] == pytest.approx(min(12 * j["typical_max"], 500.0))
    assert tiny_client.post("/api/steer/feature", json={"prompt": PROMPT, "sae": "coarse", "index": 64}).status_code == 422


def sse_events(text):
    out = []
    for block in text.strip().split("\n\n"):
        ev = [ln[7:] for ln in block.split("\n") if ln.startswith("event: ")][0]
        data = json.loads("".join(ln[6:] for ln in block.split("\n") if ln.startswith("data: ")))
        out.append((ev, data))
    return out


def test_stream_matches_generate(tiny_client, tiny_engine):
    body = {"prompt": PROMPT, "max_new_tokens": 7, "steering": [{"sae": "fine", "index": 2, "mode": "clamp", "value": 3.0}]}
    with tiny_client.stream("POST", "/api/generate/stream", json=body) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        events = sse_events(r.read().decode())
    kinds = [e for e, _ in events]
    assert kinds[0] == "start" and kinds[-1] == "done" and kinds.count("token") == 7
    ref = tiny_client.post("/api/generate", json=body).json()["generation"]
    assert [d["id"] for e, d in events if e == "token"] == [t["id"] for t in ref["tokens"]]
    assert events[-1][1]["generation"]["text"] == ref["text"]
    assert tiny_engine.attached_hooks() == 0
    r = tiny_client.post("/api/generate/cancel/nope")
    assert r.status_code == 200 and r.json() == {"run_id": "nope", "cancelled": False}


def test_cancel_stops_a_stream(tiny_client, tiny_engine):
    streams = tiny_client.app.state.streams
    body = {"prompt": PROMPT, "max_new_tokens": 128}
    run_id, done = None, None
    with tiny_client.stream("POST", "/api/generate/stream", json=body) as r:
        for line in r.iter_lines():
            if not line.startswith("data: "):
                continue
            d = json.loads(line[6:])
            if run_id is None:
                run_id = d["run_id"]
                assert tiny_client.post(f"/api/generate/cancel/{run_id}").json()["cancelled"] is True
            if "generation" in d:
                done = d["generation"]
    assert done["finish_reason"] == "cancelled" and done["n_new"] < 128
    deadline = time.time() + 30  # the worker leaves the session right after its last event
    while (streams.active(run_id) or tiny_engine.busy) and time.time() < deadline:
        time.sleep(0.02)
    assert not streams.active(run_id) and streams.finished(run_id) == ("cancelled", done["n_new"])
    assert not tiny_engine.busy and tiny_engine.attached_hooks() == 0
