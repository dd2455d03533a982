"""The feature page, the search page, the header search box and the atlas part of the analysis card (tiny engine)."""
from __future__ import annotations

import re

import numpy as np
import pytest
from markupsafe import escape

from tests.atlas_fixtures import with_atlas


def busiest(atlas, sae="fine") -> int:
    return int(np.argmax(atlas.summaries[sae]["n_firing"]))


def test_feature_page_shows_examples_label_and_neighbours(atlas_client, atlas):
    f = busiest(atlas)
    r = atlas_client.get(f"/features/fine/{f}")
    assert r.status_code == 200
    page = r.text
    fa = atlas.feature("fine", f)
    assert str(escape(fa.label)) in page
    assert page.count('class="ex"') == len(fa.examples) + sum(len(b) for _, b in fa.quantiles)
    first = page[page.index('class="ex"'):]
    first = first[:first.index("</div>")]
    hl = re.findall(r'class="t (?:heat )?hl[^"]*"[^>]*title="([0-9.]+)"', first)
    assert len(hl) == 1 and float(hl[0]) == pytest.approx(fa.examples[0].activation, abs=1e-3)
    for nb in fa.neighbours["coarse"]:
        assert f'href="/features/coarse/{nb.index}"' in page
    assert 'name="q"' in page and 'action="/search"' in page  # the header search box
    assert "steer: add c = " in page and f"fine%3A{f}%3Aadd%3A" in page


def test_feature_page_unknown_index_is_404_naming_the_range(atlas_client):
    r = atlas_client.get("/features/fine/512")
    assert r.status_code == 404 and "0..511" in r.text
    assert atlas_client.get("/features/medium/3").status_code == 404
    assert atlas_client.get("/features/fine/abc").status_code == 404


def test_feature_page_without_atlas_names_the_command(tiny_client, tiny_engine):
    with with_atlas(tiny_engine, None):
        tiny_engine.atlas_status = "missing: no atlas in /x; build it with `python -m app atlas --profile tiny`"
        page = tiny_client.get("/features/coarse/1").text
    assert "python -m app atlas --profile tiny" in page and "make atlas" in page


def test_search_page_lists_both_modes_and_links_feature_pages(atlas_client, atlas):
    r = atlas_client.get("/search", params={"q": "Paris"})
    assert r.status_code == 200
    links = re.findall(r'class="hit" href="/features/(coarse|fine)/(\d+)"', r.text)
    assert links and "Fire on" in r.text and "Specific to the word" in r.text
    assert atlas_client.get("/search", params={"q": "  "}).status_code == 422
    assert atlas_client.get("/search", params={"q": "x" * 201}).status_code == 422


def test_analysis_card_fragment_carries_the_atlas(atlas_client, atlas):
    f = busiest(atlas, "coarse")
    r = atlas_client.post("/fragments/feature", data={"prompt": "The capital of France", "sae": "coarse", "index": str(f)})
    assert r.status_code == 200
    assert 'class="atlas"' in r.text and 'data-atlas="yes"' in r.text and re.search(r'class="t (?:heat )?hl', r.text)
    frag = atlas_client.get(f"/fragments/atlas/coarse/{f}")
    assert frag.status_code == 200 and 'data-atlas="yes"' in frag.text
    assert atlas_client.get("/fragments/atlas/coarse/64").status_code == 404
