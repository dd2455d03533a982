"""The lens panel's logit / tuned switch in a real browser (tiny profile with a random tuned lens from a folder): the
click swaps in the tuned lens and its KL strip, the address carries lens_kind=tuned (reload reproduces it), the
next Analyze keeps the kind; at 390 px nothing scrolls sideways. Without a lens the button is disabled and says why."""
from __future__ import annotations

import torch

from app.engine import tuned_lens as TL
from tests.conftest import serve_engine, wait_js
from tests.web.browser import ARTIFACTS, BROWSER_MARKS, api, new_page

pytestmark = BROWSER_MARKS

PROMPT = "The cat sat on the mat"


def open_lens(page, url: str) -> None:
    page.goto(url + "/?prompt=" + PROMPT.replace(" ", "+"))
    page.wait_for_selector("#lens-kl-fig .main-svg")


def test_switch_to_tuned_and_back(browser, tiny_engine, tmp_path):
    m = tiny_engine.model
    n, d = m.cfg.n_layers, m.cfg.d_model
    g = torch.Generator().manual_seed(3)
    TL.save_tuned_lens(TL.TunedLens(torch.eye(d) + 0.4 * torch.randn(n, d, d, generator=g), torch.zeros(n, d)),
                       tmp_path / "tiny", "tiny")
    before = tiny_engine.tuned_lens, tiny_engine.tuned_lens_status
    tiny_engine.load_tuned_lens(tmp_path)
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        with serve_engine(tiny_engine) as url:
            for w, h in ((1440, 900), (390, 844)):
                page = new_page(browser, viewport={"width": w, "height": h})
                open_lens(page, url)
                assert page.inner_text("#lens h2").startswith("Logit lens")
                with page.expect_response(lambda r: "/fragments/analysis/lens" in r.url):
                    page.click("#lens .seg button[value=tuned]")
                page.wait_for_selector("#lens .seg button[value=tuned][aria-pressed=true]")
                assert page.inner_text("#lens h2").startswith("Tuned lens")
                wait_js(page, "location.search.includes('lens_kind=tuned')")
                truth = api(page, "POST", url + "/api/lens", {"prompt": PROMPT, "lens_kind": "tuned"})
                shown = page.evaluate("JSON.parse(document.querySelector('[data-figure=\"lens-kl-fig\"]').textContent)")
                assert shown["data"][0]["text"][0] == [f"{v:.2f}" if v < 9.995 else f"{v:.1f}" for v in truth["kl_mean"]]
                assert page.evaluate("document.documentElement.scrollWidth") <= w
                page.screenshot(path=str(ARTIFACTS / f"tuned-lens-switch-{w}.png"), full_page=True)
                assert page.input_value("#lens-kind-field") == "tuned"  # the next Analyze keeps the kind
                with page.expect_response(lambda r: "/fragments/analysis/lens" in r.url):
                    page.click("#analyze-btn")
                page.wait_for_selector("#lens .seg button[value=tuned][aria-pressed=true]")
                page.reload()
                page.wait_for_selector("#lens .seg button[value=tuned][aria-pressed=true]")
                with page.expect_response(lambda r: "/fragments/analysis/lens" in r.url):
                    page.click("#lens .seg button[value=logit]")
                page.wait_for_selector("#lens .seg button[value=logit][aria-pressed=true]")
                wait_js(page, "!location.search.includes('lens_kind')")
                page.close()
        tiny_engine.tuned_lens, tiny_engine.tuned_lens_status = before
        with serve_engine(tiny_engine) as url:
            page = new_page(browser, viewport={"width": 390, "height": 844})
            open_lens(page, url)
            assert page.is_disabled("#lens .seg button[value=tuned]")
            assert "no tuned lens in data/lens/tiny" in page.inner_text("#lens-why")
            assert page.evaluate("document.documentElement.scrollWidth") <= 390
            page.screenshot(path=str(ARTIFACTS / "tuned-lens-disabled-390.png"), full_page=True)
            page.close()
    finally:
        tiny_engine.tuned_lens, tiny_engine.tuned_lens_status = before
