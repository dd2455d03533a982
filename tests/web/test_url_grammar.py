"""Every saved view's Fork address reads back as the same inputs through the page's own reader (one URL
grammar per page, written and read by the same code), and the Generate page opened there shows them."""
from __future__ import annotations

import html as html_lib
import json
import re
from urllib.parse import urlsplit

import pytest
from starlette.datastructures import QueryParams

from app.core.registration import build_views
from app.explorations.registry import to_jsonable

VIEWS = build_views()
# kind -> the reader of its page's address (what the page runs when it is opened): the codec registered with the view
READERS = {kind: spec.codec.read for kind, spec in VIEWS.all().items()}
STEER = {"prompt": "Tell me, please: a+b=c & 100%?", "system_prompt": "You are terse.\nVery.", "chat": True,
         "max_new_tokens": 7, "temperature": 0.7, "top_k": 3, "top_p": 0.9, "seed": 11,
         "steering": [{"sae": "fine", "index": 11150, "mode": "add", "value": 40.0},
                      {"sae": "coarse", "index": 3, "mode": "clamp", "value": -2.5}],
         "generated_only": True, "skip_sinks": False}
# richer inputs than the registered examples: every field away from its default
VARIANTS = {
    "generation": STEER, "steering": {**STEER, "top_n": 4},
    "dose": {**{k: v for k, v in STEER.items() if k not in ("steering",)}, "chat": False,
             "feature": {"sae": "fine", "index": 7, "mode": "clamp", "value": 1.5}, "strengths": [0.0, 10.0, -2.25, 1e-05],
             "promoted_top": 3},
    "temperature": {"prompt": "Once", "system_prompt": "Be brief.", "chat": False, "temperatures": [0.2, 1.5, 3.0],
                    "top_k": 4, "top_p": 0.5, "top_n": 6, "steering": STEER["steering"], "skip_sinks": False},
    "compare": {"prompt_a": "The cat", "prompt_b": "The dog", "tokens": [" Paris", " Rome"], "position": 2, "top": 4,
                "system_prompt": "Be brief.", "chat": False},
    "patching": {"clean": "The cat", "corrupt": "The dog", "answer": " Paris", "wrong": " Rome", "site": "mlp_out",
                 "features": False, "attribution": False, "system_prompt": "Be brief.", "chat": True},
    "heads": {"seq_len": 9, "n_seqs": 3, "seed": 5, "top": 4},
    "system_shift": {"prompt": "Which queue?", "system_a": "You are a cat.", "system_b": None, "chat": False, "top_n": 3,
                     "steering": STEER["steering"][:1], "generated_only": True},
}


def read_back(kind: str, inputs: dict) -> tuple[str, dict]:
    url = VIEWS.fork_url(kind, inputs)
    parts = urlsplit(url)
    return parts.path, to_jsonable(READERS[kind](QueryParams(parts.query)))


def test_every_registered_kind_has_a_reader():
    assert set(READERS) == set(VIEWS)


@pytest.mark.parametrize("kind", sorted(VIEWS))
def test_fork_address_reads_back_as_the_saved_inputs(kind):
    spec = VIEWS.get(kind)
    inputs = to_jsonable(spec.request_model.model_validate(spec.example))
    path, got = read_back(kind, inputs)
    assert path == spec.page_path
    assert got == inputs


@pytest.mark.parametrize("kind", sorted(VARIANTS))
def test_every_field_round_trips(kind):
    inputs = to_jsonable(VIEWS.get(kind).request_model.model_validate(VARIANTS[kind]))
    assert read_back(kind, inputs)[1] == inputs


def saved_inputs(html: str) -> dict:
    return json.loads(html_lib.unescape(re.search(r'<input type="hidden" name="inputs" value="([^"]*)"', html).group(1)))


@pytest.mark.parametrize("kind", ["steering", "dose"])
def test_fork_opens_the_page_filled_and_running(tiny_client, kind):
    """The issue's case: a saved steer view (fine feature, add 40, chat on) forked -> the rows and chat are there."""
    body = {**VARIANTS[kind], "max_new_tokens": 3}
    if kind == "steering":
        body["steering"] = [{"sae": "fine", "index": 100, "mode": "add", "value": 40.0}]
    else:
        body["feature"] = {"sae": "fine", "index": 100, "mode": "add", "value": 0.0}
    inputs = to_jsonable(VIEWS.get(kind).request_model.model_validate(body))
    r = tiny_client.get(VIEWS.fork_url(kind, inputs))
    assert r.status_code == 200, r.text
    page = r.text
    rows = re.findall(r'<div class="frow">(.*?)</div>', page.split('id="feature-rows"')[1].split("<template")[0], re.S)
    assert len(rows) == 1 and 'value="100"' in rows[0] and '<option value="fine" selected>' in rows[0]
    assert ('value="40.0"' if kind == "steering" else 'value="0.0"') in rows[0]
    want_chat = "on" if inputs["chat"] else "off"
    assert re.search(rf'<option value="{want_chat}" selected>', page)
    if kind == "dose":
        assert 'id="strengths" size="18" value="0.0,10.0,-2.25,1e-05"' in page
    assert saved_inputs(page) == inputs  # the view ran with exactly the saved inputs
