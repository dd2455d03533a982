"""/compare, /patching and /heads pages and fragments (tiny profile): what they show is the JSON's numbers, the
SAE row links to Analyze, errors name the field, leading spaces survive the form."""
from __future__ import annotations

import html as html_lib
import json
import re

CLEAN, CORRUPT = "The cat sat", "The dog sat"


def figure(html: str, div: str) -> dict:
    m = re.search(rf'<script type="application/json" data-figure="{div}">(.*?)</script>', html, re.S)
    assert m, div
    return json.loads(m.group(1))


def test_patching_fragment_draws_the_json_grid(tiny_client):
    form = {"clean": CLEAN, "corrupt": CORRUPT, "answer": "a", "wrong": "e", "site": "resid_pre",
            "features": "on", "attribution": "on"}
    r = tiny_client.post("/fragments/patching", data=form)
    assert r.status_code == 200, r.text
    body = tiny_client.post("/api/patching", json={k: v for k, v in form.items() if k not in ("features", "attribution")}).json()
    fig = figure(r.text, "patch-exact-fig")
    assert fig["data"][0]["z"] == body["grid"]
    assert len(fig["data"][0]["x"]) == len(CLEAN) and fig["data"][0]["y"] == [f"L{x}" for x in body["layers"]]
    links = fig["data"][0]["customdata"]
    row = body["layers"].index(body["sae_layer"])
    assert all(x.startswith("/?prompt=The+cat+sat") for x in links[row])  # the SAE's row opens Analyze
    assert all(x == "" for i, r_ in enumerate(links) if i != row for x in r_)
    assert figure(r.text, "patch-attr-fig")["data"][0]["z"] == body["attribution_grid"]
    assert f"{body['correlation']:.3f}" in r.text and 'class="save-box"' in r.text
    assert f"{body['ld_clean']:+.3f}" in r.text and 'id="patch-features"' in r.text
    assert r.headers.get("HX-Push-Url", "").startswith("/patching?clean=")


def test_patching_errors_name_the_field_and_keep_the_leading_space(tiny_client):
    r = tiny_client.post("/fragments/patching", data={"clean": CLEAN, "corrupt": "The bird sat", "answer": "a", "wrong": "e"})
    assert r.status_code == 422 and "corrupt" in r.text and "same length" in r.text
    r = tiny_client.post("/fragments/patching", data={"clean": CLEAN, "corrupt": CORRUPT, "answer": " a", "wrong": "e"})
    assert r.status_code == 422 and "answer: ' a' is 2 tokens" in html_lib.unescape(r.text)  # the space kept


def test_pages_open_from_their_address(tiny_client):
    r = tiny_client.get("/patching", params={"clean": CLEAN, "corrupt": CORRUPT, "answer": "a", "wrong": "e",
                                             "features": "false", "attribution": "false"})
    assert r.status_code == 200 and 'data-figure="patch-exact-fig"' in r.text and "patch-attr-fig" not in r.text
    r = tiny_client.get("/compare", params={"prompt_a": CLEAN, "prompt_b": CORRUPT, "tokens": '["a", "e"]'})
    assert r.status_code == 200 and 'id="compare"' in r.text and 'value="a"' in r.text
    r = tiny_client.get("/heads", params={"seq_len": "6", "n_seqs": "2"})
    assert r.status_code == 200 and 'id="heads-table"' in r.text
    for path in ("/compare", "/patching", "/heads"):
        assert tiny_client.get(path).status_code == 200


def test_compare_fragment_shows_both_sides(tiny_client):
    r = tiny_client.post("/fragments/compare", data={"prompt_a": CLEAN, "prompt_b": CORRUPT, "answer": "a", "wrong": "e"})
    assert r.status_code == 200, r.text
    body = tiny_client.post("/api/compare", json={"prompt_a": CLEAN, "prompt_b": CORRUPT, "tokens": ["a", "e"]}).json()
    assert f"{body['logit_diff_a']:+.3f}" in r.text and f"{body['logit_diff_b']:+.3f}" in r.text
    assert f"{body['logit_diff_a'] - body['logit_diff_b']:+.3f}" in r.text
    for f in body["at_position"]:
        assert f'href="/features/{f["sae"]}/{f["index"]}"' in r.text


def test_heads_table_has_every_head_with_the_json_scores(tiny_client):
    r = tiny_client.post("/fragments/heads", data={"seq_len": "6", "n_seqs": "2"})
    assert r.status_code == 200, r.text
    body = tiny_client.post("/api/heads", json={"seq_len": 6, "n_seqs": 2}).json()
    rows = re.findall(r"<tr><td class=\"num\">(\d+)</td><td class=\"num\">(\d+)</td>(.*?)</tr>", r.text, re.S)
    assert len(rows) == body["n_layers"] * body["n_heads"]
    layer, head, cells = rows[-1]
    vals = [float(v) for v in re.findall(r">([-\d.]+)</td>", cells)]
    want = [body["scores"][k][int(layer)][int(head)] for k in ("previous_token", "induction", "duplicate_token", "first_position")]
    assert vals == [round(w, 3) for w in want]
    assert figure(r.text, "heads-induction-fig")["data"][0]["z"] == body["scores"]["induction"]


def test_saved_patching_and_heads_export_csv(tiny_client):
    """/e/<id>/export/patching_grid.csv and heads.csv read back as the stored JSON's grids."""
    import csv
    import io

    for kind, req, table in (("patching", {"clean": CLEAN, "corrupt": CORRUPT, "answer": "a", "wrong": "e"}, "patching_grid"),
                             ("heads", {"seq_len": 6, "n_seqs": 2}, "heads")):
        res = tiny_client.post(f"/api/{kind}", json=req).json()
        saved = tiny_client.post("/api/explorations", json={"kind": kind, "title": "t", "inputs": req, "result": res})
        assert saved.status_code in (200, 201), saved.text
        eid = saved.json()["id"]
        assert f'href="/e/{eid}/export/{table}.csv"' in tiny_client.get(f"/e/{eid}").text
        rows = list(csv.DictReader(io.StringIO(tiny_client.get(f"/e/{eid}/export/{table}.csv").text)))
        if kind == "patching":
            assert len(rows) == len(res["layers"]) * len(CLEAN)
            for x in rows:
                i, p = res["layers"].index(int(x["layer"])), int(x["position"])
                assert float(x["exact"]) == res["grid"][i][p] and float(x["attribution"]) == res["attribution_grid"][i][p]
                assert x["token"] == CLEAN[p]
        else:
            assert len(rows) == res["n_layers"] * res["n_heads"]
            for x in rows:
                for k in res["scores"]:
                    assert float(x[k]) == res["scores"][k][int(x["layer"])][int(x["head"])]
