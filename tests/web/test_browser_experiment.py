"""The steering experiment in a real browser (tiny profile): start from a discovery result ("Test steering"),
watch the progress bar, see the curves and the verdict, save the result and reopen it."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.web.browser import ARTIFACTS, BROWSER_MARKS, new_page, page_errors, save_from_box

SHOTS = Path(os.environ.get("ASN_SHOTS", str(ARTIFACTS)))
pytestmark = [*BROWSER_MARKS, pytest.mark.usefixtures("one_torch_thread")]  # the server runs in this process

CONCEPT = "\n".join(["Paris is the capital of France.", "I ate a croissant in Lyon.", "The Eiffel Tower at night.",
                     "French wine from Bordeaux.", "Marseille is a port on the Mediterranean.", "The Louvre holds the Mona Lisa."])
CONTRAST = "\n".join(["The cat sat on the mat.", "Water boils at 100 degrees.", "A triangle has three sides.",
                      "The bus was late again.", "She bought a new umbrella.", "Spiders have eight legs."])


def test_experiment_from_discovery_save_and_reopen(live_server, browser):
    ARTIFACTS.mkdir(exist_ok=True)
    page = new_page(browser, 120_000, viewport={"width": 1400, "height": 1000})
    errors = page_errors(page)
    page.goto(live_server + "/discover")
    for side, text in (("concept", CONCEPT), ("contrast", CONTRAST)):
        page.select_option(f"select[name={side}_set]", "custom")
        page.fill(f"textarea[name={side}_text]", text)
    page.fill("input[name=n_coarse]", "2")
    page.fill("input[name=min_fire_rate]", "0.1")
    page.click("#discover-form button.primary")
    page.wait_for_selector(".discovery a.test-steering", timeout=240_000)
    page.locator(".discovery a.test-steering").first.click()

    page.wait_for_url("**/experiment?**")
    anchor = page.locator("input[name=anchor]").input_value()
    assert anchor.isdigit()
    # the pasted sets travel with the link (inline when short, else by content hash through the store), not France
    assert page.locator("select[name=concept_set]").input_value() == "custom"
    assert page.locator("textarea[name=concept_text]").input_value() == CONCEPT
    assert page.locator("textarea[name=contrast_text]").input_value() == CONTRAST
    page.fill("input[name=n_prompts]", "3")
    page.fill("input[name=max_new_tokens]", "8")
    page.fill("input[name=strengths]", "2, 6")
    page.click("#experiment-form button.primary")
    page.wait_for_selector(".job-progress progress, .experiment", timeout=60_000)
    if page.locator(".job-progress progress").count():
        assert "steps" in page.locator(".job-progress").inner_text()
        assert "ETA 0 s" not in page.locator(".job-progress").inner_text()
        page.screenshot(path=str(ARTIFACTS / "experiment-progress.png"))
    page.wait_for_selector(".experiment .verdict.headline", timeout=300_000)
    assert "run=1" in page.url and f"anchor={anchor}" in page.url
    verdict = page.locator(".experiment .verdict.headline").inner_text()
    assert verdict.startswith("matched vector norm, add:")
    assert "no difference" not in verdict and "no rise" not in page.locator(".experiment .verdicts").inner_text().replace(
        "no rise detected at this sample size", "")
    assert page.locator(".experiment .concept-name").inner_text().startswith("pasted, 6 prompts, sha:")
    assert page.locator(".experiment .contrast-name").inner_text().startswith("pasted, 6 prompts, sha:")
    assert "held-out AUC" in page.locator(".experiment .measure").inner_text()
    assert "zeroshot" in page.locator(".experiment .measure").inner_text()
    # the measure's check on pushed texts: 3 of the 6 pasted contrast prompts (the other 3 fill the pushed preface)
    assert "3 contrast prompts not in the prefaces" in page.locator(".experiment .measure-pushes").inner_text()
    page.wait_for_selector("#exp-add-norm .main-svg", timeout=30_000)  # curves drawn by Plotly
    page.wait_for_selector("#exp-add-activation .main-svg", timeout=30_000)
    n_rows = page.locator("table.experiment-table tbody tr").count()
    assert n_rows == 1 + 4 * 2 + 4 * 2
    page.locator("details.condition[data-condition='coarse|add|activation|6'] summary").click()
    assert page.locator("details.condition[data-condition='coarse|add|activation|6'] li").count() == 3
    page.screenshot(path=str(ARTIFACTS / "experiment-result.png"), full_page=True)
    SHOTS.mkdir(parents=True, exist_ok=True)
    for w, h in ((1440, 900), (390, 844)):
        page.set_viewport_size({"width": w, "height": h})
        page.screenshot(path=str(SHOTS / f"experiment-pasted-{w}.png"), full_page=True)
        page.locator(".experiment .run-summary").scroll_into_view_if_needed()
        page.screenshot(path=str(SHOTS / f"experiment-pasted-{w}-verdict.png"))
        page.locator(".experiment .measure").screenshot(path=str(SHOTS / f"experiment-pasted-{w}-measure.png"))
        assert page.evaluate("document.documentElement.scrollWidth") <= w  # no sideways scroll
    page.set_viewport_size({"width": 1400, "height": 1000})

    box = page.locator(".experiment form.save-box")
    save_from_box(page, box, "France steering test")
    link = box.locator(".save-status a.saved-link")
    link.wait_for()
    href = link.get_attribute("href")

    other = browser.new_page(viewport={"width": 1400, "height": 1000})
    other.on("pageerror", lambda e: errors.append(str(e)))
    assert other.goto(live_server + href).status == 200
    assert other.locator("#saved-fragment .experiment .verdict.headline").inner_text() == verdict
    assert other.locator("#saved-fragment table.experiment-table tbody tr").count() == n_rows
    other.wait_for_selector("#saved-fragment #exp-add-norm .main-svg", timeout=30_000)
    other.screenshot(path=str(ARTIFACTS / "experiment-saved.png"), full_page=True)
    assert errors == []
