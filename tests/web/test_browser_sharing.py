"""Sharing and state in a real browser (Playwright + Debian chromium, live uvicorn, tiny profile): reload keeps
steer/dose results, a streamed generation can be saved, Back keeps Analyze's form in step with its result, and a
saved or deep-linked analysis opens its feature card at the token where the feature peaks."""
from __future__ import annotations

import json
import time
from urllib.parse import quote

import pytest

from tests.conftest import wait_js
from tests.web.browser import ARTIFACTS, BROWSER_MARKS, VIEWPORTS, api, compare_steering, new_page, page_errors

pytestmark = BROWSER_MARKS
PROMPT = "Once upon a time"
IDLE = "!document.querySelector('.htmx-request')"


def settle(page):
    """htmx has nothing in flight, and the handlers that ran after the last swap are done."""
    wait_js(page, IDLE)
    time.sleep(0.3)
    wait_js(page, IDLE)


@pytest.mark.parametrize("vp", VIEWPORTS)
def test_reload_keeps_steer_and_dose_results(live_server, browser, vp):
    page = new_page(browser, viewport=VIEWPORTS[vp])
    errors = page_errors(page)
    compare_steering(page, f"{live_server}/generate?prompt={quote(PROMPT)}&max_new_tokens=4&f=coarse:5:add:8")
    steered = page.locator("#col-steered .gen-text").inner_text()
    settle(page)
    assert "view=steer" in page.url
    page.reload()
    page.wait_for_selector("#col-steered", timeout=30_000)
    assert page.locator("#col-steered .gen-text").inner_text() == steered
    page.fill("#strengths", "-8, 0, 8")
    with page.expect_response(lambda r: "/fragments/dose" in r.url):
        page.click("#dose-btn")
    page.wait_for_selector("table.dose")
    settle(page)
    assert "view=dose" in page.url
    page.reload()
    page.wait_for_selector("table.dose", timeout=30_000)
    assert page.locator("table.dose tbody tr").count() == 3
    assert errors == []
    page.close()


def test_streamed_generation_can_be_saved(live_server, browser):
    page = new_page(browser, viewport=VIEWPORTS["desktop"])
    page.goto(f"{live_server}/generate?prompt={quote(PROMPT)}&max_new_tokens=6")
    page.click("#stream-btn")
    page.wait_for_selector("#stream-save .save-button")
    wait_js(page, "document.querySelector('#stream-status').textContent.includes('tokens ·')")
    streamed = page.locator("#stream-out .gtok").all_text_contents()
    assert len(streamed) == 6
    page.fill("#stream-save input[name=title]", "streamed")
    page.click("#stream-save .save-button")
    link = page.wait_for_selector("#stream-save .saved-link").get_attribute("href")
    doc = api(page, "GET", f"{live_server}/api/explorations/{link.rsplit('/', 1)[1]}")
    assert doc["kind"] == "generation" and doc["title"] == "streamed"
    assert [t["text"] for t in doc["result"]["generation"]["tokens"]] == streamed
    page.goto(live_server + link)
    page.wait_for_selector(".gen-result")
    assert page.locator(".gen-result .gtok").count() == 6
    assert page.locator(".provenance-warning").count() == 0  # computed here
    page.close()


def analysed(page, prompt: str, system: str | None = None) -> str:
    """Analyse from the form; wait until the result shows this prompt."""
    return f"(() => {{ const a = document.querySelector('#analysis'); if (!a) return false; const i = JSON.parse(a.dataset.inputs); " \
           f"return i.prompt === {json.dumps(prompt)} && (i.system_prompt || null) === {json.dumps(system)}; }})()"


def test_back_keeps_the_analyze_form_in_step_with_the_result(live_server, browser):
    page = new_page(browser, viewport=VIEWPORTS["desktop"])
    page.goto(live_server + "/")
    page.fill("#prompt", "First prompt")
    page.click("#analyze-btn")
    wait_js(page, analysed(page, "First prompt"))
    settle(page)
    page.fill("#prompt", "Second prompt")
    page.click("#analyze-form details summary")
    page.fill("#system_prompt", "You are a pirate.")
    page.click("#analyze-btn")
    wait_js(page, analysed(page, "Second prompt", "You are a pirate."))
    settle(page)
    page.locator(".tokpanel:not([hidden]) button.feat").first.click()
    page.wait_for_selector("#fcard")
    wait_js(page, "location.search.includes('feature=')")
    settle(page)
    page.go_back()
    wait_js(page, "!location.search.includes('feature=')")
    wait_js(page, analysed(page, "Second prompt", "You are a pirate."))
    assert page.input_value("#prompt") == "Second prompt"
    assert page.input_value("#system_prompt") == "You are a pirate."
    # the next Analyze asks for what is on screen
    with page.expect_response(lambda r: r.url.endswith("/fragments/analysis")) as resp:
        page.click("#analyze-btn")
    assert resp.value.status == 200
    wait_js(page, analysed(page, "Second prompt", "You are a pirate."))
    page.close()


def peak_feature(page, base: str, prompt: str) -> tuple[int, int, int]:
    """A fine feature of the prompt that peaks before the last token: (index, a token listing it, its peak)."""
    truth = api(page, "POST", f"{base}/api/analyze", {"prompt": prompt})
    last = len(truth["tokens"]) - 1
    for t in truth["tokens"][1:last]:
        for i in t["saes"]["fine"]["indices"]:
            card = api(page, "GET", f"{base}/api/features/fine/{i}?top=12&prompt={quote(prompt)}")
            if card["max_position"] != last:
                return i, t["position"], card["max_position"]
    raise AssertionError("no feature peaking before the last token")


def selected(page) -> int:
    wait_js(page, "!!document.querySelector('.strip .tok.sel')")
    return int(page.locator(".strip .tok.sel").get_attribute("data-pos"))


def test_saved_analysis_keeps_the_card_and_deep_links_select_the_peak(live_server, browser):
    prompt = "The cat sat on the mat"
    page = new_page(browser, viewport=VIEWPORTS["desktop"])
    idx, listed, peak = peak_feature(page, live_server, prompt)
    # a deep link opens the card on the token where the feature peaks
    page.goto(f"{live_server}/?prompt={quote(prompt)}&feature=fine:{idx}")
    page.wait_for_selector(f"#fcard[data-index='{idx}']")
    assert selected(page) == peak and page.locator(f"#tokpanel-{peak}").is_visible()
    # the live view: analyse, open the feature, Save -> the saved page has the card, at the peak. The deferred lens
    # (whose reply brings a Save box without the feature) is held until the card is open: it must not replace it.
    held = []
    page.route("**/fragments/analysis/lens", lambda route: held.append(route))
    page.goto(live_server + "/")
    page.fill("#prompt", prompt)
    page.click("#analyze-btn")
    wait_js(page, analysed(page, prompt))
    page.click(f"#tok-{listed}")
    page.click(f"#tokpanel-{listed} button.feat[data-sae=fine][data-index='{idx}']")
    page.wait_for_selector(f"#fcard[data-index='{idx}']")
    has_card = ("JSON.parse(document.querySelector('#analysis .save-slot input[name=inputs]').value).feature === "
                f"'fine:{idx}'")
    wait_js(page, has_card, timeout_s=30)
    assert len(held) == 1
    held[0].continue_()
    page.wait_for_selector("#lens .main-svg, #lens-fig .main-svg")
    settle(page)
    assert page.evaluate(has_card)
    page.click("#analysis .save-slot .save-button")
    link = page.wait_for_selector("#analysis .saved-link").get_attribute("href")
    # closing the card: the Save box is the analysis' own again (no feature, the lens kept)
    page.click("#fcard-close")
    slot = "JSON.parse(document.querySelector('#analysis .save-slot input[name=%s]').value)"
    assert page.evaluate(slot % "inputs")["feature"] is None
    result = page.evaluate(slot % "result")
    assert result["card"] is None and result["lens"] is not None
    page.goto(live_server + link)
    page.wait_for_selector(f"#saved-fragment #fcard[data-index='{idx}']")
    assert selected(page) == peak
    assert page.locator(".provenance-warning").count() == 0
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "saved-analysis-card.png"), full_page=True)
    page.close()
