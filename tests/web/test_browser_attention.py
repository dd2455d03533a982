"""The attention panel in Analyze in a real browser (tiny profile): folded until opened, then every head drawn on
its canvas from the payload; a click enlarges a head, hovering a token shades the tokens it attends to with the
pattern's weights (read back against POST /api/attention); no sideways scroll at 390 px; screenshots."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import wait_js
from tests.web.browser import ARTIFACTS, AXE_JS, BROWSER_MARKS, api, failing, new_page, page_errors, run_axe

pytestmark = BROWSER_MARKS
PROMPT = "The cat sat on"
SHOTS = Path(os.environ.get("ASN_SHOTS", ARTIFACTS))
OVERFLOW = "Math.max(document.documentElement.scrollWidth, document.body.scrollWidth) - document.documentElement.clientWidth"


@pytest.mark.parametrize("size", [(1440, 900), (390, 844)])
def test_attention_panel_opens_draws_enlarges_and_hovers(live_server, browser, size):
    page = new_page(browser, viewport={"width": size[0], "height": size[1]})
    errors = page_errors(page)
    fetched: list[str] = []
    page.on("request", lambda r: fetched.append(r.url) if "/fragments/attention" in r.url else None)
    page.goto(live_server + "/?prompt=" + PROMPT.replace(" ", "+") + "&lens=0")
    page.wait_for_selector("#attn-panel")
    assert not fetched  # lazy: nothing asked until the panel opens
    with page.expect_response(lambda r: "/fragments/attention" in r.url):
        page.click("#attn-panel > summary")
    page.wait_for_selector(".attn-cell canvas")
    want = api(page, "POST", live_server + "/api/attention", {"prompt": PROMPT})
    L, Hn, n = want["n_layers"], want["n_heads"], len(want["tokens"])
    assert page.locator(".attn-cell").count() == L * Hn
    # a canvas really holds its head's pattern: pixel of the last query on key 0, against the API's weight
    layer, h = L - 1, Hn - 1
    page.click(f'.attn-cell[data-layer="{layer}"][data-head="{h}"]')
    assert page.locator(".attn-title").inner_text().startswith(f"Layer {layer}, head {h}")
    px = page.evaluate(f"""(() => {{ const c = document.querySelector('.attn-cell[data-layer="{layer}"][data-head="{h}"] canvas');
        return Array.from(c.getContext('2d').getImageData(0, {n - 1}, 1, 1).data); }})()""")
    w = want["patterns"][layer][h][n - 1][0]
    assert abs(px[0] - (255 + (8 - 255) * round(w * 255) / 255)) <= 1.5
    # hover the third token: the strip is shaded by that row of the enlarged head
    page.hover('.attn-tok[data-pos="2"]')
    wait_js(page, "document.querySelector('.attn-tok[data-pos=\"2\"]').classList.contains('q')")
    heat = page.evaluate("Array.from(document.querySelectorAll('.attn-tok')).map(t => parseFloat(t.style.getPropertyValue('--heat') || '0'))")
    row = want["patterns"][layer][h][2]
    assert all(abs(a - b) <= 1 / 510 + 1e-3 for a, b in zip(heat[:3], row[:3]))
    assert heat[3:] == [0.0] * (n - 3)  # causal: nothing after the query
    assert "attends to" in page.locator(".attn-read").inner_text()
    assert page.evaluate(OVERFLOW) <= 0
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.locator("#attn-panel").screenshot(path=str(SHOTS / f"attention-tiny-{size[0]}x{size[1]}.png"))
    assert not errors, errors


@pytest.mark.parametrize("size", [(1440, 900), (390, 844)])
def test_open_attention_panel_has_no_serious_axe_violation(live_server, browser, size):
    if not AXE_JS.exists():
        pytest.skip("axe-core not installed (make axe)")
    ctx = browser.new_context(viewport={"width": size[0], "height": size[1]})
    try:
        page = ctx.new_page()
        page.set_default_timeout(180_000)
        page.goto(live_server + "/?prompt=" + PROMPT.replace(" ", "+") + "&lens=0")
        page.click("#attn-panel > summary")
        page.wait_for_selector(".attn-cell canvas")
        page.click('.attn-cell[data-layer="0"][data-head="0"]')
        page.hover('.attn-tok[data-pos="1"]')
        bad = failing(run_axe(page))
        assert not bad, [(v["id"], v["nodes"][:3]) for v in bad]
    finally:
        ctx.close()
