"""Pasted prompt sets too long for an address go behind `sha:` links that live in the Store (app/web/pasted_sets.py): another replica on the same
store opens the link, so does a restarted server, and no number of newer pastes pushes a set out."""
from __future__ import annotations

from urllib.parse import parse_qs, urlparse

import pytest

from app.engine import discovery as disc
from app.store import open_store
from app.web import pasted_sets
from tests.conftest import make_client

# long enough that the address cannot carry them inline (forms.MAX_URL): they go by content hash through the store
CONCEPT = [f"Recipe {i}: whisk the eggs with the sugar, simmer the sauce and knead the dough until smooth." for i in range(50)]
CONTRAST = [f"Note {i}: the train leaves at noon, a spider has eight legs and the sky is blue today." for i in range(50)]


def _paste_on(client) -> str:
    """Start a Discover run on pasted sets from the form; the address it pushes."""
    r = client.post("/discover/run", data={"concept_set": "custom", "concept_text": "\n".join(CONCEPT),
                                           "contrast_set": "custom", "contrast_text": "\n".join(CONTRAST)})
    assert r.status_code == 200, r.text
    return r.headers["HX-Push-Url"]


@pytest.fixture(params=["sqlite", "postgresql"])
def shared_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/shared.db"
    return request.getfixturevalue("pg_url")


def test_a_pasted_set_link_opens_on_the_other_replica(tiny_engine, shared_url):
    with make_client(tiny_engine, store_url=shared_url) as a, make_client(tiny_engine, store_url=shared_url) as b:
        url = _paste_on(a)
        q = parse_qs(urlparse(url).query)
        assert q["concept_set"] == [pasted_sets.set_ref(CONCEPT)] and q["contrast_set"] == [pasted_sets.set_ref(CONTRAST)]
        page = b.get(url)
        assert page.status_code == 200
        assert "not on this server" not in page.text and "no pasted set" not in page.text
        for p in CONCEPT + CONTRAST:  # the other replica's form shows the pasted prompts
            assert p in page.text


def test_a_pasted_set_survives_a_restart(tiny_engine, tmp_path):
    url = f"sqlite:///{tmp_path}/shared.db"
    with make_client(tiny_engine, store_url=url) as a:
        link = _paste_on(a)
    with make_client(tiny_engine, store_url=url) as again:
        page = again.get(link)
        assert page.status_code == 200 and CONCEPT[1] in page.text and "no pasted set" not in page.text


def test_an_unknown_hash_says_so_in_place(tiny_engine, tmp_path):
    with make_client(tiny_engine, store_url=f"sqlite:///{tmp_path}/s.db") as c:
        page = c.get("/discover?concept_set=sha:0123456789abcdef")
        assert "concept_set: no pasted set sha:0123456789abcdef" in page.text


def test_store_keeps_sets_by_content_hash(store_url):
    store = open_store(store_url)
    try:
        refs = [pasted_sets.keep(store, [f"prompt {i}", "two"]) for i in range(80)]  # more than the old 64-entry cache
        assert pasted_sets.lookup(store, refs[0]) == ["prompt 0", "two"]
        assert refs[0] == "sha:" + disc.prompt_set_hash(["prompt 0", "two"], [])
        assert pasted_sets.keep(store, ["prompt 0", "two"]) == refs[0]  # the same paste twice: one row, same link
        assert store.get_prompt_set("ffffffffffffffff") is None
        assert pasted_sets.lookup(store, "sha:nothex") is None
    finally:
        store.close()


def test_a_short_pasted_set_travels_inline(tiny_engine, tmp_path):
    with make_client(tiny_engine, store_url=f"sqlite:///{tmp_path}/s.db") as c:
        r = c.post("/discover/run", data={"concept_set": "custom", "concept_text": "a\nb\nc", "contrast_set": "custom",
                                          "contrast_text": "x\ny\nz"})
        q = parse_qs(urlparse(r.headers["HX-Push-Url"]).query)
        assert q["concept_prompts"] == ['["a","b","c"]'] and "concept_set" not in q
        page = c.get(r.headers["HX-Push-Url"])
        assert "a\nb\nc" in page.text
