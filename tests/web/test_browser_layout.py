"""Issue 25 item 8 in a real browser (tiny profile with an atlas: atlas_server, tests/web/conftest.py): example values
never overlap the example text or the next row, "steer … →" links never break (the arrow alone on a line), the
header on a phone is one line with a Menu button (it took ~40 % of the first screen), and the attribution
figure's point labels are short."""
from __future__ import annotations

import pytest

from tests.conftest import wait_js
from tests.web.browser import ARTIFACTS as ALL_ARTIFACTS
from tests.web.browser import BROWSER_MARKS, TIMEOUT_MS, VIEWPORTS, P, page_errors

ARTIFACTS = ALL_ARTIFACTS / "pages"
pytestmark = BROWSER_MARKS

# every example row: its value inside the row, over none of the row's tokens, and rows one under another
EXAMPLES_JS = """() => {
  const bad = [];
  const rows = [...document.querySelectorAll('.atlas-examples .ex')];
  const boxes = rows.map(r => r.getBoundingClientRect());
  rows.forEach((row, i) => {
    const v = row.querySelector('.exv').getBoundingClientRect(), b = boxes[i];
    if (v.top < b.top - 0.5 || v.bottom > b.bottom + 0.5 || v.right > b.right + 0.5 || v.left < b.left - 0.5)
      bad.push('row ' + i + ': its value sticks out of the row');
    let over = false;
    for (const t of row.querySelectorAll('.t')) for (const r of t.getClientRects())
      if (r.width && r.left < v.right - 0.5 && v.left < r.right - 0.5 && r.top < v.bottom - 0.5 && v.top < r.bottom - 0.5) over = true;
    if (over) bad.push('row ' + i + ': its value lies over its text');
    if (i && boxes[i].top < boxes[i - 1].bottom - 0.5) bad.push('row ' + i + ' overlaps row ' + (i - 1));
  });
  return {n: rows.length, bad: bad.slice(0, 6)};
}"""

# Real windows are longer than the tiny profile's: rows of 1..60 BPE-like tokens (clones of a real row, so the
# template's structure) fill every possible amount of the last line, which is where a value used to hang below its
# row, over the next one (fine #5997's "287.50" and "634.50" on the embedded model).
LONG_ROWS_JS = """() => {
  const box = document.querySelector('.atlas-examples'), row = box.querySelector('.ex');
  for (let n = 1; n <= 60; n++) {
    const r = row.cloneNode(true);
    r.querySelectorAll('.t').forEach(t => t.remove());
    const v = r.querySelector('.exv');
    for (let i = 0; i < n; i++) {
      const t = document.createElement('span'); t.className = i === n - 1 ? 't hl on' : 't';
      t.textContent = i % 3 ? '·capital' : '·of'; r.insertBefore(t, v);
    }
    v.textContent = (100 + n * 10.25).toFixed(2);
    box.appendChild(r);
  }
}"""

# visible "steer … →" links drawn on more than one line
STEER_JS = """() => [...document.querySelectorAll('a.steer-link')]
  .filter(a => a.getClientRects().length && getComputedStyle(a).visibility !== 'hidden')
  .map(a => ({text: a.textContent.trim(), lines: new Set([...a.getClientRects()].map(r => Math.round(r.top))).size}))"""


def open_page(browser, base, address, viewport):
    page = browser.new_page(viewport=VIEWPORTS[viewport])
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(base + address)
    wait_js(page, "document.readyState === 'complete' && !document.querySelector('.htmx-request')", 120)
    return page


@pytest.mark.parametrize("viewport", list(VIEWPORTS))
def test_example_values_never_overlap(atlas_server, webgl_browser, viewport):
    checked = 0
    for index in range(4):
        page = open_page(webgl_browser, atlas_server, f"/features/coarse/{index}", viewport)
        try:
            if index == 0:
                page.evaluate(LONG_ROWS_JS)
            got = page.evaluate(EXAMPLES_JS)
            checked += got["n"]
            if got["bad"]:
                ARTIFACTS.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(ARTIFACTS / f"examples-overlap-{index}-{viewport}.png"), full_page=True)
            assert not got["bad"], f"coarse #{index} at {viewport}: {got['bad']}"
        finally:
            page.close()
    assert checked > 60


@pytest.mark.parametrize("viewport", list(VIEWPORTS))
@pytest.mark.parametrize("address", [f"/attribution?prompt={P}", "/features/coarse/3", f"/?prompt={P}&feature=coarse:3"])
def test_steer_links_stay_on_one_line(atlas_server, webgl_browser, address, viewport):
    page = open_page(webgl_browser, atlas_server, address, viewport)
    try:
        page.wait_for_selector("a.steer-link", state="attached")
        links = page.evaluate(STEER_JS)
        assert links and all(link["lines"] == 1 for link in links), [x for x in links if x["lines"] > 1]
    finally:
        page.close()


HEADER_PAGES = ["/", "/generate", "/temperature", "/discover", "/map", "/e", "/profile", "/features/coarse/3",
                f"/attribution?prompt={P}", "/search?q=Paris", "/nonexistent"]


def test_phone_header_is_one_line_with_a_menu(atlas_server, webgl_browser):
    for address in HEADER_PAGES:
        page = webgl_browser.new_page(viewport=VIEWPORTS["phone"])
        page.set_default_timeout(TIMEOUT_MS)
        try:
            page.goto(atlas_server + address, wait_until="domcontentloaded")
            assert page.locator("header.top .menu-btn").is_visible(), address
            height = page.evaluate("document.querySelector('header.top').getBoundingClientRect().height")
            assert height <= 0.08 * VIEWPORTS["phone"]["height"], f"{address}: header {height} px high"
            assert not page.locator("header.top nav a[href='/map']").is_visible()
        finally:
            page.close()
    # the menu opens and closes by mouse and keyboard, and its links work
    page = webgl_browser.new_page(viewport=VIEWPORTS["phone"])
    page.set_default_timeout(TIMEOUT_MS)
    errors = page_errors(page)
    try:
        page.goto(atlas_server + "/e")
        btn = page.locator("header.top .menu-btn")
        assert btn.get_attribute("aria-expanded") == "false"
        btn.click()
        assert btn.get_attribute("aria-expanded") == "true"
        for sel in ("nav a[href='/map']", "nav a[href='/generate']", "form.hsearch input[name=q]", ".profile", "a.apidocs"):
            assert page.locator(f"header.top {sel}").is_visible(), sel
        assert page.evaluate("document.documentElement.scrollWidth") <= VIEWPORTS["phone"]["width"]
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "header-menu-open-phone.png"))
        page.keyboard.press("Escape")
        assert btn.get_attribute("aria-expanded") == "false" and not page.locator("header.top nav a[href='/map']").is_visible()
        btn.focus()
        page.keyboard.press("Enter")
        assert page.locator("header.top nav a[href='/map']").is_visible()
        page.locator("header.top nav a[href='/map']").click()
        page.wait_for_url(atlas_server + "/map")
        assert errors == []
    finally:
        page.close()


def test_desktop_header_shows_everything_without_a_menu(atlas_server, webgl_browser):
    page = open_page(webgl_browser, atlas_server, "/", "desktop")
    try:
        assert not page.locator("header.top .menu-btn").is_visible()
        for sel in ("nav a[href='/map']", "form.hsearch input[name=q]", ".profile", "a.apidocs"):
            assert page.locator(f"header.top {sel}").is_visible(), sel
        assert page.evaluate("document.querySelector('header.top').getBoundingClientRect().height") <= 90
    finally:
        page.close()


def test_phone_header_without_javascript_shows_everything(atlas_server, webgl_browser):
    """No JS (or before it runs): the menu cannot open, so nothing is hidden behind it."""
    ctx = webgl_browser.new_context(viewport=VIEWPORTS["phone"], java_script_enabled=False)
    page = ctx.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    try:
        page.goto(atlas_server + "/e")
        assert page.locator("header.top nav a[href='/map']").is_visible()
        assert not page.locator("header.top .menu-btn").is_visible()
    finally:
        ctx.close()
