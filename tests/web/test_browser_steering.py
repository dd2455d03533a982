"""Generate & steer and Temperature pages in a real browser (Playwright + Debian chromium, live uvicorn, tiny
profile): drag a steering slider and the steered column changes to what the JSON API says; streaming; figures."""
from __future__ import annotations

import re
from urllib.parse import parse_qs, urlparse

import pytest
from playwright.sync_api import expect

from tests.web.browser import ARTIFACTS, BROWSER_MARKS, api, new_page

pytestmark = BROWSER_MARKS
PROMPT = "Once upon a time"
T = 120_000  # 2 shared cores under a training job: plotly.js alone takes a while to parse


def steered_text(page):
    return page.locator("#col-steered .gen-text").inner_text()


def test_drag_slider_changes_steered_column(live_server, browser):
    ARTIFACTS.mkdir(exist_ok=True)
    page = new_page(browser, T, viewport={"width": 1300, "height": 1100})
    page.goto(f"{live_server}/generate?prompt={PROMPT.replace(' ', '+')}&max_new_tokens=8")
    page.click("#add-feature")
    row = page.locator(".frow").first
    row.locator("select[name=f_sae]").select_option("coarse")
    row.locator(".f-index").fill("5")
    row.locator(".f-index").dispatch_event("change")
    expect(row.locator(".f-info")).to_contain_text("max on prompt", timeout=120000)
    with page.expect_response(lambda r: "/fragments/steering" in r.url, timeout=120000):
        page.click("#compare-btn")
    page.wait_for_selector("#col-steered")
    before = steered_text(page)
    assert before == page.locator("#col-unsteered .gen-text").inner_text()  # strength 0: identical
    # drag the slider thumb to the right end (a real pointer drag; 'change' fires on release)
    slider = row.locator(".f-slider")
    box = slider.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] - 1, box["y"] + box["height"] / 2, steps=8)
    with page.expect_response(lambda r: "/fragments/steering" in r.url, timeout=120000):
        page.mouse.up()
    expect(page.locator("#col-steered .gen-text")).not_to_have_text(before, timeout=120000)
    value = float(row.locator(".f-value").input_value())
    assert value > 0 and value == pytest.approx(float(slider.get_attribute("max")), rel=0.02)
    want = api(page, "POST", f"{live_server}/api/steer", {"prompt": PROMPT, "max_new_tokens": 8,
                                                        "steering": [{"sae": "coarse", "index": 5, "mode": "add", "value": value}]})
    # each token as shown (app.engine.tokens: a byte token as <0xB3>), so the text the tokens make up
    shown = "".join(t["text"] for t in want["steered"]["tokens"])
    assert steered_text(page).replace("↵", "").replace("\n", "") == shown.replace("\n", "")
    assert page.locator("#col-steered .gtok.div").count() == sum(want["diverged"])
    q = parse_qs(urlparse(page.url).query)
    assert q["f"][0].startswith("coarse:5:add:")
    page.screenshot(path=str(ARTIFACTS / "generate-steering.png"), full_page=True)
    # dose-response for that feature: a column of completions and a drawn Plotly figure
    page.fill("#strengths", "-20, 0, 20")
    with page.expect_response(lambda r: "/fragments/dose" in r.url, timeout=120000):
        page.click("#dose-btn")
    page.wait_for_selector("#dose-fig .main-svg", timeout=120000)
    assert page.locator("table.dose tbody tr").count() == 3
    page.screenshot(path=str(ARTIFACTS / "generate-dose.png"), full_page=True)
    page.close()


def test_stream_and_stop(live_server, browser, monkeypatch):
    # The tiny model makes 128 tokens faster than a click lands: pace the stream (the server runs in this
    # process) so Stop always meets a running generation.
    import time as _time

    from app.engine import continuous as C
    from app.engine import generation as G

    orig, orig_draw = G.iter_generate, C.sample_next

    def paced(*a, **k):
        for t in orig(*a, **k):
            _time.sleep(0.05)
            yield t

    def paced_draw(*a, **k):  # the continuous batcher's tokens (the fast path)
        _time.sleep(0.05)
        return orig_draw(*a, **k)

    monkeypatch.setattr(G, "iter_generate", paced)
    monkeypatch.setattr(C, "sample_next", paced_draw)
    page = new_page(browser, T, viewport={"width": 1300, "height": 900})
    page.goto(f"{live_server}/generate?prompt=Hello&max_new_tokens=6")
    page.click("#stream-btn")
    expect(page.locator("#stream-status")).to_contain_text("tok/s", timeout=120000)
    want = api(page, "POST", f"{live_server}/api/generate", {"prompt": "Hello", "max_new_tokens": 6})
    assert page.locator("#stream-out .gtok").count() == want["generation"]["n_new"]
    assert page.locator("#stream-out").text_content() == "".join(t["text"] for t in want["generation"]["tokens"])
    # a long run, stopped: the server reports fewer tokens than asked and frees the model
    page.fill("input[name=max_new_tokens]", "128")
    page.click("#stream-btn")
    page.locator("#stream-out .gtok").first.wait_for(timeout=120000)
    page.click("#stop-btn")
    expect(page.locator("#stream-status")).to_contain_text(re.compile("stopped|cancelled"), timeout=120000)
    assert page.locator("#stream-out .gtok").count() < 128
    page.screenshot(path=str(ARTIFACTS / "generate-stream.png"), full_page=True)
    page.close()


def test_temperature_page(live_server, browser):
    page = new_page(browser, T, viewport={"width": 1300, "height": 1200})
    page.goto(f"{live_server}/temperature")
    page.fill("textarea[name=prompt]", "Write a short paragraph about Kafka vs RabbitMQ")
    page.fill("input[name=top_k]", "4")
    with page.expect_response(lambda r: "/fragments/temperature" in r.url, timeout=120000):
        page.click("#temp-btn")
    page.wait_for_selector("#temp-fig .main-svg", timeout=120000)
    assert page.locator("table.temps th").count() == 5  # token + 4 temperatures
    page.fill("textarea[name=system_b]", "You are a senior distributed systems architect. Be direct.")
    with page.expect_response(lambda r: "/fragments/system_shift" in r.url, timeout=120000):
        page.click("#shift-btn")
    page.wait_for_selector("#shift-out table.shift")
    assert "was " in page.locator("#shift-out").inner_text()
    page.screenshot(path=str(ARTIFACTS / "temperature.png"), full_page=True)
    page.close()


def test_client_disconnect_stops_generation(tiny_engine):
    """Closing the SSE connection (no cancel call) stops the worker before its next token and frees the model."""
    import json
    import time

    import httpx

    from app.core.settings import Settings
    from app.main import create_app
    from tests.conftest import serve_app

    app = create_app(Settings(profile="tiny"), engine_factory=lambda s: tiny_engine)
    with serve_app(app) as base, httpx.Client(timeout=120) as client:
        with client.stream("POST", f"{base}/api/generate/stream", json={"prompt": "Hello", "max_new_tokens": 128}) as r:
            assert r.status_code == 200
            for line in r.iter_lines():
                if line.startswith("data: "):
                    run_id = json.loads(line[6:])["run_id"]
                    break
        # leaving the block closes the connection after the first event
        streams = app.state.streams
        deadline = time.time() + 60
        while (streams.active(run_id) or tiny_engine.busy) and time.time() < deadline:
            time.sleep(0.05)
        assert not streams.active(run_id) and not tiny_engine.busy
        reason, n = streams.finished(run_id)
    assert reason == "cancelled" and n < 128
    assert tiny_engine.attached_hooks() == 0
