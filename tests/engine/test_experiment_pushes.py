"""app.engine.experiment.pushes: which prompts are pushed, the pushed generations against a separate generation of
the same row, the paired check against numpy and scipy, and a run's measure carrying the check."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from app.engine import experiment as X
from app.engine.batched import BatchRow, RowSteer, batched_generate
from app.engine.discovery import parse_prompt_lines
from app.engine.experiment import pushes as P
from app.engine.experiment.arms import random_direction
from app.engine.generation import stop_token_ids
from app.engine.profiles import DATA_DIR
from app.engine.prompts import encode_prompt
from app.engine.sampling import SamplingParams
from app.engine.steering import SteerOptions

scipy_stats = pytest.importorskip("scipy.stats")


def _set(name, n):
    return parse_prompt_lines((DATA_DIR / "prompts" / f"{name}.txt").read_text())[:n]


def test_split_prompts_alternates_through_evenly_spaced_prompts():
    prompts = [f"p{i}" for i in range(20)]
    pre, chk = P.split_prompts(prompts, 4)
    assert pre == ["p0", "p5", "p10", "p15"] and chk == ["p2", "p7", "p12", "p17"]
    assert P.split_prompts(prompts[:5], 4) == (["p0", "p2"], ["p1", "p3"])  # small sets: half each, never shared
    assert P.split_prompts(["only"], 4) == ([], [])
    assert P.n_rows(20, 3, 4) == 4 * 3 + 4 * 4 and P.n_rows(1, 3, 4) == 0 and P.n_rows(20, 0, 4) == 0


def test_check_rise_against_numpy_and_scipy():
    rng = np.random.default_rng(3)
    none = rng.normal(0.0, 1.0, 40)
    pushed = np.stack([none + rng.normal(0.0, 0.3, 40), none + 1.0 + rng.normal(0.0, 0.3, 40)], 1)
    got = P.check_rise(none, pushed, [2.0, 8.0], n_boot=2000, seed=0)
    assert got["n_prompts"] == 40 and [p["vector_norm"] for p in got["per_norm"]] == [2.0, 8.0]
    for j, p in enumerate(got["per_norm"]):
        d = pushed[:, j] - none
        assert p["rise"] == pytest.approx(d.mean(), abs=1e-6)
        ref = scipy_stats.bootstrap((d,), np.mean, n_resamples=4000, method="percentile", random_state=1).confidence_interval
        assert p["ci"][0] == pytest.approx(ref.low, abs=0.03) and p["ci"][1] == pytest.approx(ref.high, abs=0.03)
    assert got["per_norm"][0]["contains"] and not got["per_norm"][0]["raises"]
    assert got["per_norm"][1]["raises"] and not got["per_norm"][1]["contains"]
    assert got["raises"] is True and got["contains_all"] is False


def test_pushed_texts_are_the_rows_generated_on_their_own(tiny_engine):
    """Each pushed text is what the same prompt generates alone with its own direction (seeded apart from the run's
    random arm) at each norm; the check prompts are also generated unsteered; a JSON round trip keeps it all."""
    m = tiny_engine.model
    contrast = _set("neutral", 10)
    cfg = X.ExperimentConfig(anchor=3, children=(7,), eval_prompts=(), concept_prompts=(), contrast_prompts=tuple(contrast),
                             max_new_tokens=5, temperature=0.7, seed=4, measure_pushed=3)
    norms = (2.5, 6.0)
    with tiny_engine.session():
        got = P.push_texts(m, tiny_engine.saes, tiny_engine.hook_name, cfg, contrast, norms)
    pre, chk = P.split_prompts(contrast, 3)
    assert got.preface_prompts == tuple(pre) and got.check_prompts == tuple(chk) and len(got.check) == 3
    assert all(len(row) == len(norms) for row in got.preface + got.check)

    def alone(prompt_index, prompt, steer):
        ids = tuple(encode_prompt(tiny_engine.tokenizer, prompt, chat=False).token_ids)
        row = BatchRow(ids, steer, SamplingParams(temperature=0.7, seed=cfg.seed + prompt_index))
        with tiny_engine.session(), torch.inference_mode():
            return tuple(batched_generate(m, tiny_engine.saes, tiny_engine.hook_name, [row], 5,
                                          stop_token_ids(tiny_engine.tokenizer), SteerOptions(), batch_size=1)[0].ids)

    d = m.cfg.d_model
    direction = random_direction(d, cfg.seed + P.SEED_OFFSET + 1 * len(norms) + 1)  # preface prompt 1, norm 6.0
    assert float(direction @ random_direction(d, cfg.seed)) ** 2 < 0.5  # not the run's random arm
    assert got.preface[1][1] == alone(1, pre[1], RowSteer(direction * 6.0))
    assert got.check_none[2] == alone(3 + 2, chk[2], RowSteer())
    assert got.check[2][0] == alone(3 + 2, chk[2], RowSteer(random_direction(d, cfg.seed + P.SEED_OFFSET + 5 * len(norms)) * 2.5))
    assert P.Pushes.from_json(got.to_json()) == got


def test_a_run_checks_its_measure_at_the_random_arms_norms(tiny_engine):
    """The run's measure lists its contrast prefaces (the pushed one last) and a check at exactly the vector norms its
    random arm used, on contrast prompts outside the pushed preface."""
    fr, ne = _set("france", 16), _set("neutral", 16)
    evalp = tuple(_set("eval_neutral", 2))
    cfg = X.ExperimentConfig(anchor=3, children=(7,), eval_prompts=evalp, concept_prompts=tuple(fr), contrast_prompts=tuple(ne),
                             strengths=(2.0, 6.0), max_new_tokens=6, n_boot=100, measure_pushed=4, preface_k=4)
    with tiny_engine.session():
        r = X.run_experiment(tiny_engine.model, tiny_engine.saes, tiny_engine.hook_name, cfg)
    pc = r["measure"]["pushes"]
    rand_norms = sorted({row["vector_norm"] for row in r["table"] if row["arm"] == "random"})  # rounded to 1e-4
    assert [p["vector_norm"] for p in pc["per_norm"]] == pytest.approx(rand_norms, abs=1e-4) and pc["n_prompts"] == 4
    assert [c["name"] for c in r["measure"]["contrasts"]] == ["contrast", "pushed"]
    assert set(pc["check_prompts"]).isdisjoint(pc["preface_prompts"]) and set(pc["check_prompts"]) <= set(ne)
    assert all(p["contains"] == (p["ci"][0] <= 0 <= p["ci"][1]) for p in pc["per_norm"])
