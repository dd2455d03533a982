"""The experiment's zero-shot concept measure (against a plain forward and scikit-learn's AUC), its random-direction
control at every strength, the verdict's wording, and the per-phase progress clock."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from app.engine import experiment as X
from app.engine.experiment.progress import PhaseClock
from app.engine.experiment.scoring import control_check
from app.engine.experiment.zeroshot import auc, make_zeroshot, zeroshot_scores
from app.jobs.job import Job
from tests.conftest import FakeClock

sklearn = pytest.importorskip("sklearn")
from sklearn.metrics import roc_auc_score  # noqa: E402


def _plain(model, preface, text) -> np.ndarray:
    """[T] log p of each of the text's tokens after the preface: one full forward, no cache."""
    ids = torch.tensor([list(preface) + list(text)])
    with torch.inference_mode():
        lp = torch.log_softmax(model(ids)[0].double(), -1)
    P = len(preface)
    return np.array([float(lp[P - 1 + j, t]) for j, t in enumerate(text)])


def test_zeroshot_score_is_the_clipped_token_difference(tiny_engine):
    """The score of each text is the mean over its tokens of the concept-minus-contrast log-prob difference clipped to
    [0, cap] (plain forwards, no cache), at several caps."""
    m, tok = tiny_engine.model, tiny_engine.tokenizer
    zs = make_zeroshot(tok, ["cook the rice", "bake the bread", "stir the soup"], ["the train", "a spider", "blue sky"], k=2)
    assert len(zs.concept_examples) == 2 and "Here are some example texts" in tok.decode(list(zs.concept_ids))
    texts = [tok.encode(t, add_special_tokens=False) for t in (" simmer the sauce", " ok", " the long train ride home", "")]
    diffs = [_plain(m, zs.concept_ids, t) - _plain(m, zs.contrast_ids, t) for t in texts[:3]]
    assert any((d < 0).any() and (d > 0).any() for d in diffs)  # both clips matter on this text
    seen = set()
    for cap in (0.05, 0.5, 4.0):
        with tiny_engine.session():
            got = zeroshot_scores(m, zs, texts, batch_size=2, cap=cap)
        want = [float(np.mean(np.clip(d, 0.0, cap))) for d in diffs]
        assert got[:3] == pytest.approx(want, abs=1e-6)
        assert np.isnan(got[3])  # an empty generation has no score
        seen.add(tuple(round(w, 6) for w in want))
    assert len(seen) > 1  # the cap decides some token: the check is not vacuous


def test_zeroshot_score_subtracts_the_best_contrast_preface(tiny_engine):
    """With a second contrast preface each token's difference is taken against the better of the two."""
    m, tok = tiny_engine.model, tiny_engine.tokenizer
    zs = make_zeroshot(tok, ["cook the rice", "bake the bread"], ["the train", "a spider"], k=2)
    zs2 = zs.with_contrast("pushed", tok, ["zx qq vv", "rice rice rice", "!!"], k=3)
    assert [n for n, _, _ in zs2.extra] == ["pushed"] and len(zs2.contrasts) == 2
    texts = [tok.encode(t, add_special_tokens=False) for t in (" simmer the rice", " qq vv zx", " the long train", " rice rice")]
    c = [_plain(m, zs.concept_ids, t) for t in texts]
    best = [np.maximum(_plain(m, zs.contrast_ids, t), _plain(m, zs2.extra[0][1], t)) for t in texts]
    one = [_plain(m, zs.contrast_ids, t) for t in texts]
    with tiny_engine.session():
        got = zeroshot_scores(m, zs2, texts, batch_size=2)
    want = [float(np.mean(np.clip(a - b, 0, 4.0))) for a, b in zip(c, best)]
    assert got == pytest.approx(want, abs=1e-6)
    assert any(abs(w - float(np.mean(np.clip(a - o, 0, 4.0)))) > 1e-3 for w, a, o in zip(want, c, one))  # it decides


class DictCache(dict):
    def put(self, k, v):
        self[k] = v


def test_zeroshot_scores_keep_each_prefaces_token_logprobs(tiny_engine, monkeypatch):
    """With a cache, each preface's per-token log-probs are kept by the preface's hash: a second call (another cap
    here) runs no model and gives what a fresh computation gives."""
    from app.engine.experiment import zeroshot as Z

    m, tok = tiny_engine.model, tiny_engine.tokenizer
    zs = make_zeroshot(tok, ["cook the rice", "bake the bread"], ["the train", "a spider"], k=2)
    zs = zs.with_contrast("pushed", tok, ["zx qq vv", "!!"], k=2)
    texts = [tok.encode(t, add_special_tokens=False) for t in (" simmer the rice", " qq vv zx", "")]
    cache = DictCache()
    with tiny_engine.session():
        first = zeroshot_scores(m, zs, texts, cache=cache, name="c0-")
        fresh = zeroshot_scores(m, zs, texts, cap=0.5)
    assert len(cache) == 3 and all(k.startswith("c0-lp-") for k in cache)

    def no_model(*a, **k):
        raise AssertionError("ran the model")

    monkeypatch.setattr(Z, "_token_logprobs", no_model)
    again = zeroshot_scores(m, zs, texts, cache=cache, name="c0-")
    assert again[:2] == pytest.approx(first[:2], abs=1e-5) and np.isnan(again[2])
    assert zeroshot_scores(m, zs, texts, cap=0.5, cache=cache, name="c0-")[:2] == pytest.approx(fresh[:2], abs=1e-5)


def test_auc_matches_sklearn_with_ties():
    rng = np.random.default_rng(0)
    pos = np.round(rng.normal(0.5, 1, 60), 1)
    neg = np.round(rng.normal(0.0, 1, 80), 1)
    want = roc_auc_score([1] * 60 + [0] * 80, np.concatenate([pos, neg]))
    assert auc(pos, neg) == pytest.approx(want, abs=1e-12)
    assert auc(list(pos) + [float("nan")], neg) == pytest.approx(want, abs=1e-12)


def _table(none, none_ci, randoms):
    rows = [{"condition": "none", "arm": "none", "scale": "-", "strength": 0.0, "concept": none, "concept_ci": none_ci}]
    for s, c, ci in randoms:
        rows.append({"condition": f"random|add|norm|{s:g}", "arm": "random", "scale": "norm", "strength": s,
                     "concept": c, "concept_ci": ci})
    return rows


def test_control_raises_when_the_random_interval_lies_above_the_unsteered_mean():
    """The issue's case: 0.445 [0.272, 0.644] vs 0.238 unsteered was called "no rise" (compared with the unsteered
    interval's upper end). The unsteered value is outside the random arm's interval: it rises."""
    cfg = X.ExperimentConfig(anchor=0, children=(), eval_prompts=(), concept_prompts=(), contrast_prompts=(), strengths=(8.0,))
    c = control_check(_table(0.238, [0.05, 0.45], [(8.0, 0.445, [0.272, 0.644])]), cfg)
    assert c["random_raises"] is True and "RAISES" in c["text"] and "no rise" not in c["text"]


def test_control_checks_every_strength_and_never_says_a_flat_no_rise():
    cfg = X.ExperimentConfig(anchor=0, children=(), eval_prompts=(), concept_prompts=(), contrast_prompts=(), strengths=(2.0, 8.0))
    ok = control_check(_table(0.1, [0.0, 0.2], [(2.0, 0.12, [0.05, 0.2]), (8.0, 0.08, [-0.02, 0.3])]), cfg)
    assert ok["random_raises"] is False and ok["contains_all"] is True and len(ok["per_strength"]) == 2
    assert "no rise detected at this sample size" in ok["text"] and "up to 0.200 is not excluded" in ok["text"]
    bad = control_check(_table(0.1, [0.0, 0.2], [(2.0, 0.12, [0.05, 0.2]), (8.0, 0.5, [0.3, 0.7])]), cfg)
    assert bad["random_raises"] is True and "norm 8" in bad["text"]  # only the strongest strength rises


def test_verdict_names_interpolation_and_half_width():
    cfg = X.ExperimentConfig(anchor=0, children=(1,), eval_prompts=("a",) * 20, concept_prompts=(), contrast_prompts=(),
                             strengths=(1.0, 2.0), matched_norm=False, n_boot=300)
    conds = X.conditions_for(cfg)
    rng = np.random.default_rng(1)
    gain = {"coarse": 0.1, "fine": 0.3, "coarse+fine": 0.3, "random": 0.0, "none": 0.0}
    recs = [{"condition": c.key, "prompt": p, "seed": 0, "concept": 0.1 + gain[c.arm] * c.strength + 0.01 * rng.normal(),
             "logprob": -2.0 - 0.5 * c.strength + 0.3 * rng.normal(), "distinct2": 1.0, "sae": 0.0, "words": None}
            for c in conds for p in range(20)]
    table = X.aggregate(recs, conds, 20, cfg, {c.key: (None, 1.0) for c in conds})
    v = X.verdict_from_records(recs, table, cfg, ("add", "activation"), 20)
    assert "interpolated" in v["text"] and "half-width" in v["text"]
    lo, hi = v["diff_ci"]
    assert v["diff_hw"] == pytest.approx((hi - lo) / 2, abs=1e-5)
    assert v["mde"] == pytest.approx(2.8 * (hi - lo) / 3.92, abs=1e-5)
    for r in table:
        assert r["logprob_hw"] == pytest.approx((r["logprob_ci"][1] - r["logprob_ci"][0]) / 2, abs=1e-5)


def test_phase_clock_uses_each_phase_rate_and_a_stall_raises_the_eta():
    now = FakeClock()
    seen = []
    clock = PhaseClock([("sets", 10), ("generate", 10), ("score", 10)], report=lambda d, t, **kw: seen.append(kw), now=now)
    clock.start("sets")
    for _ in range(10):
        now.t += 0.1
        clock.tick()
    clock.start("generate")
    for _ in range(5):
        now.t += 2.0
        clock.tick()
    # generation measured at 2 s/unit; scoring not measured: prior ratio 3.5 / 6 of generation's rate
    assert clock.eta_s() == pytest.approx(5 * 2.0 + 10 * 2.0 * 3.5 / 6.0)
    assert seen[-1]["phase"] == "generate"
    before = clock.eta_s()
    now.t += 20.0  # a chunk stalls: the running phase's rate counts the wait
    assert clock.eta_s() > before


def test_job_eta_counts_down_and_is_unknown_once_past():
    job = Job("j", "k", "experiment", total=100, state="running", started=0.0)
    job.progress(40, 100, eta_s=30.0, phase="score")
    assert job.status()["phase"] == "score" and 29.0 < job.eta_s <= 30.0
    job._eta = (2.0, job._eta[1] - 13.0)  # 13 s later with a 2 s estimate: unknown, never "ETA 2 s" or "0 s"
    assert job.eta_s is None
