"""axe-core on every page and the saved snapshot of every registered kind, at 1440x900 and 390x844 (tiny profile with
an atlas and a map; the same list as test_browser_pages): no serious or critical violation, and none of the page
structure rules a screen reader leans on (one h1, headings in order, no empty table header).

axe-core comes from the npm registry through `make axe` (.axe/node_modules/axe-core/axe.min.js, gitignored), like
Chromium from Debian: nothing is fetched at test time. The app's CSP (script-src 'self') refuses an injected
script, so the browser context bypasses CSP for the injection only; axe runs once the page's results are drawn.
"""
from __future__ import annotations

import json

import pytest

from tests.conftest import wait_js
from tests.web.browser import ARTIFACTS as ALL_ARTIFACTS
from tests.web.browser import AXE_JS, BROWSER_MARKS, KINDS, PAGES, TIMEOUT_MS, VIEWPORTS, failing, run_axe

ARTIFACTS = ALL_ARTIFACTS / "axe"
pytestmark = [*BROWSER_MARKS, pytest.mark.skipif(not AXE_JS.exists(), reason="axe-core not installed (make axe)")]
# extra pages the issue measured: an Analyze result with a feature card open, Discover's results, a map search
EXTRA = [
    ("map-search", "/map?q=cluster+0", "#map-search-summary"),
]


def axe_page(browser, base, address, ready, viewport, name):
    ctx = browser.new_context(viewport=VIEWPORTS[viewport], bypass_csp=True)
    page = ctx.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    try:
        resp = page.goto(base + address)
        assert resp.status == 200, f"{address}: HTTP {resp.status}"
        page.wait_for_selector(ready, state="attached")
        wait_js(page, "document.readyState === 'complete' && !document.querySelector('.htmx-request')", 120)
        page.wait_for_timeout(300)  # figures.js draws after load; htmx settles
        got = run_axe(page)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        (ARTIFACTS / f"{name}-{viewport}.json").write_text(json.dumps(got, indent=1))
        bad = failing(got)
        lines = [f"{v['id']} ({v['impact']}, {len(v['nodes'])}): {v['help']}; e.g. {v['nodes'][:3]}" for v in bad]
        assert not bad, f"{address} at {viewport}: " + "\n".join(lines)
    finally:
        ctx.close()


@pytest.mark.parametrize("viewport", list(VIEWPORTS))
@pytest.mark.parametrize("name,address,ready", PAGES + EXTRA, ids=[p[0] for p in PAGES + EXTRA])
def test_page_has_no_serious_axe_violation(atlas_server, webgl_browser, name, address, ready, viewport):
    axe_page(webgl_browser, atlas_server, address, ready, viewport, name)


@pytest.mark.parametrize("viewport", list(VIEWPORTS))
@pytest.mark.parametrize("kind", KINDS)
def test_saved_snapshot_has_no_serious_axe_violation(atlas_server, webgl_browser, snapshots, kind, viewport):
    axe_page(webgl_browser, atlas_server, snapshots[kind], "main", viewport, f"saved-{kind}")
