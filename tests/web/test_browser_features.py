"""Feature atlas in a real browser (Playwright + Debian chromium, tiny profile): open a card, see examples with a
highlighted token, click a neighbour, search from the header and land on a feature page."""
from __future__ import annotations

import re

import pytest

from tests.atlas_fixtures import tiny_atlas, with_atlas
from tests.conftest import serve_engine
from tests.web.browser import ARTIFACTS, BROWSER_MARKS, new_page, page_errors

pytestmark = BROWSER_MARKS


@pytest.fixture(scope="module")
def live(tiny_engine):
    atlas = tiny_atlas(tiny_engine)
    with with_atlas(tiny_engine, atlas), serve_engine(tiny_engine) as url:
        yield url, atlas


def test_card_examples_neighbour_and_search(live, browser):
    url, atlas = live
    page = new_page(browser, viewport={"width": 1400, "height": 1000})
    errors = page_errors(page)
    # analysis: click a feature of a token -> its card shows atlas examples with one highlighted token each
    page.goto(url + "/")
    page.fill("#prompt", "The capital of France is Paris")
    page.click("#analyze-btn")
    page.wait_for_selector(".strip .tok")
    page.click("#tok-5")
    page.locator("#tokpanel-5 .saecol[data-sae=fine] button.feat").first.click()
    page.wait_for_selector("#fcard .atlas")
    idx = int(page.get_attribute("#fcard", "data-index"))
    fa = atlas.feature("fine", idx)
    if fa.examples:
        assert page.locator("#fcard .atlas-examples .ex").count() == len(fa.examples)
        assert page.locator("#fcard .atlas-examples .ex").first.locator(".t.hl").count() == 1
        assert page.inner_text("#fcard .atlas-label") == fa.label
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "feature_card_atlas.png"), full_page=True)

    # a neighbour of the other width is a link to its feature page
    nb = page.locator("#fcard a.nb[data-sae=coarse]").first
    target = int(nb.get_attribute("data-index"))
    nb.click()
    page.wait_for_url(re.compile(rf"/features/coarse/{target}$"))
    assert page.inner_text("h1").startswith(f"C-{target}")
    assert page.locator(".atlas-examples .ex .t.hl").count() == len(atlas.feature("coarse", target).examples)

    # the header search box: results of both modes, a click lands on a feature page
    page.fill("header form.hsearch input[name=q]", "Paris")
    page.press("header form.hsearch input[name=q]", "Enter")
    page.wait_for_selector("#search-page table.search-hits")
    hit = page.locator("a.hit").first
    href = hit.get_attribute("href")
    hit.click()
    page.wait_for_url(re.compile(re.escape(href) + "$"))
    page.wait_for_selector("#feature-page .atlas")
    page.screenshot(path=str(ARTIFACTS / "feature_page.png"), full_page=True)
    assert errors == []
