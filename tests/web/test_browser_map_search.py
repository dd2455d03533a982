"""The map's search box and region list from the keyboard alone (issue 25 item 10), desktop and phone: type a
feature id, Enter, Tab to the result, Enter -> the map shows that feature (its point inside the new axis ranges,
a ring on it, its card open); a region button shows the region's box; nothing scrolls sideways."""
from __future__ import annotations

import time

import pytest

from tests.conftest import wait_js
from tests.web.browser import ARTIFACTS as ALL_ARTIFACTS
from tests.web.browser import BROWSER_MARKS, fresh_page

ARTIFACTS = ALL_ARTIFACTS / "map-search"
pytestmark = BROWSER_MARKS
RANGES = "() => { const l = document.getElementById('map-main').layout; return [l.xaxis.range, l.yaxis.range]; }"


@pytest.mark.parametrize("viewport", [{"width": 1440, "height": 900}, {"width": 390, "height": 844}], ids=["desktop", "phone"])
def test_keyboard_finds_a_feature_and_a_region(atlas_server, webgl_browser, viewport, tiny_engine):
    from app.api.map import service

    lay, _ = service.layout_status(tiny_engine)
    ctx, page = fresh_page(webgl_browser, viewport=viewport)
    try:
        page.goto(atlas_server + "/map")
        wait_js(page, "document.getElementById('map-main').dataset.ready === '1'", 240)
        whole = page.evaluate(RANGES)
        page.focus("#map-q")
        page.keyboard.type("fine:17")
        page.keyboard.press("Enter")
        page.wait_for_selector("#map-search-features button.map-go")
        page.keyboard.press("Tab")  # the Find button
        page.keyboard.press("Tab")  # the first result: the feature
        assert page.evaluate("document.activeElement.dataset.feature") == "fine:17"
        page.keyboard.press("Enter")
        page.wait_for_selector("#map-card-body[data-sae='fine'][data-index='17']")
        wait_js(page, "document.getElementById('map-main').dataset.flown === 'fine:17'", 30)
        end = time.monotonic() + 30
        while page.evaluate(RANGES) == whole and time.monotonic() < end:
            time.sleep(0.2)
        (x0, x1), (y0, y1) = page.evaluate(RANGES)
        x, y = (float(v) for v in lay.xy[lay.offset("fine") + 17])
        assert x0 < x < x1 and y0 < y < y1
        assert (x1 - x0) < 0.5 * (whole[0][1] - whole[0][0])  # zoomed in on it
        assert page.evaluate("document.getElementById('map-main').data.some(t => t.meta === 'focus')")
        assert "q=fine%3A17" in page.url
        # a region from the list under the map, by keyboard focus + Enter
        reg = lay.regions[1]
        page.focus(f"#map-regions button[data-region='{reg.id}']")
        page.keyboard.press("Enter")
        wait_js(page, f"document.getElementById('map-main').dataset.flown === 'region:{reg.id}'", 30)
        time.sleep(1)
        (x0, x1), (y0, y1) = page.evaluate(RANGES)
        assert all(x0 <= hx <= x1 and y0 <= hy <= y1 for hx, hy in reg.hull)
        assert page.evaluate("document.documentElement.scrollWidth") <= viewport["width"]
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"map-search-{viewport['width']}.png"), full_page=True)
    finally:
        ctx.close()
