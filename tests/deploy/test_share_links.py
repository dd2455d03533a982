"""Unlisted share links (owner cookie) and server-signed results (app/explorations/provenance.py), through the app, tiny profile.

Two TestClients on one store stand for two browsers (each keeps its own cookies)."""
from __future__ import annotations

import copy
import json

import pytest

from app.explorations.provenance import canonical, sign
from app.http.auth import OWNER_COOKIE
from tests.conftest import make_client

INPUTS = {"prompt": "abc def", "top_k": 2}


@pytest.fixture()
def two(tiny_engine, tmp_path):
    url = f"sqlite:///{tmp_path}/shared.db"
    with make_client(tiny_engine, store_url=url, admin_token="op-secret") as a, \
            make_client(tiny_engine, store_url=url, admin_token="op-secret") as b:
        yield a, b


def save(client, **body):
    r = client.post("/api/explorations", json=body)
    assert r.status_code == 201, r.text
    return r.json()


def test_owner_cookie_is_httponly_lax_and_stable(two):
    a, _ = two
    r = a.get("/health")
    cookie = r.headers["set-cookie"]
    assert cookie.startswith(f"{OWNER_COOKIE}=") and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert "set-cookie" not in a.get("/health").headers  # kept: not reissued


def test_what_a_saved_is_never_listed_to_b_yet_b_opens_the_link(two):
    a, b = two
    result = a.post("/api/analyze", json=INPUTS).json()
    mine = [save(a, kind="analysis", title=f"a-secret-{i}", inputs=INPUTS, result=result)["id"] for i in range(2)]
    theirs = save(b, kind="analysis", title="b-own", inputs=INPUTS, result=result)["id"]
    la, lb = a.get("/api/explorations").json(), b.get("/api/explorations").json()
    assert {i["id"] for i in la["items"]} == set(mine) and la["total"] == 2
    assert [i["id"] for i in lb["items"]] == [theirs] and lb["total"] == 1
    page_b = b.get("/e").text
    assert "a-secret" not in page_b and "b-own" in page_b and not any(m in page_b for m in mine)
    assert "a-secret-0" in a.get("/e").text
    for m in mine:  # the link alone opens it
        assert b.get(f"/e/{m}").status_code == 200 and "a-secret" in b.get(f"/e/{m}").text
        assert b.get(f"/api/explorations/{m}").json()["title"].startswith("a-secret")
    # kind filter and paging stay within the owner's
    assert b.get("/api/explorations", params={"kind": "analysis"}).json()["total"] == 1
    # a client without cookies lists nothing
    b.cookies.clear()
    assert b.get("/api/explorations").json()["total"] == 0


def test_operator_listing_needs_the_admin_token(two):
    a, b = two
    result = a.post("/api/analyze", json=INPUTS).json()
    ids = {save(c, kind="analysis", title="x", inputs=INPUTS, result=result)["id"] for c in (a, b)}
    assert a.get("/api/explorations", params={"scope": "all"}).status_code == 403
    assert a.get("/api/explorations", params={"scope": "all"}, headers={"X-Admin-Token": "wrong"}).status_code == 403
    allr = b.get("/api/explorations", params={"scope": "all"}, headers={"X-Admin-Token": "op-secret"}).json()
    assert {i["id"] for i in allr["items"]} == ids and allr["total"] == 2


def test_no_operator_listing_without_an_admin_token(tiny_client):
    r = tiny_client.get("/api/explorations", params={"scope": "all"}, headers={"X-Admin-Token": ""})
    assert r.status_code == 403


def test_a_computed_result_is_signed_and_a_forged_one_never_shown_as_computed(two):
    a, b = two
    result = a.post("/api/analyze", json=INPUTS).json()
    ok = save(a, kind="analysis", title="real", inputs=INPUTS, result=result)
    assert ok["computed"] is True  # recomputed on save and equal: signed
    forged = copy.deepcopy(result)
    forged["tokens"][1]["saes"]["fine"]["values"][0] += 5.0
    bad = save(a, kind="analysis", title="forged", inputs=INPUTS, result=forged)
    assert bad["computed"] is False
    # a client may not bring its own signature
    assert a.post("/api/explorations", json={"kind": "analysis", "title": "x", "inputs": INPUTS, "result": forged,
                                             "signature": "0" * 64}).status_code == 422
    for c in (a, b):  # on any replica of the store
        assert c.get(f"/api/explorations/{ok['id']}").headers["x-asn-provenance"] == "computed"
        page = c.get(f"/e/{ok['id']}").text
        assert "not computed here" not in page
        for i in (bad["id"],):
            assert c.get(f"/api/explorations/{i}").headers["x-asn-provenance"] == "imported"
            page = c.get(f"/e/{i}").text
            assert "Imported — not computed here" in page and 'class="rerun-button"' in page
    # import is never computed here, even of this server's own export
    exported = a.get(f"/e/{ok['id']}/export").content
    imp = a.post("/api/explorations/import", content=exported, headers={"content-type": "application/json"})
    assert imp.status_code == 201 and imp.json()["computed"] is False
    assert "Imported — not computed here" in a.get(imp.json()["url"]).text
    assert imp.json()["id"] in {i["id"] for i in a.get("/api/explorations").json()["items"]}  # listed to its importer


def test_a_result_shown_with_a_save_form_is_remembered_and_saved_as_computed(two):
    import html as h
    import re

    a, _ = two
    page = a.post("/fragments/analysis", data=INPUTS).text
    fields = {m.group(1): h.unescape(m.group(2)) for m in re.finditer(r'<input type="hidden" name="(\w+)" value="([^"]*)"', page)}
    assert {"kind", "inputs", "result"} <= set(fields) and "signature" not in fields  # no signature travels in the form
    fields = {k: fields[k] for k in ("kind", "inputs", "result")}
    key = a.app.state.store.shared_secret("result-signing").encode()
    inputs, result = json.loads(fields["inputs"]), json.loads(fields["result"])
    assert sign(key, "analysis", inputs, result) in a.app.state.computed_results  # remembered when shown
    r = a.post("/e/save", data={**fields, "title": "form"}, headers={"hx-request": "true"})
    assert r.status_code == 201, r.text
    eid = re.search(r'href="/e/([A-Za-z0-9_-]+)"', r.text).group(1)
    assert a.get(f"/api/explorations/{eid}").headers["x-asn-provenance"] == "computed"
    # the same form with one number changed: neither remembered nor what recomputation gives
    forged = copy.deepcopy(result)
    forged["tokens"][1]["saes"]["fine"]["values"][0] += 5.0
    r = a.post("/e/save", data={**fields, "result": json.dumps(forged), "title": "tampered"}, headers={"hx-request": "true"})
    assert r.status_code == 201, r.text
    eid = re.search(r'href="/e/([A-Za-z0-9_-]+)"', r.text).group(1)
    assert a.get(f"/api/explorations/{eid}").headers["x-asn-provenance"] == "imported"
    assert "Imported — not computed here" in a.get(f"/e/{eid}").text


def test_signature_is_over_sorted_canonical_json():
    assert canonical("k", {"b": 1, "a": [1.5]}, {"z": "é"}) == \
        '{"inputs":{"a":[1.5],"b":1},"kind":"k","result":{"z":"é"}}'.encode()
    assert sign(b"k1", "k", {}, {}) != sign(b"k2", "k", {}, {})
