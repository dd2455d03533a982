"""/api/experiment and the /experiment page on the tiny profile: job lifecycle, CSV export, 422 / 404 shapes,
the discovery -> experiment link, and the result against the engine function run directly."""
from __future__ import annotations

import csv
import io

import pytest

from app.engine import experiment as X
from tests.conftest import run_job, wait_job

BODY = {"anchor": 3, "children": [7, 9], "concept_set": None, "contrast_set": None, "eval_set": None,
        "concept_prompts": ["Paris is in France.", "I love French cheese.", "The Eiffel Tower at night", "Lyon and Marseille"],
        "contrast_prompts": ["The cat sat down.", "Water is wet.", "A box of pens", "The bus was late again"],
        "eval_prompts": ["My favourite place is", "For dinner I cook", "The museum had"], "strengths": [2.0, 6.0],
        "max_new_tokens": 6, "words": ["the"]}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def done(module_client):
    s, result = run_job(module_client, "experiment", BODY, timeout=120)
    assert s["done"] == s["total"] > 0, s
    return s, result


def test_job_result_matches_the_engine(done, tiny_engine):
    s, res = done
    cfg = X.ExperimentConfig(anchor=3, children=(7, 9), eval_prompts=tuple(BODY["eval_prompts"]),
                             concept_prompts=tuple(BODY["concept_prompts"]), contrast_prompts=tuple(BODY["contrast_prompts"]),
                             strengths=(2.0, 6.0), max_new_tokens=6, words=("the",), sink_norm=tiny_engine.profile.sink_norm)
    with tiny_engine.session():
        ref = X.run_experiment(tiny_engine.model, tiny_engine.saes, tiny_engine.hook_name, cfg)
    assert res["table"] == ref["table"] and res["verdicts"] == ref["verdicts"]
    assert [g["text"] for g in res["generations"]] == [g["text"] for g in ref["generations"]]
    assert res["profile"] == "tiny" and res["eval_prompts"] == BODY["eval_prompts"]
    assert res["n_generations"] == 3 * len(X.conditions_for(cfg)) - 3 * len(X.aliases(X.conditions_for(cfg)))


def test_csv_export(module_client, done):
    s, res = done
    r = module_client.get(f"/api/experiment/jobs/{s['job_id']}/table.csv")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [row["condition"] for row in rows] == [t["condition"] for t in res["table"]]
    assert float(rows[1]["concept_lo"]) == pytest.approx(res["table"][1]["concept_ci"][0])
    g = list(csv.DictReader(io.StringIO(module_client.get(f"/api/experiment/jobs/{s['job_id']}/generations.csv").text)))
    assert len(g) == len(res["generations"]) and all(
        row["text"] == ("'" + want["text"] if want["text"][:1] in ("=", "+", "-", "@", "\t", "\r") else want["text"])
        for row, want in zip(g, res["generations"]))


def test_cached_job_and_unknown_job(module_client, done):
    r = module_client.post("/api/experiment/jobs", json=BODY)
    assert r.status_code == 202 and r.json()["state"] == "done" and r.json()["cached"]
    assert module_client.get("/api/experiment/jobs/nope").status_code == 404
    assert module_client.post("/api/experiment/jobs/nope/cancel").status_code == 404


def test_cancel_a_running_job(module_client):
    body = {**BODY, "max_new_tokens": 40, "seed": 5, "strengths": [1.0, 2.0, 3.0, 4.0], "modes": ["add", "clamp"]}
    jid = module_client.post("/api/experiment/jobs", json=body).json()["job_id"]
    c = module_client.post(f"/api/experiment/jobs/{jid}/cancel")
    assert c.status_code == 200
    s = wait_job(module_client, f"/api/experiment/jobs/{jid}", timeout=120)
    assert s["state"] in ("cancelled", "done")
    if s["state"] == "cancelled":
        assert module_client.get(f"/api/experiment/jobs/{jid}/result").status_code == 409


@pytest.mark.parametrize("patch, loc, needle", [
    ({"strengths": [1.0] * 7}, ["body", "strengths"], "max_experiment_strengths"),
    ({"children": list(range(9))}, ["body", "children"], "max_experiment_children"),
    ({"max_new_tokens": 100_000}, ["body", "max_new_tokens"], "max_new_tokens"),
    ({"n_seeds": 9}, ["body", "n_seeds"], "max_experiment_seeds"),
    ({"eval_prompts": ["p"] * 65}, ["body", "eval_prompts"], "max_experiment_prompts"),
    ({"eval_set": "eval_neutral", "eval_prompts": None, "n_prompts": 40, "max_new_tokens": 128, "modes": ["add", "clamp"],
      "strengths": [1, 2, 3, 4, 5, 6]}, ["body", "n_prompts"], "max_experiment_tokens"),
    ({"probe_layer": 1}, ["body", "probe_layer"], "differ"),
])
def test_limits_422(module_client, patch, loc, needle):
    r = module_client.post("/api/experiment", json={**BODY, **patch})
    assert r.status_code == 422, r.text
    d = r.json()["detail"][0]
    assert d["loc"][:2] == loc and needle in d["msg"]


def test_out_of_range_404(module_client):
    r = module_client.post("/api/experiment", json={**BODY, "anchor": 64})
    assert r.status_code == 404 and "0..63" in r.json()["detail"][0]["msg"]
    r = module_client.post("/api/experiment/jobs", json={**BODY, "children": [1, 512]})
    assert r.status_code == 404 and r.json()["detail"][0]["loc"] == ["body", "children", 1]


def test_page_and_fragment(module_client, done):
    s, res = done
    page = module_client.get("/experiment?anchor=3&children=[7,9]")
    assert page.status_code == 200 and 'name="anchor"' in page.text and "7, 9" in page.text
    r = module_client.get(f"/experiment/jobs/{s['job_id']}/progress")
    assert r.status_code == 200
    assert res["verdict"] in r.text.replace("&#39;", "'") or "Verdict" in r.text
    assert 'data-figure="exp-add-norm"' in r.text and "Download CSV" in r.text
    bad = module_client.post("/experiment/run", data={"anchor": "3", "strengths": "1,2,3,4,5,6,7"})
    assert bad.status_code == 422 and "strengths" in bad.text


def test_test_steering_link_from_a_discovery_result():
    from app.web.experiment_pages import test_steering_url

    inputs = {"cos_threshold": 0.3, "corr_threshold": 0.3, "concept_set": "france", "contrast_set": "neutral"}
    result = {"mapping": {"coarse": [5, 9], "fine": [1, 2, 3, 4],
                          "cos": [[0.5, 0.2, 0.9, 0.4], [0, 0, 0, 0]], "corr": [[0.4, 0.9, 0.5, 0.1], [0, 0, 0, 0]]}}
    url = test_steering_url(inputs, result, 5)
    assert url == "/experiment?anchor=5&children=%5B3%2C1%5D"  # the experiment codec's: its default sets left out
