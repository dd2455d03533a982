"""Split maps and token attribution in a real browser (Playwright + Debian chromium, tiny profile with a planted
split and an atlas): open a split map from a coarse card, see children, holes and the histogram, save it and
open the share link; attribute a token in the analysis view and open a card from an entry."""
from __future__ import annotations

import pytest

from tests.conftest import serve_engine
from tests.splits_fixtures import HALVES, planted_engine
from tests.web.browser import ARTIFACTS, BROWSER_MARKS, TIMEOUT_MS, new_page, page_errors

pytestmark = BROWSER_MARKS
PROMPT = "The capital of France is Paris"
VIEWPORT = {"width": 1400, "height": 1000}


@pytest.fixture(scope="module")
def live():
    eng, C = planted_engine()
    with serve_engine(eng) as url:
        yield url, C


def test_split_map_from_a_coarse_card_then_save_and_share(live, browser):
    url, C = live
    page = new_page(browser, viewport=VIEWPORT)
    errors = page_errors(page)
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
    page = new_page(browser, viewport=VIEWPORT)
    errors = page_errors(page)
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
