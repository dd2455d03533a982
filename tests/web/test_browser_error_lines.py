"""static/forms.js words no error itself: it shows the lines the server put in X-Error-Lines (a pydantic
string_too_long as "too long: at most N characters", never pydantic's own text)."""
from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.web.browser import BROWSER_MARKS, new_page

pytestmark = [*BROWSER_MARKS, pytest.mark.usefixtures("one_torch_thread")]  # the server runs in this process


def test_fetch_and_htmx_errors_show_the_servers_words(live_server, browser):
    page = new_page(browser, 120_000, viewport={"width": 1300, "height": 1000})
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
