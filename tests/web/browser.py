"""What the browser tests share: Debian's chromium and its launch arguments, the page timeout, where screenshots go,
pages, the JSON API through a page, the Save box, axe-core, and the pages every page-level check opens. The fixtures
built on these (browsers, live servers) are in tests/web/conftest.py."""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import pytest

from app.core.registration import build_views

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
# generous: the test machine is shared with SAE training and other suites, and the tiny map is built in memory on
# first use
TIMEOUT_MS = 240_000
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--disable-dev-shm-usage"]
# WebGL (scattergl) through SwiftShader: no GPU on the test machine (Debian's chromium 156 headless has it without
# these flags too; they keep older builds on SwiftShader)
LAUNCH_ARGS_WEBGL = ["--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--disable-dev-shm-usage"]
# a browser test module's marks: `pytestmark = BROWSER_MARKS` (or `[*BROWSER_MARKS, ...]`)
BROWSER_MARKS = [pytest.mark.browser,
                 pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian chromium not installed (make browser)")]
VIEWPORTS = {"desktop": {"width": 1440, "height": 900}, "phone": {"width": 390, "height": 844}}

# every page and saved snapshot, checked at both viewports (test_browser_pages)
VIEWS = build_views()
KINDS = sorted(k for k, v in VIEWS.all().items() if v.example is not None)
P = "The+capital+of+France+is+Paris"
# (name, address, a selector that is there once the page has drawn what it shows)
PAGES = [
    ("analyze", "/", "#analyze-form"),
    ("analyze-result", f"/?prompt={P}&feature=coarse:3", "#fcard .vocab"),
    ("generate", "/generate", "#gen-form"),
    ("generate-steer", f"/generate?prompt={P}&max_new_tokens=6&f=coarse:3:add:4&view=steer", "#steer-out .sbs"),
    ("generate-dose", f"/generate?prompt={P}&f=coarse:3:add:4&strengths=-4,0,4&view=dose", "#dose-out table"),
    ("temperature", f"/temperature?prompt={P}&t=0.5&t=1.0&view=temperature", "table.temps"),
    ("discover", "/discover", "form"),
    ("experiment", "/experiment", "form"),
    ("experiment-report", "/experiment/report", "figure img"),
    ("map", "/map", "#map-main[data-ready=\"1\"]"),
    ("saved", "/e", "main"),
    ("profile", "/profile", "main"),
    ("feature", "/features/coarse/3", ".atlas"),
    ("search", "/search?q=Paris", "main"),
    ("splits", f"/splits?coarse=3&prompt={P}", "main"),
    ("attribution", f"/attribution?prompt={P}", "main"),
    ("docs", "/docs", ".opblock"),
    ("compare", "/compare?prompt_a=The+capital+of+France+is&prompt_b=The+capital+of+Italy+is&tokens=%5B%22a%22%2C%22e%22%5D",
     "#compare table.diffs"),
    ("patching", "/patching?clean=The+capital+of+France+is&corrupt=The+capital+of+Greece+is&answer=a&wrong=e",
     "#patch-exact-fig svg"),
    ("heads", "/heads?seq_len=10&n_seqs=2", "#heads-induction-fig svg"),
]

# axe-core from the npm registry (`make axe`, .axe/ is gitignored): nothing is fetched at test time
AXE_JS = Path(__file__).resolve().parents[2] / ".axe" / "node_modules" / "axe-core" / "axe.min.js"
IMPACTS = ("serious", "critical")
# moderate / minor by axe's grading, but each leaves a screen-reader user lost on the page: enforced too
STRUCTURE = ("page-has-heading-one", "heading-order", "empty-table-header")


@contextlib.contextmanager
def launched(args: list[str] = LAUNCH_ARGS):
    """Debian's chromium, headless, through Playwright (no browser download); closed on leaving."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
        try:
            yield b
        finally:
            b.close()


@contextlib.contextmanager
def launched_persistent(profile_dir, args: list[str] = LAUNCH_ARGS_WEBGL):
    """Debian's chromium with a profile on disk (profile_dir, a temporary folder): one context whose HTTP and compiled
    script caches persist between its pages, as a returning visitor's browser does; closed on leaving."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(str(profile_dir), executable_path=CHROMIUM, headless=True, args=args)
        try:
            yield ctx
        finally:
            ctx.close()


def sized_page(ctx, viewport: str, timeout_ms: int = TIMEOUT_MS):
    """A new page of a (persistent) context at one of VIEWPORTS, sized before anything loads."""
    page = ctx.new_page()
    page.set_viewport_size(VIEWPORTS[viewport])
    page.set_default_timeout(timeout_ms)
    page.set_default_navigation_timeout(timeout_ms)
    return page


def new_page(browser, timeout_ms: int = TIMEOUT_MS, **kw):
    """A page in the browser's default context, waiting up to timeout_ms for anything (navigation included)."""
    page = browser.new_page(**kw)
    page.set_default_timeout(timeout_ms)
    page.set_default_navigation_timeout(timeout_ms)
    return page


def fresh_page(browser, timeout_ms: int = TIMEOUT_MS, **kw):
    """-> (context, page): a fresh context (no cookies, no storage: nothing shared with another page)."""
    ctx = browser.new_context(**kw)
    page = ctx.new_page()
    page.set_default_timeout(timeout_ms)
    page.set_default_navigation_timeout(timeout_ms)
    return ctx, page


def page_errors(page) -> list[str]:
    """The page's uncaught script errors, collected from now on into the list returned."""
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    return errors


def api(page, method: str, url: str, body=None):
    """JSON from the same server through the page (an independent path from the HTML)."""
    r = page.request.post(url, data=json.dumps(body), headers={"content-type": "application/json"}, timeout=TIMEOUT_MS) \
        if method == "POST" else page.request.get(url, timeout=TIMEOUT_MS)
    assert r.ok, r.text()
    return r.json()


def compare_steering(page, address: str) -> None:
    """Open a Generate address with its steering filled in, press Compare and wait for both columns."""
    page.goto(address)
    with page.expect_response(lambda r: "/fragments/steering" in r.url):
        page.click("#compare-btn")
    page.wait_for_selector("#col-steered .gen-text")


def save_from_box(page, box, title: str, note: str | None = None) -> None:
    """Fill a result's Save box (a form.save-box locator) and press Save: the server stored it (201)."""
    box.locator("input[name=title]").fill(title)
    if note is not None:
        box.locator("input[name=note]").fill(note)
    with page.expect_response(lambda r: r.url.endswith("/e/save")) as resp:
        box.locator("button.save-button").click()
    assert resp.value.status == 201


def run_axe(page) -> list[dict]:
    """axe.run on the whole document -> [{id, impact, help, nodes: [target, summary]}] of the violations."""
    page.evaluate(AXE_JS.read_text(encoding="utf-8") + "\n;0")  # DevTools evaluation: the page keeps its CSP
    out = page.evaluate("""async () => {
      const r = await axe.run(document, {resultTypes: ['violations']});
      return r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
        nodes: v.nodes.map(n => [n.target.join(' '), (n.failureSummary || '').split('\\n').slice(0, 2).join(' ')])}));
    }""")
    return out


def failing(violations: list[dict]) -> list[dict]:
    return [v for v in violations if v["impact"] in IMPACTS or v["id"] in STRUCTURE]
