"""Split maps and token attribution in a real browser (Playwright + Debian chromium, tiny profile with a planted
split and an atlas): open a split map from a coarse card, see children, holes and the histogram, save it and
open the share link; attribute a token in the analysis view and open a card from an entry."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import serve_app
from tests.splits_fixtures import HALVES, planted_engine

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian chromium not installed (make browser)")]
TIMEOUT_MS = 240_000  # the test machine is shared with SAE training and other suites
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--disable-dev-shm-usage"]
PROMPT = "The capital of France is Paris"


@pytest.fixture(scope="module")
def live():
    from app.core.settings import Settings
    from app.main import create_app

    eng, C = planted_engine()
    with serve_app(create_app(Settings(profile="tiny"), engine_factory=lambda s: eng)) as url:
        yield url, C


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS)
        yield b
        b.close()


def new_page(browser):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(TIMEOUT_MS)
    page.set_default_navigation_timeout(TIMEOUT_MS)
    return page


def test_split_map_from_a_coarse_card_then_save_and_share(live, browser):
    url, C = live
    page = new_page(browser)
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{url}/?prompt=The+capital+of+France+is&feature=coarse:{C}")
    page.click("#fcard-split")
    page.wait_for_url(f"**/splits?coarse={C}*")
    page.wait_for_selector("#children-table")
    children = page.locator("#children-table tbody tr a.flink").all_inner_texts()
    assert {f"F-{h}" for h in HALVES} <= set(children)
    assert page.locator("#holes-coarse h4").inner_text().startswith(f"C-{C} fires strongly")
    assert page.locator("#holes-fine h4").count() == 1
    page.wait_for_selector("#split-hist-fig .main-svg")  # Plotly drew the max-cosine histogram
    page.wait_for_selector("#split-children-fig .main-svg")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "split_map.png"), full_page=True)
    # save and open the share link in a fresh context: the same children
    page.fill("#split-map .save-box input[name=title]", "planted split")
    page.click("#split-map .save-box .save-button")
    link = page.wait_for_selector("#split-map .save-status a.saved-link")
    href = link.get_attribute("href")
    other = browser.new_context().new_page()
    other.set_default_timeout(TIMEOUT_MS)
    other.goto(url + href)
    assert set(other.locator("#children-table tbody tr a.flink").all_inner_texts()) == set(children)
    other.close()
    assert not errors, errors


def test_attribute_a_token_and_open_a_card(live, browser):
    url, C = live
    page = new_page(browser)
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{url}/?prompt=The+capital+of+France+is+Paris")
    page.wait_for_selector("#attr-form")
    page.click("#tok-10")  # picking a token sets the position
    assert page.input_value("#attr-position") == "10"
    page.click("#attr-btn")
    page.wait_for_selector("#attr-table tbody tr")
    assert "(position 10)" in page.locator("#attribution h2").inner_text()
    assert page.locator("#attr-correlation").count() == 1
    first = page.locator("#attr-table a.attr-feat").first
    sae, idx = first.get_attribute("data-sae"), first.get_attribute("data-index")
    first.click()
    card = page.wait_for_selector(f'#fcard[data-sae="{sae}"][data-index="{idx}"]')
    assert card is not None and page.url.startswith(url + "/")  # the card opened in place, not a navigation away
    page.wait_for_selector("#attr-ablation-fig .main-svg")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "attribution.png"), full_page=True)
    assert not errors, errors
