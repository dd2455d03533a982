"""The experiment page takes pasted and uploaded prompt sets, keeps them in the store under their hash, and a
"Test steering" link from a discovery on pasted sets carries them (tiny profile)."""
from __future__ import annotations

import json
from urllib.parse import parse_qs, urlparse

from app.web import pasted_sets
from app.web.experiment_pages import test_steering_url as steering_link
from tests.conftest import make_client

CONCEPT = ["Whisk the eggs with the sugar.", "Simmer the sauce for ten minutes.", "Knead the dough until smooth."]
CONTRAST = ["The train leaves at noon.", "A spider has eight legs.", "The sky is blue today."]
BIG_C = [f"Recipe {i}: whisk the eggs with the sugar, simmer the sauce and knead the dough until smooth." for i in range(50)]
BIG_N = [f"Note {i}: the train leaves at noon, a spider has eight legs and the sky is blue today." for i in range(50)]
SMALL = {"anchor": "3", "children": "5", "n_prompts": "1", "max_new_tokens": "2", "strengths": "1",
         "matched_norm": "false", "eval_set": "eval_open"}


def test_uploaded_sets_run_and_their_link_opens_on_another_replica(tiny_engine, tmp_path):
    url = f"sqlite:///{tmp_path}/shared.db"
    with make_client(tiny_engine, store_url=url) as a, make_client(tiny_engine, store_url=url) as b:
        files = {"concept_file": ("cooking.txt", "\n".join(BIG_C).encode(), "text/plain"),
                 "contrast_file": ("neutral.txt", "\n".join(BIG_N).encode(), "text/plain")}
        r = a.post("/experiment/run", data={**SMALL, "concept_set": "france", "contrast_set": "neutral"}, files=files)
        assert r.status_code == 200, r.text
        q = parse_qs(urlparse(r.headers["HX-Push-Url"]).query)
        assert q["concept_set"] == [pasted_sets.set_ref(BIG_C)] and q["contrast_set"] == [pasted_sets.set_ref(BIG_N)]
        page = b.get(r.headers["HX-Push-Url"])
        assert page.status_code == 200 and "no pasted set" not in page.text
        assert "\n".join(BIG_C) in page.text and "\n".join(BIG_N) in page.text


def test_pasted_text_is_used_instead_of_the_shipped_set(tiny_engine, tmp_path):
    with make_client(tiny_engine, store_url=f"sqlite:///{tmp_path}/s.db") as c:
        r = c.post("/experiment/run", data={**SMALL, "concept_set": "custom", "concept_text": "\n".join(CONCEPT),
                                            "contrast_set": "neutral"})
        q = parse_qs(urlparse(r.headers["HX-Push-Url"]).query)
        assert json.loads(q["concept_prompts"][0]) == CONCEPT and "contrast_set" not in q  # short: inline; neutral: default


def test_test_steering_link_carries_pasted_and_shipped_sets():
    result = {"mapping": {"coarse": [7], "fine": [1, 2], "cos": [[0.5, 0.1]], "corr": [[0.6, 0.9]]}}
    link = steering_link({"concept_prompts": CONCEPT, "contrast_set": "neutral_glosses"}, result, 7)
    q = parse_qs(urlparse(link).query)
    assert q["anchor"] == ["7"] and q["children"] == ["[1]"]
    assert json.loads(q["concept_prompts"][0]) == CONCEPT and q["contrast_set"] == ["neutral_glosses"]
    big = parse_qs(urlparse(steering_link({"concept_prompts": BIG_C, "contrast_prompts": BIG_N}, result, 7)).query)
    assert big["concept_set"] == [pasted_sets.set_ref(BIG_C)] and big["contrast_set"] == [pasted_sets.set_ref(BIG_N)]


def test_experiment_page_links_the_cross_concept_report(tiny_client):
    page = tiny_client.get("/experiment?anchor=3")
    assert 'href="/experiment/report"' in page.text
    md = tiny_client.get("/experiment/report.md")
    assert md.status_code == 200 and md.text.startswith("# Does coarse + fine steering beat one resolution?")
    assert md.headers["content-type"].startswith("text/markdown")
    r = tiny_client.get("/experiment/report")  # the same text as a page, with the figure
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert '<img src="/experiment/steering-experiment.svg"' in r.text and 'href="/experiment/report.md"' in r.text
    para = md.text.split("\n")[2]  # the answer paragraph
    assert para[:80].replace("&", "&amp;") in r.text.replace("&#39;", "'")
    assert "![" not in r.text  # the figure is an <img>, not markdown
    assert "<h2>Per concept</h2>" in r.text and "## " not in r.text and r.text.count("<li>") >= 3  # rendered, not raw
