"""/api/discover and the /discover fragments on the tiny profile: numbers vs an independent recomputation,
the job lifecycle, the cache, 422s naming the field and limit, and the saved-explorations contract."""
from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pytest

from app.engine import discovery as disc
from tests.conftest import run_job, wait_job
from tests.engine.test_discovery import independent_per_prompt, lines

CONCEPT = lines("france", 8) + ["<script>alert('x')</script> Paris & <b>Lyon</b>"]
CONTRAST = lines("neutral", 6)
BODY = {"concept_set": None, "contrast_set": None, "concept_prompts": CONCEPT, "contrast_prompts": CONTRAST,
        "n_coarse": 3, "n_fine": 8, "top_k": 6, "min_fire_rate": 0.2}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def done(module_client):
    s, result = run_job(module_client, "discover", BODY)
    assert s["done"] == s["total"] == len(CONCEPT) + len(CONTRAST), s
    return s, result


def test_prompt_sets(module_client):
    """Every shipped set (data/prompts/*.txt) with its number of prompts, counted here as non-blank lines."""
    folder = Path(__file__).resolve().parents[2] / "data" / "prompts"
    want = {f.stem: sum(1 for ln in f.read_text(encoding="utf-8").splitlines() if ln.strip()) for f in folder.glob("*.txt")}
    got = module_client.get("/api/discover/prompt-sets").json()
    assert got == want and got["france"] == 200 and got["neutral"] == 200 and got["eval_neutral"] == 40


def test_tables_match_independent_recomputation(tiny_engine, done):
    _, res = done
    ids = disc.encode_prompt_set(tiny_engine.tokenizer, CONCEPT + CONTRAST, max_tokens=256)
    ref = independent_per_prompt(tiny_engine, ids, "max")
    nc = len(CONCEPT)
    assert res["n_concept"] == nc and res["n_contrast"] == len(CONTRAST)
    assert res["n_positions"] == sum(len(i) for i in ids)
    for name in ("coarse", "fine"):
        rows = res["tables"][name]
        assert rows, name
        m = ref[name]
        mc, mn = m[:nc].mean(0), m[nc:].mean(0)
        sel = np.where(mc + mn > 0, mc / np.maximum(mc + mn, 1e-30), 0)
        fc = (m[:nc] > 0).mean(0)
        eligible = np.where(fc >= BODY["min_fire_rate"])[0]
        # the first row has the highest selectivity among eligible features
        assert rows[0]["selectivity"] == pytest.approx(sel[eligible].max(), abs=1e-5)
        for r in rows:
            i = r["index"]
            assert r["mean_concept"] == pytest.approx(mc[i], rel=1e-4, abs=1e-5)
            assert r["mean_contrast"] == pytest.approx(mn[i], rel=1e-4, abs=1e-5)
            assert r["selectivity"] == pytest.approx(sel[i], abs=1e-5)
            assert r["fire_concept"] == pytest.approx(fc[i], abs=1e-6)
            assert r["fire_contrast"] == pytest.approx((m[nc:, i] > 0).mean(), abs=1e-6)
            top = int(np.argmax(m[:, i]))
            assert r["top_prompt"] == (CONCEPT + CONTRAST)[top]


def test_mapping_matches_numpy(tiny_engine, done):
    _, res = done
    m = res["mapping"]
    assert len(m["coarse"]) == 3
    ids = disc.encode_prompt_set(tiny_engine.tokenizer, CONCEPT + CONTRAST, max_tokens=256)
    ref = independent_per_prompt(tiny_engine, ids, "max")
    Wc = tiny_engine.saes["coarse"].W_dec.detach().double().numpy()
    Wf = tiny_engine.saes["fine"].W_dec.detach().double().numpy()
    for i, c in enumerate(m["coarse"]):
        for j, f in enumerate(m["fine"]):
            a, b = ref["coarse"][:, c], ref["fine"][:, f]
            corr = 0.0 if a.std() == 0 or b.std() == 0 else np.corrcoef(a, b)[0, 1]
            cos = Wc[c] @ Wf[f] / np.linalg.norm(Wc[c]) / np.linalg.norm(Wf[f])
            assert m["corr"][i][j] == pytest.approx(corr, abs=1e-4)
            assert m["cos"][i][j] == pytest.approx(cos, abs=1e-5)
        # GO/NO-GO: the count of ALL fine features above the threshold, from numpy over the whole decoder
        allcos = Wf @ Wc[c] / np.linalg.norm(Wf, axis=1) / np.linalg.norm(Wc[c])
        g = res["go_no_go"][i]
        assert g["coarse"] == c and g["n_above"] == int((allcos >= 0.3).sum())
        assert sum(m["scan"]["counts"][i]) == Wf.shape[0]
    assert res["go"] == any(g["n_above"] >= 3 for g in res["go_no_go"])


def test_second_submit_is_cached_and_sync_endpoint_agrees(module_client, done):
    s, res = done
    r = module_client.post("/api/discover/jobs", json=BODY)
    assert r.status_code == 202 and r.json()["cached"] and r.json()["state"] == "done"
    sync = module_client.post("/api/discover", json=BODY).json()
    assert sync["tables"] == res["tables"] and sync["mapping"] == res["mapping"]
    # other analysis knobs reuse the cached forward passes: same per-feature numbers
    other = module_client.post("/api/discover", json={**BODY, "aggregate": "max", "top_k": 3}).json()
    assert other["tables"]["coarse"] == res["tables"]["coarse"][:3] or other["tables"]["coarse"][0] == res["tables"]["coarse"][0]


def test_other_knobs_reuse_the_jobs_collection(module_client, done):
    s, res = done
    other = module_client.post("/api/discover", json={**BODY, "aggregate": "max", "top_k": 3}).json()
    assert other["seconds"] == pytest.approx(res["seconds"], abs=1.5e-3)  # same collection object (not re-run)


def test_cancel_and_409(module_client):
    body = {**BODY, "concept_set": "france", "contrast_set": "neutral", "concept_prompts": None, "contrast_prompts": None}
    r = module_client.post("/api/discover/jobs", json=body)
    jid = r.json()["job_id"]
    c = module_client.post(f"/api/discover/jobs/{jid}/cancel")
    assert c.status_code == 200
    s = wait_job(module_client, f"/api/discover/jobs/{jid}")
    assert s["state"] == "cancelled" and s["done"] < s["total"] == 400
    r = module_client.get(f"/api/discover/jobs/{jid}/result")
    assert r.status_code == 409 and "cancelled" in r.json()["detail"]


def test_unknown_job_404(module_client):
    assert module_client.get("/api/discover/jobs/nope").status_code == 404
    assert module_client.post("/api/discover/jobs/nope/cancel").status_code == 404
    assert module_client.get("/api/discover/jobs/nope/result").status_code == 404
    assert module_client.get("/discover/jobs/nope/progress").status_code == 404


@pytest.mark.parametrize("patch,field,needle", [
    ({"n_coarse": 21}, "n_coarse", "20"),
    ({"n_fine": 0}, "n_fine", "1"),
    ({"cos_threshold": 1.5}, "cos_threshold", "1"),
    ({"aggregate": "median"}, "aggregate", "max"),
    ({"concept_prompts": ["only one"]}, "concept_prompts", "at least 2"),
    ({"concept_prompts": ["x"] * 1001}, "concept_prompts", "1000"),
    ({"contrast_prompts": ["a", "b" * 8001]}, "contrast_prompts", "8000"),
    ({"concept_set": "germany", "concept_prompts": None}, "concept_set", "shipped"),
    ({"surprise": 1}, "surprise", "Extra"),
])
def test_422_names_field_and_limit(module_client, patch, field, needle):
    r = module_client.post("/api/discover/jobs", json={**BODY, **patch})
    assert r.status_code == 422
    errs = r.json()["detail"]
    assert any(field in e["loc"] and needle in (e["msg"] + str(e.get("ctx", ""))) for e in errs), errs


def test_missing_side_422(module_client):
    r = module_client.post("/api/discover", json={**BODY, "contrast_set": None, "contrast_prompts": None})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "contrast_prompts"]


# ------------------------------------------------------------------ HTML
def test_page_form_and_definitions(module_client):
    r = module_client.get("/discover")
    assert r.status_code == 200
    html = r.text
    for s in ("selectivity", "fire rate", "mean<sub>concept</sub> / (mean<sub>concept</sub> + mean<sub>contrast</sub>)",
              'name="concept_set"', "france (200 prompts)", "neutral (200 prompts)", "GO / NO-GO"):
        assert s in html, s
    assert 'hx-trigger="load"' not in html  # no run=1: nothing starts


def run_fragment(module_client, data):
    r = module_client.post("/discover/run", data=data)
    assert r.status_code == 200, r.text
    push = r.headers.get("hx-push-url")
    text = r.text
    end = time.time() + 60
    while "job-progress" in text and time.time() < end:
        assert "<progress" in text
        jid = re.search(r"/discover/jobs/([0-9a-f]+)/progress", text).group(1)
        time.sleep(0.1)
        text = module_client.get(f"/discover/jobs/{jid}/progress").text
    return text, push


def form_of(body):
    return {"concept_set": "custom", "concept_text": "\n".join(body["concept_prompts"]),
            "contrast_set": "custom", "contrast_text": "\n".join(body["contrast_prompts"]),
            **{k: str(body[k]) for k in ("n_coarse", "n_fine", "top_k", "min_fire_rate")}}


def test_run_fragment_shows_all_views_escaped_and_pushes_url(module_client, done):
    _, res = done
    html, push = run_fragment(module_client, form_of(BODY))
    assert 'class="discovery"' in html
    for fid in ("graph", "scatter", "heatmap", "histogram"):
        assert f'data-figure="disc-{fid}-{res["set_hash"]}"' in html
    assert "GO / NO-GO" in html and html.count('<tr class="') >= 2
    assert "<script>alert" not in html and "&lt;script&gt;alert" in html  # prompt text escaped
    assert push.startswith("/discover?") and "run=1" in push and ("sha%3A" in push or "concept_prompts=" in push)
    # the pushed address reproduces the inputs (short pasted sets inline, long ones by hash) and starts the run on load
    page = module_client.get(push).text
    assert 'hx-trigger="load"' in page and "&lt;script&gt;alert" in page


def test_view_rerenders_with_new_thresholds(tiny_engine, module_client, done):
    html, _ = run_fragment(module_client, form_of(BODY))
    jid = re.search(r"/discover/jobs/([0-9a-f]+)/view", html).group(1)
    _, res = done
    Wc = tiny_engine.saes["coarse"].W_dec.detach().double().numpy()
    Wf = tiny_engine.saes["fine"].W_dec.detach().double().numpy()
    for t in ("0.1", "0.45"):
        html = module_client.get(f"/discover/jobs/{jid}/view", params={"cos_threshold": t}).text
        # the coarse cell links to the split map and a 'Test steering' experiment
        cells = re.findall(r"<tr><td>(?:(?!</td>).)*?>C-(\d+)<(?:(?!</td>).)*</td><td class=\"num\">(\d+)(\*?)<", html)
        assert len(cells) == 3
        for c, n, star in cells:
            allcos = Wf @ Wc[int(c)] / np.linalg.norm(Wf, axis=1) / np.linalg.norm(Wc[int(c)])
            assert int(n) == int((allcos >= float(t)).sum()) and star == ""
        assert f"Cosine threshold <input type=\"number\" name=\"cos_threshold\" min=\"-1\" max=\"1\" step=\"0.05\" value=\"{t}\"" in html
    below = module_client.get(f"/discover/jobs/{jid}/view", params={"cos_threshold": "-1"}).text
    assert "lower bound" in below  # below the scan floor the counts are marked
    bad = module_client.get(f"/discover/jobs/{jid}/view", params={"cos_threshold": "7"})
    assert bad.status_code == 422 and "cos_threshold" in bad.text


def test_fragment_renders_from_inputs_result_kind_only(done):
    from app.core.registration import build_app_templates

    templates = build_app_templates()

    _, res = done
    inputs = {**BODY, "aggregate": "max", "cos_threshold": 0.3, "corr_threshold": 0.3, "cos_near_zero": 0.1, "hist_coarse": None}
    html = templates.get_template("fragments/discovery.html").render({"inputs": inputs, "result": res, "kind": "discovery"})
    assert html == templates.get_template("fragments/discovery.html").render({"inputs": inputs, "result": res, "kind": "discovery"})
    assert "view-knobs" not in html and "Thresholds: cosine 0.3" in html
    for fid in ("graph", "scatter", "heatmap", "histogram"):
        assert f"disc-{fid}-" in html
    for r in res["tables"]["coarse"]:
        assert f"C-{r['index']}<" in html


def save_form_fields(html: str) -> dict:
    """The hidden fields of a fragment's Save form (kind, inputs, result), as the browser would post them."""
    import html as html_lib
    import json

    out = {}
    for name in ("kind", "inputs", "result"):
        raw = html_lib.unescape(re.search(rf'<input type="hidden" name="{name}" value="([^"]*)"', html).group(1))
        out[name] = raw if name == "kind" else json.loads(raw)
    return out


def test_view_at_another_threshold_saves_what_a_rerun_gives(module_client, done):
    """Re-render at a new cosine threshold, save, re-run: the saved GO/NO-GO is the one at the threshold shown."""
    html, _ = run_fragment(module_client, form_of(BODY))
    jid = re.search(r"/discover/jobs/([0-9a-f]+)/view", html).group(1)
    _, res = done
    matches = res["mapping"]["scan"]["matches"][0]
    # a threshold between the first coarse feature's best matches, so its count differs from the default 0.3
    cos = sorted({v for _, v in matches if v >= res["mapping"]["scan"]["floor"]}, reverse=True)
    t = next(c for c in cos if sum(v >= c for _, v in matches) != res["go_no_go"][0]["n_above"])
    shown = module_client.get(f"/discover/jobs/{jid}/view", params={"cos_threshold": str(t)}).text
    fields = save_form_fields(shown)
    assert fields["inputs"]["cos_threshold"] == t
    want = sum(v >= t for _, v in matches)
    assert fields["result"]["go_no_go"][0]["n_above"] == want != res["go_no_go"][0]["n_above"]
    saved = module_client.post("/api/explorations", json={**fields, "title": "t"})
    assert saved.status_code == 201, saved.text
    rr = module_client.post(f"/api/explorations/{saved.json()['id']}/rerun").json()
    assert rr["result_matches"], rr["first_difference"]
    assert rr["result"]["go_no_go"][0]["n_above"] == want


def test_tables_carry_label_ratio_and_put_dense_features_last_unless_asked(tiny_engine, module_client, done):
    """With an atlas: each row's label, its mean on the concept over the atlas's mean when firing, the dense mark
    (> 10% of the atlas's tokens), and dense rows after the rest (each group by selectivity); rank=selectivity keeps
    plain selectivity order."""
    from dataclasses import replace

    from tests.atlas_fixtures import tiny_atlas, with_atlas

    _, plain = done
    atlas = tiny_atlas(tiny_engine)
    density = {n: np.zeros_like(d) for n, d in atlas.density.items()}
    for n, rows in plain["tables"].items():
        for j, r in enumerate(rows):
            density[n][r["index"]] = 0.5 if j % 2 == 0 else 0.01  # every other row dense
    atlas = replace(atlas, density=density)
    with with_atlas(tiny_engine, atlas):
        ranked = module_client.post("/api/discover", json=BODY).json()
        raw = module_client.post("/api/discover", json={**BODY, "rank": "selectivity"}).json()
    for n, rows in plain["tables"].items():
        order = [r["index"] for r in rows]
        assert [r["index"] for r in raw["tables"][n]] == order
        want = [i for j, i in enumerate(order) if j % 2 == 1] + [i for j, i in enumerate(order) if j % 2 == 0]
        assert [r["index"] for r in ranked["tables"][n]] == want
        for r in ranked["tables"][n]:
            i = r["index"]
            assert r["dense"] == (density[n][i] > 0.10) and r["label"] == atlas.label(n, i)
            t = float(atlas.mean_when_firing[n][i])
            assert (r["ratio"] == pytest.approx(r["mean_concept"] / t, rel=1e-6)) if t > 0 else r["ratio"] is None


def test_page_reads_the_go_no_go_rows_the_json_carries(done):
    """GO/NO-GO is chosen once (api/discover/service.with_threshold): the page's table shows the result's rows, never
    a verdict of its own (a row changed in the result shows changed)."""
    import copy

    from app.core.registration import build_app_templates, build_views
    from app.web.templating import render_snapshot

    _, res = done
    inputs = build_views().get("discovery").request_model.model_validate(BODY).model_dump()
    assert res["go_no_go"], "the example maps at least one coarse feature"

    def table(result) -> list[tuple[int, int, str]]:
        html, generic = render_snapshot(build_app_templates(), build_views(), "discovery", inputs, result)
        assert not generic
        body = html.split('class="gonogo-table"')[1].split("</tbody>")[0]
        rows = re.findall(r'href="/features/coarse/(\d+)".*?<td class="num">(\d+)\*?</td>\s*<td class="(?:go|nogo)">([A-Z-]+)</td>',
                          body, re.S)
        return [(int(c), int(n), v) for c, n, v in rows]

    assert table(res) == [(g["coarse"], g["n_above"], "GO" if g["go"] else "NO-GO") for g in res["go_no_go"]]
    changed = copy.deepcopy(res)
    changed["go_no_go"][0].update(n_above=99, go=not changed["go_no_go"][0]["go"])
    assert table(changed)[0] == (res["go_no_go"][0]["coarse"], 99, "NO-GO" if res["go_no_go"][0]["go"] else "GO")
