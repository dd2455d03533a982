"""Saved explorations JSON API: save -> open is identical for every registered view, re-run reproduces,
import validates (422) and reads older schema versions, nothing can be changed or deleted."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest

from app.api.explorations import SCHEMA_VERSION, migrate
from app.core.registration import build_app_templates, build_views
from app.core.settings import Limits
from app.explorations.registry import snapshot_context
from app.store import new_id
from app.web.templating import render_snapshot
from tests.conftest import make_client

VIEWS, TEMPLATES = build_views(), build_app_templates()  # what create_app registers


def render_fragment(kind, inputs, result):
    return render_snapshot(TEMPLATES, VIEWS, kind, inputs, result)
templates = TEMPLATES


def views():
    return VIEWS.all()

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
V1 = json.loads((FIXTURES / "exploration_v1_analysis.json").read_text())
V2 = json.loads((FIXTURES / "exploration_v2_analysis.json").read_text())
KINDS = sorted(k for k, v in views().items() if v.example is not None)


def live(kind, engine, settings):
    """Run a registered view the way its route does; the fragment the view would show."""
    spec = views()[kind]
    req = spec.request_model.model_validate(spec.example)
    ctx = snapshot_context(kind, req, spec.run_fn(engine, settings, req))
    html = templates.env.get_template(f"fragments/{kind}.html").render(ctx)
    return ctx, html


def save(client, **body):
    r = client.post("/api/explorations", json=body)
    assert r.status_code == 201, r.text
    return r.json()


@pytest.mark.parametrize("kind", KINDS)
def test_save_open_is_identical(client, tiny_engine, kind):
    ctx, html = live(kind, tiny_engine, client.app.state.settings)
    saved = save(client, kind=kind, title="t", note="n", inputs=ctx["inputs"], result=ctx["result"])
    assert saved["url"] == f"/e/{saved['id']}"
    doc = client.get(f"/api/explorations/{saved['id']}").json()
    assert doc["inputs"] == ctx["inputs"] and doc["result"] == ctx["result"]  # the JSON is equal
    assert doc["schema_version"] == SCHEMA_VERSION and doc["kind"] == kind
    prof = doc["profile"]
    assert prof["name"] == "tiny" and prof["fingerprint"] == tiny_engine.fingerprint
    assert prof["hook_name"] == tiny_engine.hook_name
    assert {n: s["d_sae"] for n, s in prof["saes"].items()} == {n: s.cfg.d_sae for n, s in tiny_engine.saes.items()}
    frag = client.get(f"/api/explorations/{saved['id']}/fragment")
    assert frag.status_code == 200 and frag.text == html  # the HTML fragment is equal
    page = client.get(saved["url"])
    assert page.status_code == 200 and html in page.text


def test_analysis_saved_json_equals_the_api_answer(client):
    inputs = {"prompt": "Tom & <Jerry> sat.", "top_k": 4}
    api = client.post("/api/analyze", json=inputs).json()
    saved = save(client, kind="analysis", title="", inputs=inputs, result=api)
    doc = client.get(f"/api/explorations/{saved['id']}").json()
    assert doc["result"] == api
    assert doc["title"] == "analysis: Tom & <Jerry> sat."  # default title from the prompt
    page = client.get(saved["url"]).text
    assert "Tom &amp; &lt;Jerry&gt; sat." in page and "<Jerry>" not in page


def flat(x, path="r"):
    """{json path: leaf} for comparing results independently of the app's comparison."""
    if isinstance(x, dict):
        return {k: v for key, val in x.items() for k, v in flat(val, f"{path}.{key}").items()}
    if isinstance(x, list):
        return {k: v for i, val in enumerate(x) for k, v in flat(val, f"{path}[{i}]").items()}
    return {path: x}


TIMINGS = {"seconds", "tokens_per_s", "elapsed_s", "elapsed", "duration_s", "wall_s", "load_seconds"}


def assert_same_result(a, b, skip=()):
    """Leaves equal (floats within rtol 1e-4), timing leaves skipped at any depth."""
    drop = set(skip) | TIMINGS

    def keep(path):
        return path.rsplit(".", 1)[-1] not in drop

    fa = {k: v for k, v in flat(a).items() if keep(k)}
    fb = {k: v for k, v in flat(b).items() if keep(k)}
    assert fa.keys() == fb.keys()
    floats = [k for k in fa if isinstance(fa[k], float) or isinstance(fb[k], float)]
    assert {k: fa[k] for k in fa if k not in floats} == {k: fb[k] for k in fb if k not in floats}
    if floats:
        x, y = np.array([fa[k] for k in floats], float), np.array([fb[k] for k in floats], float)
        np.testing.assert_allclose(y, x, rtol=1e-4, atol=1e-6)
        return float(np.max(np.abs(x - y)))
    return 0.0


@pytest.mark.parametrize("kind", KINDS)
def test_rerun_equals_saved_on_the_same_profile(client, tiny_engine, kind):
    ctx, _ = live(kind, tiny_engine, client.app.state.settings)
    saved = save(client, kind=kind, title="t", inputs=ctx["inputs"], result=ctx["result"])
    rr = client.post(f"/api/explorations/{saved['id']}/rerun").json()
    assert rr["result_matches"] is True and rr["first_difference"] is None
    timing = set(rr["ignored_fields"])
    assert timing <= {"seconds", "tokens_per_s", "elapsed_s", "elapsed", "duration_s", "wall_s", "load_seconds"}
    worst = assert_same_result(ctx["result"], rr["result"], skip=timing)
    assert rr["max_abs_diff"] == pytest.approx(worst, abs=1e-12)
    assert rr["profile_matches"] is True and rr["profile_differences"] == []
    page = client.post(f"/e/{saved['id']}/rerun", headers={"hx-request": "true"}).text
    assert ("identical to the saved one" in page) == rr["result_identical"]
    assert "differs" not in page


def test_a_result_field_added_after_saving_does_not_fail_the_rerun(client, tiny_engine):
    """A dose snapshot saved before `moved` existed re-runs as matching (what was saved is compared); a saved
    field the re-run lacks, or a changed value, still fails."""
    ctx, _ = live("dose", tiny_engine, client.app.state.settings)
    old = {k: v for k, v in ctx["result"].items() if k != "moved"}
    saved = save(client, kind="dose", title="t", inputs=ctx["inputs"], result=old)
    rr = client.post(f"/api/explorations/{saved['id']}/rerun").json()
    assert rr["result_matches"] is True and rr["first_difference"] is None and rr["result"]["moved"]
    forged = copy.deepcopy(old)
    forged["promoted"][0]["token_id"] += 1
    rr = client.post(f"/api/explorations/{save(client, kind='dose', title='t', inputs=ctx['inputs'], result=forged)['id']}/rerun").json()
    assert rr["result_matches"] is False and rr["first_difference"] == "result.promoted[0].token_id"


def test_rerun_matches_an_independent_api_call(client):
    inputs = {"prompt": "abc def", "top_k": 2}
    api = client.post("/api/analyze", json=inputs).json()
    saved = save(client, kind="analysis", title="t", inputs=inputs, result=api)
    rr = client.post(f"/api/explorations/{saved['id']}/rerun").json()
    assert rr["result_matches"]
    assert_same_result(api, rr["result"])
    assert_same_result(client.post("/api/analyze", json=inputs).json(), rr["result"])


def test_a_changed_result_is_reported(client):
    """A saved result that the model would not produce is caught by the re-run, at the right place."""
    inputs = {"prompt": "abc def", "top_k": 2}
    api = client.post("/api/analyze", json=inputs).json()
    forged = copy.deepcopy(api)
    forged["tokens"][3]["saes"]["fine"]["values"][0] += 0.01
    saved = save(client, kind="analysis", title="t", inputs=inputs, result=forged)
    rr = client.post(f"/api/explorations/{saved['id']}/rerun").json()
    assert rr["result_matches"] is False and rr["result_identical"] is False
    assert rr["first_difference"] == "result.tokens[3].saes.fine.values[0]"
    assert rr["max_abs_diff"] == pytest.approx(0.01, rel=1e-3)
    forged2 = copy.deepcopy(api)
    forged2["tokens"][2]["token"] = "X"
    saved2 = save(client, kind="analysis", title="t", inputs=inputs, result=forged2)
    rr2 = client.post(f"/api/explorations/{saved2['id']}/rerun").json()
    assert rr2["result_matches"] is False and rr2["first_difference"] == "result.tokens[2].token"
    page = client.post(f"/e/{saved2['id']}/rerun", headers={"hx-request": "true"}).text
    assert "differs from the saved one" in page and "result.tokens[2].token" in page


def test_rerun_says_when_the_live_profile_differs(client):
    doc = copy.deepcopy(V2)
    doc["profile"].update(name="gemma-2-2b", fingerprint="0123456789abcdef", hook_name="blocks.12.hook_resid_post")
    doc["profile"]["saes"]["fine"].update(source="gemma-scope-2b-pt-res-canonical/layer_12/width_262k/canonical", d_sae=262144)
    i = client.post("/api/explorations/import", json=doc).json()["id"]
    rr = client.post(f"/api/explorations/{i}/rerun").json()
    assert rr["profile_matches"] is False
    diffs = "\n".join(rr["profile_differences"])
    for needle in ("name: saved gemma-2-2b / live tiny", "fingerprint: saved 0123456789abcdef", "hook_name",
                   "saes.fine: saved gemma-scope-2b-pt-res-canonical/layer_12/width_262k/canonical (262144) / live random (512)"):
        assert needle in diffs
    assert "saes.coarse" not in diffs
    page = client.get(f"/e/{i}").text
    assert "different profile" in page and "0123456789abcdef" in page


def test_rerun_of_an_unregistered_kind_is_409(client):
    i = save(client, kind="notes_view", title="t", inputs={"a": 1}, result={"b": 2})["id"]
    r = client.post(f"/api/explorations/{i}/rerun")
    assert r.status_code == 409 and "notes_view" in r.json()["detail"]


def test_unregistered_kind_renders_generically_and_escaped(client):
    evil = "<script>alert(1)</script>"
    i = save(client, kind="notes_view", title=evil, note=evil, inputs={"prompt": evil}, result={"tokens": [evil]})["id"]
    page = client.get(f"/e/{i}")
    assert page.status_code == 200
    assert evil not in page.text and "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    assert "generic-snapshot" in page.text and "Re-run" not in page.text


# --- listing ---------------------------------------------------------------------------------------------

def test_list_recent(client):
    a = save(client, kind="analysis", title="first", inputs={"prompt": "a"}, result=client.post("/api/analyze", json={"prompt": "a"}).json())
    b = save(client, kind="notes_view", title="second", inputs={}, result={})
    lst = client.get("/api/explorations").json()
    assert lst["total"] == 2 and [x["id"] for x in lst["items"]] == [b["id"], a["id"]]
    assert lst["items"][1] | {"created_at": 0} == {"id": a["id"], "url": a["url"], "kind": "analysis", "title": "first",
                                                    "profile": "tiny", "created_at": 0, "schema_version": 2}
    only = client.get("/api/explorations", params={"kind": "notes_view"}).json()
    assert only["total"] == 1 and only["items"][0]["id"] == b["id"]
    assert client.get("/api/explorations", params={"limit": 0}).status_code == 422
    assert client.get("/api/explorations", params={"kind": "../x"}).status_code == 422


# --- immutability and ids --------------------------------------------------------------------------------

def test_no_way_to_change_or_delete(client):
    i = save(client, kind="notes_view", title="t", inputs={}, result={"v": 1})["id"]
    before = client.get(f"/api/explorations/{i}").json()
    for method in ("PUT", "PATCH", "DELETE"):
        for url in (f"/api/explorations/{i}", f"/e/{i}"):
            r = client.request(method, url, json={"title": "changed"})
            assert r.status_code == 405, (method, url, r.status_code)
    assert client.get(f"/api/explorations/{i}").json() == before
    paths = client.get("/openapi.json").json()["paths"]
    methods = {m for p, ops in paths.items() if p.startswith("/api/explorations") for m in ops}
    assert methods <= {"get", "post"}


def test_unknown_ids_are_404(client):
    for i in (new_id(), "x", "a" * 70, "%3Cb%3E"):
        assert client.get(f"/api/explorations/{i}").status_code == 404
        r = client.get(f"/e/{i}")
        assert r.status_code == 404 and "No such exploration" in r.text
        assert client.get(f"/e/{i}/export").status_code == 404
        assert client.post(f"/api/explorations/{i}/rerun").status_code == 404


def test_ids_are_random(client):
    ids = [save(client, kind="notes_view", title="t", inputs={}, result={})["id"] for _ in range(5)]
    assert len(set(ids)) == 5 and all(len(i) >= 22 for i in ids)
    assert len({i[:4] for i in ids}) >= 4  # not sequential


# --- save validation -------------------------------------------------------------------------------------

def test_save_validates_inputs_and_result_of_a_registered_view(client):
    api = client.post("/api/analyze", json={"prompt": "a"}).json()
    r = client.post("/api/explorations", json={"kind": "analysis", "inputs": {"prompt": "a", "top_k": 0}, "result": api})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "inputs", "top_k"]
    bad = dict(api)
    del bad["tokens"]
    r = client.post("/api/explorations", json={"kind": "analysis", "inputs": {"prompt": "a"}, "result": bad})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "result", "tokens"]


@pytest.mark.parametrize("body,loc,needle", [
    ({"kind": "Bad Kind", "inputs": {}, "result": {}}, ["body", "kind"], "pattern"),
    ({"kind": "../base", "inputs": {}, "result": {}}, ["body", "kind"], "pattern"),
    ({"kind": "notes_view", "title": "x" * 201, "inputs": {}, "result": {}}, ["body", "title"], "200"),
    ({"kind": "notes_view", "note": "x" * 4001, "inputs": {}, "result": {}}, ["body", "note"], "4000"),
    ({"kind": "notes_view", "inputs": [], "result": {}}, ["body", "inputs"], "dictionary"),
    ({"kind": "notes_view", "inputs": {}}, ["body", "result"], "required"),
    ({"kind": "notes_view", "inputs": {}, "result": {}, "id": "mine"}, ["body", "id"], "Extra"),
])
def test_save_rejects_bad_bodies(client, body, loc, needle):
    r = client.post("/api/explorations", json=body)
    assert r.status_code == 422
    d = r.json()["detail"][0]
    assert d["loc"] == loc and needle in d["msg"]


def test_lone_surrogates_never_reach_the_store(client):
    """JSON bodies are screened by the middleware; text that arrives inside a form field is checked here."""
    files = {"kind": (None, "notes_view"), "title": (None, "t"), "inputs": (None, '{"prompt": "a\\ud800b"}'),
             "result": (None, "{}")}
    r = client.post("/e/save", files=files, follow_redirects=False)
    assert r.status_code == 422 and "surrogate" in r.text
    raw = json.dumps(_v2(title="bad \ud800")).encode()
    r = client.post("/e/import", files={"file": ("x.json", raw, "application/json")})
    assert r.status_code == 422 and "surrogate" in r.text
    assert client.get("/api/explorations").json()["total"] == 0


def test_save_rejects_oversized_results(tiny_engine, tmp_path):
    with make_client(tiny_engine, store_url=f"sqlite:///{tmp_path}/s.db", limits=Limits(max_exploration_bytes=4000)) as c:
        r = c.post("/api/explorations", json={"kind": "notes_view", "title": "t", "inputs": {}, "result": {"x": "y" * 5000}})
        assert r.status_code == 422
        d = r.json()["detail"][0]
        assert "max_exploration_bytes" in d["msg"] and "4000" in d["msg"]
        assert c.get("/api/explorations").json()["total"] == 0


# --- export / import -------------------------------------------------------------------------------------

def test_export_import_round_trip(client, tiny_engine):
    ctx, html = live("analysis", tiny_engine, client.app.state.settings)
    i = save(client, kind="analysis", title="round trip", note="n", inputs=ctx["inputs"], result=ctx["result"])["id"]
    exp = client.get(f"/e/{i}/export")
    assert exp.status_code == 200 and exp.headers["content-type"].startswith("application/json")
    assert f'filename="exploration-{i}.json"' in exp.headers["content-disposition"]
    exported = exp.json()
    assert exported == client.app.state.store.get(i)  # the same document the store keeps
    j = client.post("/api/explorations/import", content=exp.content, headers={"content-type": "application/json"})
    assert j.status_code == 201
    k = j.json()["id"]
    assert k != i
    assert client.get(f"/api/explorations/{k}").json() == client.get(f"/api/explorations/{i}").json()
    assert client.get(f"/api/explorations/{k}/fragment").text == html


def _v2(**changes):
    d = copy.deepcopy(V2)
    d.update(changes)
    return d


def _deep(n):
    v = 0
    for _ in range(n):
        v = {"a": v}
    return v


@pytest.mark.parametrize("body,needle", [
    (b"not json", "JSON"),
    (b"\xff\xfe{}", "JSON"),
    (b"[1, 2]", "object"),
    (b"{}", "schema_version"),
    (json.dumps({"schema_version": True}).encode(), "schema_version"),
    (json.dumps(_v2(schema_version=99)).encode(), "schema_version"),
    (json.dumps(_v2(evil=1)).encode(), "evil"),
    (json.dumps(_v2(kind="../base")).encode(), "kind"),
    (json.dumps(_v2(kind="fragments/_save")).encode(), "kind"),
    (json.dumps(_v2(title="")).encode(), "title"),
    (json.dumps(_v2(title="x" * 201)).encode(), "200"),
    (json.dumps(_v2(inputs="prompt")).encode(), "inputs"),
    (json.dumps(_v2(profile={"fingerprint": "x"})).encode(), "name"),
    (json.dumps({"version": 1, "kind": "analysis"}).encode(), "title"),
    (json.dumps(_v2(result={"x": _deep(200)})).encode(), "deep"),
    (json.dumps(_v2()).replace('"v2 fixture', '"NaN-bearing').replace('"top_k": 3', '"top_k": NaN').encode(), "NaN"),
])
def test_import_rejects_malformed_documents(client, body, needle):
    r = client.post("/api/explorations/import", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422, (r.status_code, r.text[:300])
    assert needle.lower() in json.dumps(r.json()).lower()
    assert client.get("/api/explorations").json()["total"] == 0


def test_import_rejects_oversized_documents(tiny_engine, tmp_path):
    raw = json.dumps(V2).encode()
    with make_client(tiny_engine, store_url=f"sqlite:///{tmp_path}/s.db",
                     limits=Limits(max_exploration_bytes=len(raw) - 1)) as c:
        r = c.post("/api/explorations/import", content=raw, headers={"content-type": "application/json"})
        assert r.status_code == 422
        d = r.json()["detail"][0]
        assert d["loc"] == ["body"] and f"{len(raw) - 1} bytes (max_exploration_bytes)" in d["msg"]
        assert c.get("/api/explorations").json()["total"] == 0
    with make_client(tiny_engine, store_url=f"sqlite:///{tmp_path}/s.db", limits=Limits(max_exploration_bytes=len(raw))) as c:
        assert c.post("/api/explorations/import", content=raw, headers={"content-type": "application/json"}).status_code == 201


def test_import_over_the_body_limit_is_refused(client):
    big = _v2(result={"x": "y" * (client.app.state.settings.limits.max_body_bytes + 10)})
    r = client.post("/api/explorations/import", content=json.dumps(big).encode(), headers={"content-type": "application/json"})
    assert r.status_code in (413, 422)
    assert client.get("/api/explorations").json()["total"] == 0


# --- schema versions -------------------------------------------------------------------------------------

def test_v1_migration_is_exact():
    m = migrate(copy.deepcopy(V1))
    assert m["schema_version"] == 2
    assert m["inputs"] == V1["request"] and m["result"] == V1["response"]
    assert m["created_at"] == "2026-01-01T00:00:00+00:00"
    assert m["profile"] == {"name": "tiny", "hook_name": V1["hook_name"], "fingerprint": V1["sae_fingerprint"]}
    assert (m["title"], m["note"], m["kind"]) == (V1["title"], V1["note"], "analysis")
    assert migrate(copy.deepcopy(V2)) == V2


@pytest.mark.parametrize("fixture", [V1, V2], ids=["v1", "v2"])
def test_old_and_current_snapshots_render_from_the_store(client, fixture):
    """A document stored by an older app (as it was written) and one of the current schema both render."""
    i = client.app.state.store.put(copy.deepcopy(fixture))
    doc = client.get(f"/api/explorations/{i}").json()
    assert doc["schema_version"] == SCHEMA_VERSION
    expected = V1["response"] if fixture is V1 else V2["result"]
    assert doc["result"] == expected
    page = client.get(f"/e/{i}")
    assert page.status_code == 200
    text = page.text
    assert "fixture: Tom &amp; &lt;Jerry&gt;" in text and "<Jerry>" not in text
    html, generic = render_fragment("analysis", doc["inputs"], doc["result"])
    assert html in text
    assert not generic, "the analysis view can no longer draw this snapshot"
    for tok in expected["tokens"]:
        assert f"{tok['token_id']}" in html or tok["token"] in html
    # the stored document itself is never rewritten
    assert client.app.state.store.get(i) == fixture


def test_v1_import(client):
    r = client.post("/api/explorations/import", json=V1)
    assert r.status_code == 201
    doc = client.get(f"/api/explorations/{r.json()['id']}").json()
    assert doc["inputs"] == {"prompt": "Tom & <Jerry>", "top_k": 3} and doc["profile"]["name"] == "tiny"
