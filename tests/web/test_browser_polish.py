"""Issue 12 items 12-16 in a real browser (tiny profile): /docs works offline, the Generate form matches Analyze,
favicon, tab titles, Esc, imports marked, links between views, CSV export of every table."""
from __future__ import annotations

import csv
import io
import json

import pytest

from tests.conftest import wait_js
from tests.web.browser import BROWSER_MARKS, TIMEOUT_MS, VIEWPORTS, P

pytestmark = BROWSER_MARKS
PROMPT = "The capital of France is Paris"


@pytest.fixture()
def page(webgl_browser):
    pg = webgl_browser.new_page(viewport=VIEWPORTS["desktop"])
    pg.set_default_timeout(TIMEOUT_MS)
    yield pg
    pg.close()


def test_docs_offline_lists_every_operation(atlas_server, page):
    asked = []
    page.on("request", lambda r: asked.append(r.url))
    resp = page.goto(atlas_server + "/docs")
    assert "cdn" not in resp.headers["content-security-policy"] and "unsafe-inline" not in \
        resp.headers["content-security-policy"].split("script-src")[1].split(";")[0]
    spec = page.request.get(atlas_server + "/openapi.json").json()
    n_ops = sum(1 for ops in spec["paths"].values() for m in ops if m in ("get", "post", "put", "delete", "patch"))
    wait_js(page, f"document.querySelectorAll('.opblock').length === {n_ops}", 120)
    paths = page.locator(".opblock .opblock-summary-path").evaluate_all("els => els.map(e => e.dataset.path)")
    assert sorted(set(paths)) == sorted(spec["paths"])
    assert asked and all(u.startswith(atlas_server + "/") for u in asked), [u for u in asked if not u.startswith(atlas_server)]
    assert page.goto(atlas_server + "/redoc").url == atlas_server + "/docs"


def test_favicon_title_and_profile_text(atlas_server, page):
    page.goto(atlas_server + "/")
    href = page.get_attribute("link[rel=icon]", "href")
    r = page.request.get(atlas_server + href)
    assert r.status == 200 and r.headers["content-type"].startswith("image/svg+xml") and b"<svg" in r.body()
    for width in (1440, 390):  # the header's profile text is whole, never clipped
        page.set_viewport_size({"width": width, "height": 800})
        cut = page.evaluate("(() => { const e = document.querySelector('header.top .profile');"
                            " return e.scrollWidth > e.clientWidth + 1 || e.scrollHeight > e.clientHeight + 1; })()")
        assert not cut, width
    # the title follows the view after an htmx request (the address changes, the page does not reload)
    page.set_viewport_size(VIEWPORTS["desktop"])
    page.fill("#prompt", PROMPT)
    page.click("#analyze-btn")
    wait_js(page, f"document.title === {json.dumps(PROMPT + ' · Analyze · Activation Space Navigator')}")
    page.goto(atlas_server + "/generate?max_new_tokens=4")
    page.fill("#prompt", "Hello there")
    page.click("#compare-btn")
    wait_js(page, "document.title === 'Steered vs unsteered · Hello there · Generate & steer · Activation Space Navigator'")
    page.fill("#strengths", "-2, 2")
    page.click("#add-feature")
    page.locator("#feature-rows .frow .f-index").last.fill("3")
    page.click("#dose-btn")
    wait_js(page, "document.title.startsWith('Dose-response · Hello there · ')")
    # the server says each title (a fragment's <title>); after Back htmx restores the entry's title with its content
    page.go_back()
    wait_js(page, "document.title === 'Steered vs unsteered · Hello there · Generate & steer · Activation Space Navigator'")
    assert "view=steer" in page.url
    page.go_back()
    wait_js(page, "document.title === 'Generate & steer · Activation Space Navigator'")


def test_generate_form_reads_like_analyze(atlas_server, page):
    styles = "(() => { const s = getComputedStyle; const ta = document.querySelector('#prompt');" \
             " const sm = document.querySelector('details.field > summary');" \
             " return {font: s(ta).fontFamily, size: s(ta).fontSize, summary: s(sm).display, marker: s(sm, '::marker').content," \
             " chat: document.querySelectorAll('select[name=chat] option').length}; })()"
    page.goto(atlas_server + "/")
    analyze = page.evaluate(styles)
    page.goto(atlas_server + "/generate")
    generate = page.evaluate(styles)
    assert generate == analyze and analyze["summary"] == "list-item" and analyze["chat"] == 3
    assert "monospace" in analyze["font"]
    btn = page.evaluate("(() => { const s = getComputedStyle(document.querySelector('#add-feature'));"
                        " return [s.backgroundColor, s.borderTopLeftRadius, s.borderTopWidth]; })()")
    assert btn == ["rgb(255, 255, 255)", "6px", "1px"]


def test_esc_closes_the_feature_card(atlas_server, page):
    page.goto(f"{atlas_server}/?prompt={P}&feature=coarse:3")
    page.wait_for_selector("#fcard")
    assert page.locator(".strip .tok.on").count() > 0  # the card's feature colours the tokens it fires on
    page.locator("#strip").focus()
    page.keyboard.press("Escape")
    wait_js(page, "!document.querySelector('#fcard')")
    assert page.locator(".feat.cur").count() == 0


def test_an_import_is_marked_in_the_list(atlas_server, page, snapshots):
    page.goto(atlas_server + "/e")  # this browser's owner cookie: the list shows what it saved
    doc = page.request.get(atlas_server + "/api/explorations/" + snapshots["analysis"].rsplit("/", 1)[1]).json()
    post = lambda url, body: page.request.post(atlas_server + url, data=json.dumps(body),  # noqa: E731
                                               headers={"content-type": "application/json"})
    r = post("/api/explorations", {"kind": "analysis", "title": "mine", "inputs": doc["inputs"], "result": doc["result"]})
    assert r.status == 201, r.text()
    own = r.json()["id"]
    r = post("/api/explorations/import", page.request.get(f"{atlas_server}/e/{own}/export").json())
    assert r.status == 201, r.text()
    imported = r.json()["id"]
    page.goto(atlas_server + "/e?kind=analysis")
    row_of = lambda i: page.locator(f"table.explorations tr:has(a[href='/e/{i}'])")  # noqa: E731
    assert row_of(own).count() == 1 and row_of(imported).count() == 1  # same title: the badge tells them apart
    assert row_of(imported).locator(".badge.imported").count() == 1
    assert row_of(own).locator(".badge.imported").count() == 0


def test_discover_figures_and_go_table_open_feature_cards(atlas_server, page, snapshots):
    page.goto(atlas_server + snapshots["discovery"])
    page.wait_for_selector("table.gonogo-table", state="attached")
    coarse = page.locator("table.gonogo-table a.feature-link[href^='/features/coarse/']")
    assert coarse.count() > 0
    for fig in ("graph", "heatmap"):
        sel = f"[id^='disc-{fig}-']"
        div = page.locator(sel).first
        wait_js(page, f"document.querySelector({sel!r}) && document.querySelector({sel!r}).data")
        href = div.evaluate("gd => { const t = gd.data.find(t => t.meta === 'links');"
                            " const c = Array.isArray(t.customdata[0]) ? t.customdata[0][0] : t.customdata[0];"
                            " gd.emit('plotly_click', {points: [{data: t, customdata: c}]}); return c; }")
        assert href.startswith("/features/")
        page.wait_for_url(atlas_server + href)
        assert page.locator(".atlas").count() > 0 or page.title().startswith(href.split("/")[2])
        page.goto(atlas_server + snapshots["discovery"])


def test_generated_text_opens_in_analyze(atlas_server, page, snapshots):
    doc = page.request.get(atlas_server + "/api/explorations/" + snapshots["generation"].rsplit("/", 1)[1]).json()
    page.goto(atlas_server + snapshots["generation"])
    page.click(".saved-fragment a.analyze-link")
    page.wait_for_selector(".strip .tok")
    gen = doc["result"]["generation"]
    # the sequence the model read (the prompt as rendered) and wrote, as raw text
    assert page.input_value("#prompt") == doc["result"]["prompt_text"] + gen["text"]
    assert page.input_value("select[name=chat]") == "off"  # token ids: test_generate_pages (open_in_analyze)


def test_logit_lens_marks_the_sae_layer(atlas_server, page):
    page.goto(f"{atlas_server}/?prompt={P}&lens=1")
    wait_js(page, "document.getElementById('lens-fig') && document.getElementById('lens-fig').layout")
    ticks, shapes = page.evaluate("(() => { const l = document.getElementById('lens-fig').layout;"
                                  " return [l.yaxis.ticktext, (l.shapes || []).map(s => [s.y0, s.y1])]; })()")
    row = ticks.index("SAE ▸ 1")  # tiny: blocks.1.hook_resid_post is layer 1's output
    assert [t for t in ticks if t.startswith("SAE")] == ["SAE ▸ 1"] and shapes == [[row - 0.5, row + 0.5]]


def exported(text: str) -> str:
    """What a text cell reads back as: spreadsheet formula starts (= + - @ tab CR) escaped with a leading "'"."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def rows_of(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


@pytest.mark.parametrize("kind,table", [("analysis", "features"), ("discovery", "discovery"), ("steering", "shift"),
                                        ("system_shift", "shift"), ("dose", "dose")])
def test_csv_export_matches_the_json(atlas_server, page, snapshots, kind, table):
    eid = snapshots[kind].rsplit("/", 1)[1]
    page.goto(atlas_server + snapshots[kind])
    link = page.locator(f".snapshot-actions a[href='/e/{eid}/export/{table}.csv']")
    assert link.count() == 1 and page.locator(".snapshot-actions a.export-link").count() == 1
    with page.expect_download() as dl:
        link.click()
    rows = rows_of(open(dl.value.path(), encoding="utf-8").read())
    res = page.request.get(f"{atlas_server}/api/explorations/{eid}").json()["result"]
    if table == "features":
        want = [(t["position"], sae, i, v) for t in res["tokens"] for sae, s in t["saes"].items()
                for i, v in zip(s["indices"], s["values"])]
        got = [(int(r["position"]), r["sae"], int(r["feature"]), float(r["activation"])) for r in rows]
        assert got == want and all(r["token"] == exported(res["tokens"][int(r["position"])]["token"]) for r in rows)
    elif table == "discovery":
        want = [(sae, r["index"], r["selectivity"], r["fire_concept"]) for sae, t in res["tables"].items() for r in t]
        got = [(r["sae"], int(r["index"]), float(r["selectivity"]), float(r["fire_concept"])) for r in rows]
        assert got == want and want
    elif table == "shift":
        src = res["shift"] if kind == "steering" else res["rows"]
        assert [(int(r["token_id"]), r["token"], float(r["p_a"]), float(r["p_b"]), int(r["rank_b"])) for r in rows] == \
            [(r["token_id"], exported(r["token"]), r["p_a"], r["p_b"], r["rank_b"]) for r in src] and src
    else:
        strengths = res["strengths"]
        assert list(rows[0])[5:] == [f"p@{s:g}" for s in strengths]
        for name in ("moved", "promoted"):  # the chart's default set, then the decoder-promoted one
            assert [[float(r[f"p@{s:g}"]) for s in strengths] for r in rows if r["set"] == name] == \
                [p["probs"] for p in res[name]] and res[name]
    assert page.request.get(f"{atlas_server}/e/{eid}/export/nothing.csv").status == 404


def test_streamed_generation_opens_in_analyze(atlas_server, page):
    page.goto(atlas_server + "/generate?max_new_tokens=5")
    page.fill("#prompt", "Hello there")
    page.click("#stream-btn")
    page.wait_for_selector("#stream-links a.analyze-link")
    text = page.inner_text("#stream-out")
    assert page.title() == "Generation · Hello there · Generate & steer · Activation Space Navigator"
    page.click("#stream-links a.analyze-link")
    page.wait_for_selector(".strip .tok")
    gen = page.request.post(atlas_server + "/api/generate", data={"prompt": "Hello there", "max_new_tokens": 5}).json()["generation"]
    assert text == "".join(t["text"] for t in gen["tokens"])  # each token as shown (a byte token as <0xXX>)
    # the link analyses the text itself (the decoded sequence): chat auto without a system prompt, the raw prompt
    assert page.input_value("#prompt") == "Hello there" + gen["text"]
    assert page.input_value("select[name=chat]") == "off"
