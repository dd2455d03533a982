"""Every page at a desktop (1440x900) and a phone (390x844) viewport in a real browser (tiny profile with an atlas
and a map): it renders, nothing scrolls sideways, every control stays on screen, no console error, the browser asks
nothing of any address but the app's own, and axe-core finds no serious or critical violation and none of the page
structure rules a screen reader leans on (one h1, headings in order, no empty table header). Saved snapshots of
every registered kind are opened too, so every result fragment is checked at both sizes. One load per page and
viewport serves every check. Screenshots go to test-artifacts/pages/, axe results to test-artifacts/axe/.

axe-core comes from the npm registry through `make axe` (.axe/node_modules/axe-core/axe.min.js, gitignored), like
Chromium from Debian: nothing is fetched at test time. It is evaluated through the DevTools protocol, which the
app's CSP (script-src 'self') does not govern, so the page keeps its CSP and a CSP violation is a console error."""
from __future__ import annotations

import json
import time

import pytest

from tests.conftest import wait_js
from tests.web.browser import ARTIFACTS as ALL_ARTIFACTS
from tests.web.browser import AXE_JS, BROWSER_MARKS, KINDS, PAGES, VIEWPORTS, failing, run_axe, sized_page

ARTIFACTS = ALL_ARTIFACTS / "pages"
AXE_ARTIFACTS = ALL_ARTIFACTS / "axe"
pytestmark = [*BROWSER_MARKS, pytest.mark.skipif(not AXE_JS.exists(), reason="axe-core not installed (make axe)")]
# a page only the accessibility check measured before the checks shared a load: a map search's results
EXTRA = [("map-search", "/map?q=cluster+0", "#map-search-summary")]


# what a page may not do, checked in the page: the document is wider than the window; a visible control sticks out
LAYOUT_JS = """() => {
  const W = document.documentElement.clientWidth;
  const wide = Math.max(document.documentElement.scrollWidth, document.body.scrollWidth);
  const out = [];
  for (const el of document.querySelectorAll('input:not([type=hidden]), select, textarea, button, summary, a[href]')) {
    const r = el.getBoundingClientRect();
    if (!r.width || !r.height || getComputedStyle(el).visibility === 'hidden') continue;
    let clip = el.parentElement, hidden = false;  // inside a scrolling box (a wide table): reachable by scrolling it
    while (clip && clip !== document.body) {
      const o = getComputedStyle(clip).overflowX;
      if (o === 'auto' || o === 'scroll') { hidden = true; break; }
      clip = clip.parentElement;
    }
    if (!hidden && (r.left < -1 || r.right > W + 1)) out.push(el.outerHTML.slice(0, 120) + ' @' + Math.round(r.left) + '..' + Math.round(r.right));
  }
  return {W, wide, out: out.slice(0, 8)};
}"""


def check_page(ctx, base, address, ready, viewport, shot):
    page = sized_page(ctx, viewport)
    console, foreign = [], []
    page.on("console", lambda m: console.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: console.append(str(e)))
    page.on("request", lambda r: foreign.append(r.url)
            if not (r.url.startswith(base + "/") or r.url.startswith(("data:", "blob:"))) else None)
    try:
        resp = page.goto(base + address)
        assert resp.status == 200, f"{address}: HTTP {resp.status}"
        page.wait_for_selector(ready, state="attached")
        wait_js(page, "document.readyState === 'complete' && !document.querySelector('.htmx-request')", 120)
        # Plotly resizes its figures after layout, late on a loaded machine: the layout is judged once it settles
        # (or after 15 s, when what is still too wide is a real fault)
        end = time.monotonic() + 15
        layout = page.evaluate(LAYOUT_JS)
        while (layout["wide"] > layout["W"] or layout["out"]) and time.monotonic() < end:
            page.wait_for_timeout(250)
            layout = page.evaluate(LAYOUT_JS)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"{shot}-{viewport}.png"), full_page=True)
        assert layout["wide"] <= layout["W"], f"{address} at {viewport}: {layout['wide']} px wide in {layout['W']} px"
        assert not layout["out"], f"{address} at {viewport}: controls off screen: {layout['out']}"
        assert not console, f"{address} at {viewport}: console errors {console}"
        assert not foreign, f"{address} at {viewport}: requests outside the app {foreign}"
        assert page.title().endswith("Activation Space Navigator")
        got = run_axe(page)  # the page has settled: the layout above waited for it
        AXE_ARTIFACTS.mkdir(parents=True, exist_ok=True)
        (AXE_ARTIFACTS / f"{shot}-{viewport}.json").write_text(json.dumps(got, indent=1))
        bad = failing(got)
        lines = [f"{v['id']} ({v['impact']}, {len(v['nodes'])}): {v['help']}; e.g. {v['nodes'][:3]}" for v in bad]
        assert not bad, f"{address} at {viewport}: " + "\n".join(lines)
    finally:
        page.close()


@pytest.mark.parametrize("viewport", list(VIEWPORTS))
@pytest.mark.parametrize("name,address,ready", PAGES + EXTRA, ids=[p[0] for p in PAGES + EXTRA])
def test_page(atlas_server, cached_webgl_context, name, address, ready, viewport):
    check_page(cached_webgl_context, atlas_server, address, ready, viewport, name)


@pytest.mark.parametrize("viewport", list(VIEWPORTS))
@pytest.mark.parametrize("kind", KINDS)
def test_saved_snapshot(atlas_server, cached_webgl_context, snapshots, kind, viewport):
    check_page(cached_webgl_context, atlas_server, snapshots[kind], "main", viewport, f"saved-{kind}")


# Real model text the tiny profile does not produce: atlas contexts of BPE tokens render as one run with no space
# (spaces show as ·), and a row of long next-token chips has no space between chips. Both must wrap at 390 px
# (the embedded profile's /splits?coarse=1540&prompt=... was 778 px wide, /attribution 502 px, before the fix).
LONG_RUNS_JS = """() => {
  const main = document.querySelector('main');
  const ctx = document.createElement('span'); ctx.className = 'ctx';
  for (let i = 0; i < 60; i++) { const t = document.createElement('span'); t.className = 'ctok'; t.textContent = '·capital'; ctx.appendChild(t); }
  const p = document.createElement('p');
  for (let i = 0; i < 12; i++) { const c = document.createElement('span'); c.className = 'chip'; c.textContent = '·Parisian 0.12'; p.appendChild(c); }
  main.append(ctx, p);
  return Math.max(document.documentElement.scrollWidth, document.body.scrollWidth) - document.documentElement.clientWidth;
}"""


def test_long_token_runs_wrap_on_a_phone(atlas_server, cached_webgl_context):
    page = sized_page(cached_webgl_context, "phone")
    try:
        page.goto(atlas_server + "/splits?coarse=3")  # loads app.css and splits.css
        page.wait_for_selector("main", state="attached")
        assert page.evaluate(LONG_RUNS_JS) <= 0
    finally:
        page.close()


def test_what_each_profile_needs_is_readable_on_a_phone(atlas_server, cached_webgl_context):
    """/profile's "start another profile" table: on a phone each row is a card (no sideways scroll inside the
    table), and every "needs ..." line sits inside the screen."""
    page = sized_page(cached_webgl_context, "phone")
    try:
        page.goto(atlas_server + "/profile")
        page.wait_for_selector("table.profiles", state="attached")
        got = page.evaluate("""() => { const t = document.querySelector('table.profiles');
            const lines = [...t.querySelectorAll('ul.missing li')].map(li => li.getBoundingClientRect());
            return {scroll: t.scrollWidth - t.clientWidth, n: lines.length,
                    out: lines.filter(r => r.left < 0 || r.right > innerWidth).length}; }""")
        assert got["n"] > 0 and got["scroll"] <= 0 and got["out"] == 0, got
    finally:
        page.close()
