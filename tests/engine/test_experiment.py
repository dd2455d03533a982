"""The steering experiment (app/engine/experiment.py): probe vs scikit-learn, fluency vs a plain forward, bootstrap
vs a known distribution, and the control arm on a planted concept direction (tiny profile)."""
from __future__ import annotations

import copy
import math
import random

import numpy as np
import pytest
import torch

from app.engine import experiment as X
from app.engine.discovery import parse_prompt_lines
from app.engine.profiles import DATA_DIR

sklearn = pytest.importorskip("sklearn")
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402


def _sets(n=40):
    fr = parse_prompt_lines((DATA_DIR / "prompts/france.txt").read_text())[:n]
    ne = parse_prompt_lines((DATA_DIR / "prompts/neutral.txt").read_text())[:n]
    return fr, ne


def _pooled(engine, prompts, layer):
    hook = f"blocks.{layer}.hook_resid_post"
    ids = [tuple(engine.tokenizer.encode(p, add_special_tokens=False)[: X.CONCEPT_MAX_TOKENS]) for p in prompts]
    with engine.session():
        reads = X.read_back(engine.model, [engine.hook_name, hook], ids)
    return torch.stack([r[hook][1:].mean(0) for r in reads])


def test_probe_matches_sklearn_on_residuals(tiny_engine):
    fr, ne = _sets()
    Xr = _pooled(tiny_engine, fr + ne, 2)
    y = torch.tensor([1.0] * len(fr) + [0.0] * len(ne))
    probe = X.train_probe(Xr, y, layer=2, c=1.0)
    Xn = Xr.double().numpy()
    sc = StandardScaler().fit(Xn)
    ref = LogisticRegression(C=1.0, tol=1e-10, max_iter=10_000).fit(sc.transform(Xn), y.numpy())
    np.testing.assert_allclose(probe.w.numpy(), ref.coef_[0], rtol=1e-3, atol=1e-4)
    assert probe.b == pytest.approx(float(ref.intercept_[0]), abs=1e-4)
    np.testing.assert_allclose(probe.prob(Xr).numpy(), ref.predict_proba(sc.transform(Xn))[:, 1], atol=1e-5)
    assert probe.holdout_accuracy is not None and 0.0 <= probe.holdout_accuracy <= 1.0


def test_fit_logistic_other_c():
    rng = np.random.default_rng(0)
    Xs = rng.normal(size=(120, 6))
    y = (Xs @ rng.normal(size=6) + 0.5 * rng.normal(size=120) > 0).astype(float)
    for c in (0.05, 3.0):
        w, b = X.fit_logistic(torch.tensor(Xs), torch.tensor(y), c)
        ref = LogisticRegression(C=c, tol=1e-12, max_iter=10_000).fit(Xs, y)
        np.testing.assert_allclose(w.numpy(), ref.coef_[0], rtol=1e-4, atol=1e-6)
        assert b == pytest.approx(float(ref.intercept_[0]), abs=1e-5)


def test_bootstrap_ci_of_a_known_distribution():
    rng = np.random.default_rng(1)
    n = 400
    v = rng.normal(3.0, 2.0, size=n)
    lo, hi = X.bootstrap_ci(v, X.bootstrap_indices(n, 4000, 0))
    se = v.std() / math.sqrt(n)  # normal theory: mean +- 1.96 se
    assert lo == pytest.approx(v.mean() - 1.96 * se, abs=0.25 * se)
    assert hi == pytest.approx(v.mean() + 1.96 * se, abs=0.25 * se)
    # coverage of the true mean of an exponential(1) with n = 60: close to 95 %
    hits = 0
    for k in range(300):
        s = rng.exponential(1.0, size=60)
        lo, hi = X.bootstrap_ci(s, X.bootstrap_indices(60, 500, k))
        hits += lo <= 1.0 <= hi
    assert 0.88 <= hits / 300 <= 0.98


def test_small_scores():
    assert X.distinct_2([1, 2, 1, 2, 1, 2]) == pytest.approx(2 / 5)
    assert X.distinct_2([5]) == 1.0
    assert X.word_hit("We went to Paris.", ["paris"]) == 1.0
    assert X.word_hit("Parisian bread", ["Paris"]) == 0.0
    assert X.word_hit("anything", []) == 0.0
    assert X.fluency_at([0.1, 0.3, 0.7], [-2.0, -3.0, -5.0], 0.5) == pytest.approx(-4.0)
    assert math.isnan(X.fluency_at([0.1, 0.2], [-2.0, -3.0], 0.9))
    assert X.probe_layer_for(30, 14) == 19 and X.probe_layer_for(3, 1) == 2 and X.probe_layer_for(3, 2) == 1


def _planted(engine, n=40, seed=0):
    """A concept of byte tokens (q x z j k v) and a coarse feature whose decoder row is planted on their unembedding."""
    rng = random.Random(seed)

    def words(letters, k):
        return " ".join("".join(rng.choice(letters) for _ in range(rng.randint(3, 7))) for _ in range(k))

    concept = tuple(words("qxzjkv", 5) for _ in range(n))
    contrast = tuple(words("abcdefghilmnoprstuwy", 5) for _ in range(n))
    m = engine.model
    ids = [engine.tokenizer.encode(c, add_special_tokens=False)[0] for c in "qxzjkv"]
    u = m.W_U.detach()[:, ids].mean(1) - m.W_U.detach().mean(1)
    saes = {k: copy.deepcopy(v) for k, v in engine.saes.items()}
    with torch.no_grad():
        saes["coarse"].W_dec[3] = u / u.norm()
    evalp = tuple(words("abcdefghilmnoprstuwy", 2) for _ in range(12))
    return saes, concept, contrast, evalp


class _Atlas:
    mean_when_firing = {"coarse": {3: 10.0}, "fine": {5: 10.0}}


def test_control_arm_on_a_planted_direction(tiny_engine):
    saes, concept, contrast, evalp = _planted(tiny_engine)
    cfg = X.ExperimentConfig(anchor=3, children=(5,), eval_prompts=evalp, concept_prompts=concept, contrast_prompts=contrast,
                             strengths=(1.0, 6.0), max_new_tokens=16, n_boot=500, measure="probe")
    with tiny_engine.session():
        r = X.run_experiment(tiny_engine.model, saes, tiny_engine.hook_name, cfg, atlas=_Atlas())
    by = {row["condition"]: row for row in r["table"]}
    assert r["typical"][0] == {"sae": "coarse", "index": 3, "value": 10.0, "source": "atlas mean when firing"}
    none = by["none"]
    planted = by["coarse|add|activation|6"]
    rand = by["random|add|activation|6"]
    assert planted["concept"] > 0.9 and planted["concept_ci"][0] > none["concept_ci"][1]
    assert rand["concept"] <= none["concept"] + 0.05
    assert r["control"]["random_raises"] is False
    # matched norm: every arm's vector has the coarse arm's norm at that strength
    for arm in ("fine", "coarse+fine", "random"):
        assert by[f"{arm}|add|norm|6"]["vector_norm"] == pytest.approx(60.0, rel=1e-4)
    assert by["random|add|activation|6"]["vector_norm"] == pytest.approx(by["coarse+fine|add|activation|6"]["vector_norm"])


@pytest.fixture(scope="module")
def small_run(tiny_engine):
    fr, ne = _sets(30)
    evalp = tuple(parse_prompt_lines((DATA_DIR / "prompts/eval_neutral.txt").read_text())[:5])
    cfg = X.ExperimentConfig(anchor=3, children=(7, 9), eval_prompts=evalp, concept_prompts=tuple(fr), contrast_prompts=tuple(ne),
                             strengths=(1.0, 3.0), modes=("add", "clamp"), max_new_tokens=10, words=("the",), n_boot=200)
    with tiny_engine.session():
        r = X.run_experiment(tiny_engine.model, tiny_engine.saes, tiny_engine.hook_name, cfg)
    return cfg, r


def test_fluency_and_concept_against_a_plain_forward(tiny_engine, small_run):
    cfg, r = small_run
    m = tiny_engine.model
    fr, ne = _sets(30)
    Xr = _pooled(tiny_engine, fr + ne, r["probe"]["layer"])
    probe = X.train_probe(Xr, torch.tensor([1.0] * len(fr) + [0.0] * len(ne)), r["probe"]["layer"])
    hook = r["probe"]["hook"]
    for g in r["generations"][::7]:
        p_ids = tiny_engine.tokenizer.encode(cfg.eval_prompts[g["prompt"]], add_special_tokens=False)
        ids = torch.tensor([p_ids + g["token_ids"]])
        with torch.inference_mode():
            logits, cache = m.run_with_cache(ids, names_filter=hook)
        lp = torch.log_softmax(logits[0].double(), -1)
        P, n = len(p_ids), len(g["token_ids"])
        ref = float(np.mean([float(lp[P - 1 + t, g["token_ids"][t]]) for t in range(n)]))
        assert g["logprob"] == pytest.approx(ref, abs=1e-4)
        special = set(tiny_engine.tokenizer.all_special_ids)
        keep = [P + t for t in range(n) if g["token_ids"][t] not in special]  # no sink norm on tiny
        ref_c = float(probe.prob(cache[hook][0, keep].float().mean(0)))
        assert g["probe"] == pytest.approx(ref_c, abs=1e-4)
        assert g["distinct2"] == pytest.approx(X.distinct_2(g["token_ids"]))


def test_table_and_reproducibility(tiny_engine, small_run):
    cfg, r = small_run
    conds = X.conditions_for(cfg)
    assert [row["condition"] for row in r["table"]] == [c.key for c in conds]
    assert not any(c.arm == "random" and c.mode == "clamp" for c in conds)
    assert len(r["generations"]) == len(conds) * len(cfg.eval_prompts)
    none = r["table"][0]
    assert none["fluency_ratio"] == 1.0
    for row in r["table"]:
        lo, hi = row["concept_ci"]
        assert lo - 1e-9 <= row["concept"] <= hi + 1e-9
        ratio = math.exp(row["logprob"] - none["logprob"])
        assert row["fluency_ratio"] == pytest.approx(ratio, rel=1e-4)
    gens = {(g["condition"], g["prompt"]): g for g in r["generations"]}
    assert gens[("coarse|add|norm|3", 0)]["token_ids"] == gens[("coarse|add|activation|3", 0)]["token_ids"]
    assert {v["scale"] for v in r["verdicts"]} == {"norm", "activation"} and r["verdict"] == r["verdicts"][0]["text"]
    with tiny_engine.session():
        again = X.run_experiment(tiny_engine.model, tiny_engine.saes, tiny_engine.hook_name, cfg)
    assert again["table"] == r["table"] and again["verdicts"] == r["verdicts"]


def synthetic_records(n_prompts: int, n_boot: int, seed: int, draw):
    """A two-strength config and made-up records, draw(condition, rng) -> (concept, logprob) for each condition and
    prompt in turn -> (cfg, conditions, records, steers, rng)."""
    cfg = X.ExperimentConfig(anchor=0, children=(1,), eval_prompts=("a",) * n_prompts, concept_prompts=(),
                             contrast_prompts=(), strengths=(1.0, 2.0), matched_norm=False, n_boot=n_boot)
    conds = X.conditions_for(cfg)
    rng = np.random.default_rng(seed)
    recs = []
    for c in conds:
        for p in range(n_prompts):
            conc, lp = draw(c, rng)
            recs.append({"condition": c.key, "prompt": p, "seed": 0, "concept": conc, "sae": 0.0, "logprob": lp,
                         "distinct2": 1.0, "words": None})
    return cfg, conds, recs, {c.key: (None, 1.0) for c in conds}, rng


def test_verdict_detects_a_clear_winner():
    """Synthetic records: arm 'fine' reaches every concept level at a higher log-prob than the others."""
    def draw(c, rng):
        lp = -2.0 - c.strength * (0.2 if c.arm == "fine" else 1.0) + 0.05 * rng.normal()
        return 0.1 + 0.3 * c.strength + 0.01 * rng.normal(), lp

    cfg, conds, recs, steers, rng = synthetic_records(20, 400, 0, draw)
    table = X.aggregate(recs, conds, 20, cfg, steers)
    v = X.verdict_from_records(recs, table, cfg, ("add", "activation"), 20)
    assert v["best"] == "fine" and v["detectable"] and v["diff_ci"][0] > 0
    assert "fine keeps the most fluency" in v["text"]
    # no difference: identical arms
    recs2 = [{**r, "logprob": -2.0 - 0.5 * float(r["condition"] != "none") + 0.3 * rng.normal()} for r in recs]
    v2 = X.verdict_from_records(recs2, X.aggregate(recs2, conds, 20, cfg, steers), cfg, ("add", "activation"), 20)
    assert not v2["detectable"] and "not detectable at this sample size" in v2["text"]
    assert "smallest difference this run could detect" in v2["text"] and v2["mde"] > 0


def test_verdict_arm_that_defines_the_target_has_its_fluency():
    """The weakest arm's top concept score is the common target: its fluency there is its last point's, not NaN
    (the table's rounded concept used to sit a hair above the arm's own unrounded maximum)."""
    def draw(c, rng):
        gain = {"coarse": 0.1, "fine": 0.3, "coarse+fine": 0.3, "random": 0.0}.get(c.arm, 0.0)
        conc = 0.2 + gain * c.strength + 1e-3 * rng.random() / 3  # thirds: means with more than 6 decimals
        return conc, -1.0 - c.strength * 0.1 + 0.01 * rng.normal()

    cfg, conds, recs, steers, _ = synthetic_records(7, 200, 3, draw)
    table = X.aggregate(recs, conds, 7, cfg, steers)
    v = X.verdict_from_records(recs, table, cfg, ("add", "activation"), 7)
    coarse_top = float(np.mean([r["concept"] for r in recs if r["condition"] == "coarse|add|activation|2"]))
    assert v["target"] == pytest.approx(coarse_top, abs=1e-6)
    coarse_last = float(np.mean([r["logprob"] for r in recs if r["condition"] == "coarse|add|activation|2"]))
    assert v["fluency"]["coarse"] == pytest.approx(coarse_last, abs=1e-6)
    assert "nan" not in v["text"]


def test_fluency_equals_hf_transformers_forward(tmp_path):
    """Fluency (mean log-prob per generated token under the unsteered model) against HF transformers' own forward
    of a random Llama saved with save_pretrained and loaded through the profile path (the engine runs it in
    transformer-lens): an independent implementation of the same weights."""
    from transformers import AutoModelForCausalLM

    from app.engine.loading import load_model
    from app.engine.profiles import Profile, SAESpec
    from app.engine.random_models import save_random_hf
    from app.training.topk_trainer import make_topk_sae

    hook = "blocks.1.hook_resid_post"
    folder = save_random_hf("llama", tmp_path / "model")
    prof = Profile(name="llama", display="llama", loader="hf_dir", hook_layer=1, coarse=SAESpec("coarse", "c"),
                   fine=SAESpec("fine", "f"), model_name=str(folder), hook=hook)
    model = load_model(prof).model
    hf = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    saes = {}
    for name, width, seed in (("coarse", 32, 1), ("fine", 96, 2)):
        g = torch.Generator().manual_seed(seed)
        W = torch.randn(width, model.cfg.d_model, generator=g)
        W /= W.norm(dim=-1, keepdim=True)
        saes[name] = make_topk_sae(W.T.clone(), torch.zeros(width), W, torch.zeros(model.cfg.d_model), 6, hook)
    fr, ne = _sets(12)
    evalp = tuple(parse_prompt_lines((DATA_DIR / "prompts/eval_neutral.txt").read_text())[:3])
    cfg = X.ExperimentConfig(anchor=3, children=(7, 9), eval_prompts=evalp, concept_prompts=tuple(fr),
                             contrast_prompts=tuple(ne), strengths=(4.0,), modes=("add",), max_new_tokens=8,
                             n_boot=50)
    r = X.run_experiment(model, saes, hook, cfg)
    checked = 0
    for g in r["generations"]:
        p_ids = model.tokenizer.encode(cfg.eval_prompts[g["prompt"]], add_special_tokens=False)
        ids = torch.tensor([p_ids + g["token_ids"]])
        with torch.inference_mode():
            lp = torch.log_softmax(hf(ids).logits[0].double(), -1)
        P = len(p_ids)
        ref = float(np.mean([float(lp[P - 1 + t, tok]) for t, tok in enumerate(g["token_ids"])]))
        assert g["logprob"] == pytest.approx(ref, abs=2e-4)
        checked += 1
    assert checked == len(r["generations"]) >= 3 * 4  # none + coarse / fine / both / random at one strength
    # the steered arms generated something else than the unsteered one somewhere (else the check is vacuous)
    by = {(g["condition"], g["prompt"]): g["token_ids"] for g in r["generations"]}
    assert any(by[(c, p)] != by[("none", p)] for (c, p) in by if c != "none")


def test_a_rerun_with_another_measure_reuses_the_checkpointed_generations(tiny_engine, tmp_path, monkeypatch):
    """Generations are checkpointed under what decides them only: a re-run that changes the measure (its contrast
    preface, preface size) generates nothing and scores the same texts again; the contrast preface lists
    measure_contrast's texts, and the result names them."""
    from app.engine.experiment import runner

    fr, ne = _sets(12)
    other = parse_prompt_lines((DATA_DIR / "prompts/cooking.txt").read_text())[:12]
    evalp = tuple(parse_prompt_lines((DATA_DIR / "prompts/eval_neutral.txt").read_text())[:3])
    cfg = X.ExperimentConfig(anchor=3, children=(7,), eval_prompts=evalp, concept_prompts=tuple(fr),
                             contrast_prompts=tuple(ne), strengths=(2.0,), max_new_tokens=6, n_boot=50, preface_k=3)
    with tiny_engine.session():
        first = X.run_experiment(tiny_engine.model, tiny_engine.saes, tiny_engine.hook_name, cfg, checkpoint=str(tmp_path))
    assert set(first["measure"]["contrast_examples"]) <= set(ne) and first["measure_contrast_name"] == "contrast"

    def no_generation(*a, **k):
        raise AssertionError("generated again")

    monkeypatch.setattr(runner, "batched_generate", no_generation)
    monkeypatch.setattr(runner.pushes_mod, "batched_generate", no_generation)
    again = X.ExperimentConfig(**{**cfg.__dict__, "preface_k": 4, "measure_contrast": tuple(other),
                                  "measure_contrast_name": "cooking"})
    with tiny_engine.session():
        second = X.run_experiment(tiny_engine.model, tiny_engine.saes, tiny_engine.hook_name, again, checkpoint=str(tmp_path))
    assert [g["text"] for g in second["generations"]] == [g["text"] for g in first["generations"]]
    assert first["n_generations_from_checkpoint"] == 0 and first["tokens_per_s"] > 0
    assert second["n_generations_from_checkpoint"] == second["n_generations"] and second["tokens_per_s"] is None
    assert set(second["measure"]["contrast_examples"]) <= set(other) and len(second["measure"]["contrast_examples"]) == 4
    assert second["measure_contrast_name"] == "cooking" and "(cooking, contrast set, pushed)" in second["measure"]["description"]
    assert [c["name"] for c in second["measure"]["contrasts"]] == ["cooking", "contrast set", "pushed"]
    assert [g["zeroshot"] for g in second["generations"]] != [g["zeroshot"] for g in first["generations"]]
    with pytest.raises(AssertionError, match="generated again"):  # a change to the generations' own inputs does generate
        with tiny_engine.session():
            X.run_experiment(tiny_engine.model, tiny_engine.saes, tiny_engine.hook_name,
                             X.ExperimentConfig(**{**cfg.__dict__, "max_new_tokens": 7}), checkpoint=str(tmp_path))


def test_a_cancelled_run_raises_cancelled_at_its_own_checks(tiny_engine):
    """With the flag set, run_experiment stops at its own check (before any progress call) with the engine's
    Cancelled, which a job reports as cancelled rather than as an error (tests/test_jobs.py)."""
    import threading

    from app.engine.cancellation import Cancelled

    fr, ne = _sets(6)
    cfg = X.ExperimentConfig(anchor=3, children=(7,), eval_prompts=("a",), concept_prompts=tuple(fr),
                             contrast_prompts=tuple(ne), strengths=(2.0,), max_new_tokens=4, n_boot=10, preface_k=2)
    flag = threading.Event()
    flag.set()
    with pytest.raises(Cancelled), tiny_engine.session():
        X.run_experiment(tiny_engine.model, tiny_engine.saes, tiny_engine.hook_name, cfg, cancel=flag)
