"""CSV export of a saved view's tables (/e/<id>/export/<table>.csv, app/viz/tables.py) without a browser: the
rows read back with Python's csv equal the stored JSON; a table the kind does not have is a 404 naming those it has."""
from __future__ import annotations

import csv
import io

import numpy as np
import pytest

from tests.api.test_explorations import live, save


def exported(text: str) -> str:
    """What a text cell reads back as: spreadsheet formula starts (= + - @ tab CR) escaped with a leading "'"."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


@pytest.mark.parametrize("kind,table", [("analysis", "features"), ("steering", "shift"), ("system_shift", "shift"),
                                        ("dose", "dose")])
def test_csv_equals_the_stored_json(client, tiny_engine, kind, table):
    ctx, _ = live(kind, tiny_engine, client.app.state.settings)
    eid = save(client, kind=kind, title="t", inputs=ctx["inputs"], result=ctx["result"])["id"]
    page = client.get(f"/e/{eid}")
    assert f'href="/e/{eid}/export/{table}.csv"' in page.text
    r = client.get(f"/e/{eid}/export/{table}.csv")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert f"exploration-{eid}-{table}.csv" in r.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(r.text)))
    res = client.get(f"/api/explorations/{eid}").json()["result"]
    if table == "features":
        want = [(t["position"], exported(t["token"]), sae, k + 1, i, v) for t in res["tokens"] for sae, s in t["saes"].items()
                for k, (i, v) in enumerate(zip(s["indices"], s["values"]))]
        got = [(int(x["position"]), x["token"], x["sae"], int(x["rank"]), int(x["feature"]), float(x["activation"]))
               for x in rows]
    elif table == "shift":
        src = res["shift"] if kind == "steering" else res["rows"]
        want = [(s["token_id"], exported(s["token"]), s["p_a"], s["p_b"], s["delta"], s["rank_a"], s["rank_b"]) for s in src]
        got = [(int(x["token_id"]), x["token"], float(x["p_a"]), float(x["p_b"]), float(x["delta"]), int(x["rank_a"]),
                int(x["rank_b"])) for x in rows]
    else:  # the chart's default set (moved most) and the promoted set, with their probabilities at each strength
        assert res["moved"] and res["promoted"]
        want = [("moved", m["token_id"], exported(m["token"]), m["spread"], *m["probs"]) for m in res["moved"]] + \
               [("promoted", p["token_id"], exported(p["token"]), p["logit_weight"], *p["probs"]) for p in res["promoted"]]
        got = [(x["set"], int(x["token_id"]), x["token"], float(x["spread"] or x["logit_weight"]),
                *[float(x[f"p@{s:g}"]) for s in res["strengths"]]) for x in rows]
        moved = np.array([[float(x[f"p@{s:g}"]) for s in res["strengths"]] for x in rows if x["set"] == "moved"])
        spread = np.array([float(x["spread"]) for x in rows if x["set"] == "moved"])
        np.testing.assert_allclose(spread, moved.max(1) - moved.min(1), rtol=1e-6)  # max - min, recomputed here
    assert got == want and want


def test_unknown_table_and_id_are_404(client, tiny_engine):
    ctx, _ = live("dose", tiny_engine, client.app.state.settings)
    eid = save(client, kind="dose", title="t", inputs=ctx["inputs"], result=ctx["result"])["id"]
    r = client.get(f"/e/{eid}/export/features.csv")
    assert r.status_code == 404 and "it has: dose" in r.json()["detail"]
    assert client.get("/e/" + "x" * 24 + "/export/dose.csv").status_code == 404


def test_a_result_not_in_the_view_shape_is_a_422_not_a_500(client, tiny_engine):
    """An imported dose document whose result lacks the dose fields: the CSV is refused in place, the page still opens."""
    ctx, _ = live("dose", tiny_engine, client.app.state.settings)
    eid = save(client, kind="dose", title="odd", inputs=ctx["inputs"], result=ctx["result"])["id"]
    doc = client.get(f"/e/{eid}/export").json()
    doc["result"] = {"strengths": "not a list"}  # what another server (or a hand) may have written
    imp = client.post("/api/explorations/import", json=doc)
    assert imp.status_code == 201, imp.text
    eid = imp.json()["id"]
    r = client.get(f"/e/{eid}/export/dose.csv")
    assert r.status_code == 422 and "not in the shape of a dose view" in r.json()["detail"]
    assert client.get(f"/e/{eid}").status_code == 200


def test_text_a_spreadsheet_would_run_is_escaped(client, tiny_engine):
    """An imported view whose tokens look like formulas: the CSV cell starts with an apostrophe; numbers (negative
    ones too) stay numbers."""
    ctx, _ = live("analysis", tiny_engine, client.app.state.settings)
    eid = save(client, kind="analysis", title="t", inputs=ctx["inputs"], result=ctx["result"])["id"]
    doc = client.get(f"/e/{eid}/export").json()
    tokens = ['=HYPERLINK("http://x","y")', "+1", "-based", "@SUM(A1)", "\tx", "plain", "a=b"]
    listed = [t for t in doc["result"]["tokens"] if any(s["values"] for s in t["saes"].values())]
    assert len(listed) >= 5
    for t, text in zip(listed, tokens):
        t["token"] = text
    pos, first = next((t["position"], s) for t in listed for s in t["saes"].values() if s["values"])
    first["values"][0] = -0.5
    eid = client.post("/api/explorations/import", json=doc).json()["id"]
    rows = list(csv.DictReader(io.StringIO(client.get(f"/e/{eid}/export/features.csv").text)))
    got = {int(r["position"]): r["token"] for r in rows}
    assert [got[t["position"]] for t in listed[:len(tokens)]] == \
        ["'" + t if t[0] in "=+-@\t" else t for t in tokens[:len(listed)]]
    assert next(r for r in rows if int(r["position"]) == pos)["activation"] == "-0.5"
