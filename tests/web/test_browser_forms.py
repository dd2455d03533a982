"""Errors and form hints in a real browser (tiny profile): failed requests shown in place in every view
(static/forms.js), the live token count, the slider's range hint, sink positions outside a feature's colour scale."""
from __future__ import annotations

import re
from urllib.parse import quote

import pytest
from playwright.sync_api import expect

from tests.web.browser import ARTIFACTS, BROWSER_MARKS, api, new_page

pytestmark = [*BROWSER_MARKS, pytest.mark.usefixtures("one_torch_thread")]  # the server runs in this process
PROMPT = "Once upon a time"
T = 120_000  # 2 shared cores
VIEWPORT = {"width": 1300, "height": 1000}


def test_failed_requests_replace_stale_results_with_their_message(live_server, browser):
    page = new_page(browser, T, viewport=VIEWPORT)
    page.goto(f"{live_server}/generate?prompt={quote(PROMPT)}&max_new_tokens=2")
    with page.expect_response(lambda r: "/fragments/steering" in r.url):
        page.click("#compare-btn")
    page.wait_for_selector("#steer-out #col-steered")
    # a server error (htmx does not swap 5xx): the message in place, the old result gone
    page.route("**/fragments/steering", lambda route: route.fulfill(status=500, body="Internal Server Error"))
    page.click("#compare-btn")
    alert = page.locator("#steer-out [role=alert]")
    expect(alert).to_contain_text("the server answered 500")
    assert page.locator("#steer-out #col-steered").count() == 0
    # the server unreachable: said in place too
    page.unroute("**/fragments/steering")
    page.route("**/fragments/steering", lambda route: route.abort())
    page.click("#compare-btn")
    expect(alert).to_contain_text("could not be reached")
    page.unroute("**/fragments/steering")
    # a 422 from the stream: readable, in the output area (not raw pydantic text in grey)
    page.fill("#prompt", "")
    page.click("#stream-btn")
    expect(page.locator("#stream-out [role=alert]")).to_contain_text("prompt: required: it is empty")
    assert "String should have" not in page.locator("#stream-section").inner_text()

    # Discover: "pasted / uploaded" with an empty box after a result -> the 422 replaces the result
    page.goto(f"{live_server}/discover")
    page.select_option("select[name=concept_set]", "custom")
    page.fill("textarea[name=concept_text]", "Paris is nice\nI like France\nThe Eiffel tower")
    page.select_option("select[name=contrast_set]", "custom")
    page.fill("textarea[name=contrast_text]", "cats sit\nwater is wet\nboxes of pens")
    page.fill("input[name=n_coarse]", "2")
    page.click("#discover-form button.primary")
    page.wait_for_selector("#discover-result .discovery")
    page.fill("textarea[name=concept_text]", "")
    with page.expect_response(lambda r: "/discover/run" in r.url) as resp:
        page.click("#discover-form button.primary")
    assert resp.value.status == 422
    expect(page.locator("#discover-result [role=alert]")).to_have_text("concept_prompts: give at least 2 non-empty prompts")
    assert page.locator("#discover-result .discovery").count() == 0
    page.close()


def test_token_limit_stated_and_counted_as_you_type(live_server, browser):
    page = new_page(browser, T, viewport=VIEWPORT)
    page.goto(f"{live_server}/generate")
    assert "at most 256 tokens" in page.locator("label.field").first.inner_text()
    assert page.get_attribute("#prompt", "maxlength") is None  # a long paste is not cut silently
    count = page.locator(".tok-count[data-for=prompt]")
    page.fill("#prompt", "Hello there")
    want = api(page, "POST", f"{live_server}/api/tokenize", {"prompt": "Hello there"})["n_tokens"]
    assert want == len("Hello there")  # the byte tokenizer: one token per byte, counted independently here
    expect(count).to_have_text(f"{want} / 256 tokens")
    # a system prompt goes through the chat template: the count follows it
    page.click("details.field summary")
    page.fill("#system_prompt", "Be brief.")
    chat = api(page, "POST", f"{live_server}/api/tokenize", {"prompt": "Hello there", "system_prompt": "Be brief."})
    expect(count).to_have_text(f"{chat['n_tokens']} / 256 tokens")
    page.fill("#system_prompt", "")
    page.fill("#prompt", "x" * 300)
    expect(count).to_have_text("300 / 256 tokens — over the limit: shorten the prompt")
    assert "over" in count.get_attribute("class")
    page.fill("#prompt", "x" * 9000)
    expect(count).to_contain_text("8000")
    expect(count).to_contain_text("max_prompt_chars")
    # the temperature page counts with its chat selector (default on: the chat template)
    page.goto(f"{live_server}/temperature")
    page.fill("#temp-prompt", "Hi")
    on = api(page, "POST", f"{live_server}/api/tokenize", {"prompt": "Hi", "chat": True})["n_tokens"]
    assert on > 2
    expect(page.locator(".tok-count[data-for=temp-prompt]")).to_have_text(f"{on} / 256 tokens")
    page.select_option("#temp-chat", "off")
    expect(page.locator(".tok-count[data-for=temp-prompt]")).to_have_text("2 / 256 tokens")
    # its two views run the prompt with different system prompts: the count is the larger, and says which
    page.fill("textarea[name=system_prompt]", "Short.")
    page.fill("textarea[name=system_b]", "A much longer system prompt than the other one.")
    counts = {name: api(page, "POST", f"{live_server}/api/tokenize",
                        {"prompt": "Hi", "system_prompt": text, "chat": False})["n_tokens"]
              for name, text in (("temp", "Short."), ("b", "A much longer system prompt than the other one."))}
    # the byte tokenizer, counted independently: one token per byte, the system prompt prepended as text (chat off)
    assert counts["b"] - counts["temp"] == len("A much longer system prompt than the other one.") - len("Short.")
    assert counts["temp"] >= len("Hi") + len("Short.")
    expect(page.locator(".tok-count[data-for=temp-prompt]")).to_have_text(
        f"{counts['b']} / 256 tokens (the most: with system prompt B)")
    page.fill("textarea[name=system_b]", "")
    expect(page.locator(".tok-count[data-for=temp-prompt]")).to_have_text(
        f"{counts['temp']} / 256 tokens (the most: with the temperature view’s system prompt)")
    page.fill("textarea[name=system_prompt]", "")
    expect(page.locator(".tok-count[data-for=temp-prompt]")).to_have_text("2 / 256 tokens")
    page.close()


def test_slider_hint_when_the_strength_is_beyond_its_range(live_server, browser):
    page = new_page(browser, T, viewport=VIEWPORT)
    page.goto(f"{live_server}/generate?prompt={quote(PROMPT)}&f=coarse:5:add:400")
    row = page.locator(".frow").first
    expect(row.locator(".f-info")).to_contain_text("max on prompt")
    hi = float(row.locator(".f-slider").get_attribute("max"))
    assert hi < 400
    expect(row.locator(".f-hint")).to_contain_text("400 is beyond the slider's range")
    assert float(row.locator(".f-value").input_value()) == 400  # the number used is the typed one
    row.locator(".f-value").fill("1")
    row.locator(".f-value").dispatch_event("change")
    expect(row.locator(".f-hint")).to_be_hidden()
    row.locator(".f-value").fill("9999")
    row.locator(".f-value").dispatch_event("change")
    expect(row.locator(".f-hint")).to_contain_text("9999 is beyond the strength limit ±500: set to 500")
    page.close()


def test_sink_position_is_outlined_not_coloured_at_full_scale(live_server, browser):
    prompt = "The cat sat on the mat."
    page = new_page(browser, T, viewport=VIEWPORT)
    # a feature whose activation at the sink (position 0) exceeds its max over the other positions
    found = None
    for i in range(64):
        card = api(page, "GET", f"{live_server}/api/features/coarse/{i}?prompt={quote(prompt)}")
        if card["sink"][0] and card["activations"][0] > (card["max_activation"] or 0) > 0:
            found = card
            break
    assert found, "the tiny model has such a feature on this prompt"
    page.goto(f"{live_server}/?prompt={quote(prompt)}")
    page.wait_for_selector(".strip .tok")
    page.evaluate(f"window.asnAnalyze.openFeature('coarse', {found['index']})")
    page.wait_for_selector(f"#fcard[data-index='{found['index']}']")
    sink = page.locator("#tok-0")
    expect(sink).to_have_class(re.compile(r"\bsink\b.*\bsinkact\b"))
    assert sink.evaluate("e => e.style.getPropertyValue('--heat')") == ""
    assert sink.locator(".a").inner_text() == f"{found['activations'][0]:.2f}"
    best = page.locator(f"#tok-{found['max_position']}")
    # the scale's top is the non-sink max (app.css .heat: the shade, and its text colour from the shade)
    assert "heat" in best.get_attribute("class") and best.evaluate("e => e.style.getPropertyValue('--heat')") == "0.900"
    expect(page.locator("#colour-note")).to_contain_text("Outlined: sink positions")
    page.screenshot(path=str(ARTIFACTS / "analysis-sink-outlined.png"))
    page.close()


BUSY = ('<div class="errors panel" role="alert"><b>Could not analyse</b><ul><li>the model is busy; retry in 1s</li>'
        '</ul></div>')


def test_a_busy_answer_is_retried_by_itself_then_given_up(live_server, browser):
    """503 + Retry-After on a view's fragment: the page counts down in the message and asks again by itself (at most
    3 times); a refused save is not re-sent."""
    page = new_page(browser, T, viewport=VIEWPORT)
    page.goto(live_server + "/")
    page.fill("#prompt", PROMPT)
    calls = []

    def busy_once(route):
        calls.append(route.request.url)
        if len(calls) == 1:
            route.fulfill(status=503, headers={"Retry-After": "1", "Content-Type": "text/html"}, body=BUSY)
        else:
            route.continue_()

    page.route("**/fragments/analysis", busy_once)
    # every text the countdown shows, recorded as it changes (the 1 s window is short on a loaded machine)
    page.evaluate("""window.__notes = []; new MutationObserver(() => document.querySelectorAll('#result .retry-note')
        .forEach(n => window.__notes.push(n.textContent))).observe(document.getElementById('result'),
        {childList: true, subtree: true, characterData: true});""")
    page.click("#analyze-btn")
    page.wait_for_selector("#result .strip .tok")  # the retry's answer replaced the message
    notes = page.evaluate("window.__notes")
    assert "Trying again in 1 s (1 of 3)" in notes and notes[-1] == "Trying again…", notes
    assert len(calls) == 2 and page.locator("#result [role=alert]").count() == 0
    page.unroute("**/fragments/analysis")

    # always busy: three retries, then it says so and stops
    calls.clear()
    page.route("**/fragments/analysis", lambda route: (calls.append(1), route.fulfill(
        status=503, headers={"Retry-After": "1", "Content-Type": "text/html"}, body=BUSY)))
    page.click("#analyze-btn")
    expect(page.locator("#result .retry-note")).to_have_text("Still busy after 3 tries; send it again when you like.",
                                                             timeout=30_000)
    assert len(calls) == 4
    page.unroute("**/fragments/analysis")

    # a refused save is left to the user: it could have been half done
    page.click("#analyze-btn")
    page.wait_for_selector("#result .strip .tok")
    saves = []
    page.route("**/e/save", lambda route: (saves.append(1), route.fulfill(
        status=503, headers={"Retry-After": "1", "Content-Type": "text/html"},
        body='<p role="alert">the store is unavailable; nothing was saved</p>')))
    box = page.locator("#result form.save-box")
    box.locator("input[name=title]").fill("busy")
    box.locator("button.save-button").click()
    page.wait_for_timeout(2500)  # a retry would have gone out after 1 s
    assert saves == [1]
    page.close()
