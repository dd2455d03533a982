"""The /discover page in a real browser (tiny profile): the shipped France vs neutral experiment runs as a
background job with a progress bar, then all five views appear; thresholds re-render; sorting works."""
from __future__ import annotations

import pytest

from tests.web.browser import ARTIFACTS, BROWSER_MARKS, new_page, page_errors

pytestmark = [*BROWSER_MARKS, pytest.mark.usefixtures("one_torch_thread")]  # the server runs in this process


def test_shipped_france_experiment_end_to_end(live_server, browser):
    ARTIFACTS.mkdir(exist_ok=True)
    page = new_page(browser, 120_000, viewport={"width": 1400, "height": 1000})  # a loaded 2-core machine
    errors = page_errors(page)
    page.goto(live_server + "/discover")
    assert page.locator("select[name=concept_set]").input_value() == "france"
    assert page.locator("select[name=contrast_set]").input_value() == "neutral"
    assert page.locator(".custom[data-side=concept]").is_hidden()  # paste box only for "pasted / uploaded"
    page.fill("input[name=n_coarse]", "4")
    page.click("button.primary")
    # the progress bar while the 400 prompts run
    page.wait_for_selector(".job-progress progress", timeout=30_000)
    txt = page.locator(".job-progress").inner_text()
    assert "/ 400 prompts" in txt
    page.screenshot(path=str(ARTIFACTS / "discover-progress.png"))
    page.wait_for_selector(".discovery", timeout=240_000)
    assert "run=1" in page.url and "n_coarse=4" in page.url
    # two tables, the GO/NO-GO readout, four figures drawn by Plotly
    assert page.locator("table.features[data-sae=coarse] tbody tr").count() >= 5
    assert page.locator("table.features[data-sae=fine] tbody tr").count() >= 5
    assert page.locator(".gonogo-table tbody tr").count() == 4
    for fid in ("graph", "scatter", "heatmap", "histogram"):
        page.wait_for_selector(f".fig-{fid} .plot .main-svg", timeout=30_000)
    page.screenshot(path=str(ARTIFACTS / "discover-result.png"), full_page=True)

    # sorting: click "mean on concept" twice -> ascending
    col = page.locator("table.features[data-sae=coarse] thead th").nth(1)
    col.click()
    vals = [float(v) for v in page.locator("table.features[data-sae=coarse] tbody tr td:nth-child(2)").evaluate_all(
        "els => els.map(e => e.dataset.v)")]
    assert vals == sorted(vals, reverse=True)
    col.click()
    vals = [float(v) for v in page.locator("table.features[data-sae=coarse] tbody tr td:nth-child(2)").evaluate_all(
        "els => els.map(e => e.dataset.v)")]
    assert vals == sorted(vals)

    # a lower cosine threshold re-renders from the cached result: counts can only grow
    before = [int(t.rstrip("*")) for t in page.locator(".gonogo-table tbody tr td:nth-child(2)").all_inner_texts()]
    page.evaluate("document.querySelector('.discovery').dataset.old = '1'")
    page.fill(".view-knobs input[name=cos_threshold]", "0.15")
    page.locator(".view-knobs input[name=cos_threshold]").dispatch_event("change")
    page.wait_for_selector(".discovery:not([data-old]) .fig-histogram .main-svg")  # (CSP: no string eval)
    assert "0.15" in page.locator(".fig-histogram").inner_text()  # the histogram's title names the threshold
    after = [int(t.rstrip("*")) for t in page.locator(".gonogo-table tbody tr td:nth-child(2)").all_inner_texts()]
    assert len(after) == 4 and all(a >= b for a, b in zip(after, before)) and "cos_threshold=0.15" in page.url

    # reload the pushed address: the run starts by itself and comes from the cache
    page.goto(page.url)
    page.wait_for_selector(".discovery", timeout=30_000)
    assert page.locator(".gonogo-table tbody tr").count() == 4
    assert errors == []
