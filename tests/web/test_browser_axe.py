"""axe-core on every page and the saved snapshot of every registered kind, at 1440x900 and 390x844 (tiny profile with
an atlas and a map; the same list as test_browser_pages): no serious or critical violation, and none of the page
structure rules a screen reader leans on (one h1, headings in order, no empty table header).

axe-core comes from the npm registry through `make axe` (.axe/node_modules/axe-core/axe.min.js, gitignored), like
Chromium from Debian: nothing is fetched at test time. The app's CSP (script-src 'self') refuses an injected
script, so the browser context bypasses CSP for the injection only; axe runs once the page's results are drawn.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.conftest import wait_js
from tests.web.test_browser_map import chromium  # noqa: F401 (the browser: WebGL through SwiftShader)
from tests.web.test_browser_pages import (  # noqa: F401 (fixtures: the server and one snapshot per kind)
    CHROMIUM,
    KINDS,
    PAGES,
    TIMEOUT_MS,
    VIEWPORTS,
    server,
    snapshots,
)

AXE_JS = Path(__file__).resolve().parents[2] / ".axe" / "node_modules" / "axe-core" / "axe.min.js"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "axe"
pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian chromium not installed (make browser)"),
              pytest.mark.skipif(not AXE_JS.exists(), reason="axe-core not installed (make axe)")]
IMPACTS = ("serious", "critical")
# moderate / minor by axe's grading, but each leaves a screen-reader user lost on the page: enforced too
STRUCTURE = ("page-has-heading-one", "heading-order", "empty-table-header")
# extra pages the issue measured: an Analyze result with a feature card open, Discover's results, a map search
EXTRA = [
    ("map-search", "/map?q=cluster+0", "#map-search-summary"),
]


def run_axe(page) -> list[dict]:
    """axe.run on the whole document -> [{id, impact, help, nodes: [target, summary]}] of the violations."""
    page.add_script_tag(content=AXE_JS.read_text(encoding="utf-8"))
    out = page.evaluate("""async () => {
      const r = await axe.run(document, {resultTypes: ['violations']});
      return r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
        nodes: v.nodes.map(n => [n.target.join(' '), (n.failureSummary || '').split('\\n').slice(0, 2).join(' ')])}));
    }""")
    return out


def failing(violations: list[dict]) -> list[dict]:
    return [v for v in violations if v["impact"] in IMPACTS or v["id"] in STRUCTURE]


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
def test_page_has_no_serious_axe_violation(server, chromium, name, address, ready, viewport):  # noqa: F811
    axe_page(chromium, server, address, ready, viewport, name)


@pytest.mark.parametrize("viewport", list(VIEWPORTS))
@pytest.mark.parametrize("kind", KINDS)
def test_saved_snapshot_has_no_serious_axe_violation(server, chromium, snapshots, kind, viewport):  # noqa: F811
    axe_page(chromium, server, snapshots[kind], "main", viewport, f"saved-{kind}")
