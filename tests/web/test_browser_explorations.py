"""Saved explorations in a real browser: save a steering comparison, open the link in a fresh browser
context (no cookies, no storage) and find the same completions; the list page and the Copy link."""
from __future__ import annotations

import pytest

from tests.conftest import serve_engine
from tests.web.browser import ARTIFACTS, BROWSER_MARKS, api, compare_steering, fresh_page, page_errors, save_from_box

pytestmark = BROWSER_MARKS
PROMPT = "Once upon a time"


@pytest.fixture(scope="module")
def server(tiny_engine, tmp_path_factory):
    """uvicorn on 127.0.0.1 with its own store (not data/explorations.db)."""
    db = tmp_path_factory.mktemp("store") / "e.db"
    with serve_engine(tiny_engine, store_url=f"sqlite:///{db}") as url:
        yield url


def columns(page) -> tuple[str, str]:
    return (page.locator("#col-unsteered .gen-text").inner_text(), page.locator("#col-steered .gen-text").inner_text())


def looks(page) -> tuple:
    """What the eye sees of the comparison: columns side by side, and the colour of a marked token."""
    a, b = page.locator("#col-unsteered").bounding_box(), page.locator("#col-steered").bounding_box()
    mark = page.locator("#col-steered .gtok.div").first.evaluate("e => getComputedStyle(e).backgroundColor")
    return (a["y"] == b["y"] and b["x"] > a["x"] + a["width"] - 1, mark)


def test_save_steering_comparison_and_open_it_elsewhere(server, browser):
    ARTIFACTS.mkdir(exist_ok=True)
    ctx_a, page = fresh_page(browser, viewport={"width": 1300, "height": 1100})
    errors = page_errors(page)
    compare_steering(page, f"{server}/generate?prompt={PROMPT.replace(' ', '+')}&max_new_tokens=8&seed=11&f=coarse:5:add:40")
    unsteered, steered = columns(page)
    assert unsteered and steered and unsteered != steered  # strength 40 changes the tiny model's completion
    # the completions shown are the JSON API's (an independent path)
    want = api(page, "POST", f"{server}/api/steer", {"prompt": PROMPT, "max_new_tokens": 8, "seed": 11,
                                                     "steering": [{"sae": "coarse", "index": 5, "mode": "add", "value": 40}]})
    def shown(g):  # each token as shown (app.engine.tokens: a byte token as <0xXX>)
        return "".join(t["text"] for t in g["tokens"]).replace("\n", "")
    assert steered.replace("↵", "").replace("\n", "") == shown(want["steered"])
    assert unsteered.replace("↵", "").replace("\n", "") == shown(want["unsteered"])

    marks = page.locator("#steer-out .gtok.div").count()
    look = looks(page)
    assert page.locator("#col-steered .gtok.div").count() == sum(want["diverged"][:len(want["steered"]["tokens"])])
    box = page.locator("#steer-out form.save-box")
    save_from_box(page, box, "Feature coarse#5 at +40 <b>bold?</b>", note="steering comparison, seed 11")
    link = box.locator(".save-status a.saved-link")
    link.wait_for()
    href = link.get_attribute("href")
    share = box.locator(".save-status input.saved-url").input_value()
    assert share == f"{server}{href}" and href.startswith("/e/") and len(href) >= 3 + 22
    page.screenshot(path=str(ARTIFACTS / "explorations-save.png"), full_page=True)
    ctx_a.close()

    ctx_b, other = fresh_page(browser, viewport={"width": 1300, "height": 1100})
    other.on("pageerror", lambda e: errors.append(str(e)))
    r = other.goto(share)
    assert r.status == 200
    assert columns(other) == (unsteered, steered)
    assert other.locator("h1.exploration-title").inner_text() == "Feature coarse#5 at +40 <b>bold?</b>"
    assert other.locator("h1.exploration-title b").count() == 0  # shown as text, not markup
    assert other.locator("#saved-fragment .gtok.div").count() == marks
    assert looks(other) == look  # styled as on its own page (the view's stylesheet is loaded)
    assert not other.locator("#saved-fragment form.save-box").is_visible()
    assert other.locator(".export-link").get_attribute("href") == f"{href}/export"
    other.screenshot(path=str(ARTIFACTS / "explorations-opened.png"), full_page=True)

    # links are unlisted (issue 18): this other browser's list page does not show what the first one saved
    other.goto(f"{server}/e")
    assert other.locator("table.explorations a", has_text="Feature coarse#5 at +40").count() == 0
    other.screenshot(path=str(ARTIFACTS / "explorations-list.png"), full_page=True)
    ctx_b.close()
    assert not errors, errors


def test_unknown_link_is_a_404_page(server, browser):
    ctx, page = fresh_page(browser)
    r = page.goto(f"{server}/e/AAAAAAAAAAAAAAAAAAAAAAAAAA")
    assert r.status == 404 and "No such exploration" in page.locator("h1").inner_text()
    ctx.close()


def test_rerun_and_fork_an_analysis_snapshot(server, browser):
    ctx, page = fresh_page(browser, viewport={"width": 1300, "height": 1000})
    errors = page_errors(page)
    inputs = {"prompt": "The cat sat on the mat", "top_k": 4}
    result = api(page, "POST", f"{server}/api/analyze", inputs)
    saved = api(page, "POST", f"{server}/api/explorations", {"kind": "analysis", "title": "cat", "inputs": inputs, "result": result})
    page.goto(server + saved["url"])
    with page.expect_response(lambda r: r.url.endswith("/rerun")):
        page.click("button.rerun-button")
    verdict = page.locator("#rerun .rerun-verdict")
    verdict.wait_for()
    assert "identical to the saved one" in verdict.inner_text() or "up to float rounding" in verdict.inner_text()
    assert "Live profile is the saved one" in page.locator("#rerun").inner_text()
    page.screenshot(path=str(ARTIFACTS / "explorations-rerun.png"), full_page=True)
    page.click("a.fork-link")
    page.wait_for_url("**/?prompt=The+cat+sat+on+the+mat*")
    assert page.locator("textarea[name=prompt]").input_value() == "The cat sat on the mat"
    ctx.close()
    assert not errors, errors


def test_double_click_on_save_saves_once(server, browser):
    """Issue 25 item 4: a double-click on Save makes one exploration, and a later click lands on the same link."""
    ctx, page = fresh_page(browser, viewport={"width": 1300, "height": 1000})
    errors, posts = page_errors(page), []
    page.on("request", lambda r: posts.append(r.url) if r.method == "POST" and r.url.endswith("/e/save") else None)
    page.goto(f"{server}/?prompt=Double+click+me&lens=0")
    box = page.locator("form.save-box").first
    box.locator("input[name=title]").fill("double click")
    with page.expect_response(lambda r: r.url.endswith("/e/save")):
        box.locator("button.save-button").dblclick()
    link = box.locator(".save-status a.saved-link")
    link.wait_for()
    page.wait_for_load_state("networkidle")
    first = link.get_attribute("href")
    mine = api(page, "GET", f"{server}/api/explorations")["items"]  # this browser's saves (its owner cookie)
    assert [i["url"] for i in mine if i["title"] == "double click"] == [first], (posts, mine)
    # clicking Save again: the same link, nothing new stored
    with page.expect_response(lambda r: r.url.endswith("/e/save")) as again:
        box.locator("button.save-button").click()
    assert again.value.status == 200
    page.wait_for_function("document.querySelector('form.save-box .save-status').textContent.includes('Already saved')")
    assert box.locator(".save-status a.saved-link").get_attribute("href") == first
    mine = api(page, "GET", f"{server}/api/explorations")["items"]
    assert [i["url"] for i in mine if i["title"] == "double click"] == [first]
    page.screenshot(path=str(ARTIFACTS / "explorations-save-twice.png"), full_page=True)
    ctx.close()
    assert not errors, errors
