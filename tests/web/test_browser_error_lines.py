"""static/forms.js words no error itself: it shows the lines the server put in X-Error-Lines (a pydantic
string_too_long as "too long: at most N characters", never pydantic's own text)."""
from __future__ import annotations

import os

import pytest
from playwright.sync_api import expect

from tests.web.test_browser_analysis import CHROMIUM, browser, live_server  # noqa: F401  (fixtures)
from tests.web.test_browser_discover import _one_thread  # noqa: F401  (autouse: one torch thread for the in-process server)

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian chromium not installed (make browser)")]


def test_fetch_and_htmx_errors_show_the_servers_words(live_server, browser):  # noqa: F811
    page = browser.new_page(viewport={"width": 1300, "height": 1000})
    page.set_default_timeout(120_000)
    page.goto(f"{live_server}/generate?prompt=Hi&max_new_tokens=2")
    lines = page.evaluate("""async () => {
        const r = await fetch('/api/attribution', {method: 'POST', headers: {'Content-Type': 'application/json'},
                                                   body: JSON.stringify({prompt: 'The cat', target: 'x'.repeat(201)})});
        return await window.asnForms.responseLines(r); }""")
    assert lines == ["target: too long: at most 200 characters"]
    # the stream's 422 (fetch) in the output area, worded by the server
    page.fill("#prompt", "")
    page.click("#stream-btn")
    expect(page.locator("#stream-out [role=alert]")).to_contain_text("prompt: required: it is empty")
    assert "String should have" not in page.locator("#stream-section").inner_text()
    page.close()
