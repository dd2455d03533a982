"""The analysis view in a real browser: Playwright driving Debian's chromium against a live uvicorn (tiny profile)."""
from __future__ import annotations

from urllib.parse import parse_qs, urlparse

import pytest

from tests.conftest import wait_js
from tests.web.browser import ARTIFACTS, BROWSER_MARKS, api, new_page, page_errors

pytestmark = BROWSER_MARKS


def test_analyse_click_token_and_feature(live_server, browser):
    page = new_page(browser, viewport={"width": 1400, "height": 1000})
    errors = page_errors(page)
    page.goto(live_server + "/")
    prompt = "The cat sat on the mat"
    page.fill("#prompt", prompt)
    page.click("#analyze-btn")
    page.wait_for_selector(".strip .tok")

    # the strip: one token per byte with the byte tokenizer, spaces shown as a marker
    toks = page.locator(".strip .tok .t").all_inner_texts()
    assert "".join(toks) == prompt.replace(" ", "·")
    assert page.locator(".strip .tok.sink").count() == 1  # position 0
    # the address carries the inputs (no full page load happened: htmx pushed it)
    assert parse_qs(urlparse(page.url).query)["prompt"] == [prompt]

    truth = api(page, "POST", live_server + "/api/analyze", {"prompt": prompt})
    # the last token's panel is open by default; click token 4 ("c" of cat) and its panel shows the API's features
    assert page.locator("#tokpanel-%d" % (len(prompt) - 1)).is_visible()
    page.click("#tok-4")
    assert page.locator("#tokpanel-4").is_visible()
    assert not page.locator("#tokpanel-%d" % (len(prompt) - 1)).is_visible()
    for sae in ("coarse", "fine"):
        shown = [int(x) for x in page.locator(f"#tokpanel-4 .saecol[data-sae={sae}] button.feat").evaluate_all(
            "els => els.map(e => e.dataset.index)")]
        assert shown == truth["tokens"][4]["saes"][sae]["indices"]
        assert shown, "a non-sink token of the tiny model has active features"

    # click the top fine feature: the card opens and the tokens are coloured by its activation
    idx = truth["tokens"][4]["saes"]["fine"]["indices"][0]
    page.click(f"#tokpanel-4 .saecol[data-sae=fine] button.feat[data-index='{idx}']")
    page.wait_for_selector(f"#fcard[data-index='{idx}']")
    card = api(page, "GET", live_server + f"/api/features/fine/{idx}?top=12&prompt=" + prompt.replace(" ", "%20"))
    assert page.locator("#fcard h2").inner_text().replace("\n", " ") == f"F-{idx} fine SAE"
    on = page.locator(".strip .tok.on").evaluate_all("els => els.map(e => +e.dataset.pos)")
    assert on == [p for p, a in enumerate(card["activations"]) if a > 0]
    assert 4 in on
    # the strongest token carries the darkest colour and its value
    best = card["max_position"]
    assert page.locator(f"#tok-{best} .a").inner_text() == f"{card['activations'][best]:.2f}"
    promoted = page.locator("#fcard .logits.up li").count()
    assert promoted == len(card["promoted"])
    assert parse_qs(urlparse(page.url).query)["feature"] == [f"fine:{idx}"]

    # the logit lens heatmap is drawn with the API's numbers
    page.wait_for_selector("#lens-fig .main-svg")
    z = page.evaluate("document.getElementById('lens-fig').data[0].z")
    lens = api(page, "POST", live_server + "/api/lens", {"prompt": prompt})
    assert len(z) == len(lens["layers"]) and len(z[0]) == len(prompt)
    assert z[-1][-1] == pytest.approx(lens["top_probs"][-1][-1][0], rel=1e-6)

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "analysis.png"), full_page=True)

    # a copied address reproduces the view, feature card included
    url = page.url
    page2 = new_page(browser, viewport={"width": 1200, "height": 900})
    page2.goto(url)
    page2.wait_for_selector(f"#fcard[data-index='{idx}']")
    assert page2.locator(".strip .tok.on").count() == len(on)
    assert page2.input_value("#prompt") == prompt
    page2.close()

    # back button: the address without the feature, and the view still there
    page.go_back()
    wait_js(page, "!location.search.includes('feature=')")
    page.wait_for_selector(".strip .tok")
    assert errors == []
    page.close()


def test_model_text_is_not_markup_and_limits_show(live_server, browser):
    page = new_page(browser)
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(live_server + "/")
    assert "256 tokens" in page.inner_text("#limits")
    page.fill("#prompt", "<img src=x onerror=alert(1)>")
    page.click("#analyze-btn")
    page.wait_for_selector(".strip .tok")
    assert page.locator("#result img").count() == 0
    assert page.locator(".strip .tok .t").first.inner_text() == "<"
    # a prompt over the token limit: the 422 names the field and the limit, in place
    page.fill("#prompt", "x" * 300)
    page.click("#analyze-btn")
    page.wait_for_selector("#result .errors")
    assert "limit is 256" in page.inner_text("#result .errors")
    assert dialogs == []
    page.close()
