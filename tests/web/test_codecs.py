"""Each view's address codec (app/web/codecs.py, registered with the view): what it writes it reads back, for any
text a user may type; the address a page pushes (HX-Push-Url) and the links it renders are the codec's."""
from __future__ import annotations

import html as html_lib
import json
import re
from urllib.parse import urlsplit

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from starlette.datastructures import QueryParams

from app.core.registration import build_views
from app.explorations.registry import to_jsonable
from app.web.analysis_pages import analyze_url
from tests.web.test_url_grammar import VARIANTS

VIEWS = build_views()
# any text a user may type into a box: every plane but surrogates, with at least one visible character (a blank box
# is "not given" on every page)
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=40).filter(lambda s: s.strip() != "")


def base_inputs(kind: str) -> dict:
    spec = VIEWS.get(kind)
    return to_jsonable(spec.request_model.model_validate(VARIANTS.get(kind, spec.example)))


def _free_text(schema: dict) -> bool:
    """A JSON-schema node that takes any string (no enum, pattern or format)."""
    opts = schema.get("anyOf", [schema])
    return any(o.get("type") == "string" and not {"enum", "pattern", "const", "format"} & o.keys() for o in opts)


def text_fields(kind: str) -> dict:
    """field -> strategy for each of the request's free-text fields (a box) and lists of them (pasted prompts)."""
    props = VIEWS.get(kind).request_model.model_json_schema()["properties"]
    out = {}
    for name, sch in props.items():
        if name.endswith("_set"):  # a shipped set's name, chosen from a list
            continue
        if _free_text(sch):
            out[name] = TEXT
        elif any(o.get("type") == "array" and _free_text(o.get("items", {})) for o in sch.get("anyOf", [sch])):
            n = len(base_inputs(kind).get(name) or ()) or 3  # a pair of tokens stays a pair
            out[name] = st.lists(TEXT, min_size=n, max_size=n)
    return out


def round_trip(kind: str, inputs: dict) -> dict:
    codec = VIEWS.get(kind).codec
    url = codec.write(inputs)
    assert url is not None and urlsplit(url).path == codec.path
    return to_jsonable(codec.read(QueryParams(urlsplit(url).query)))


def test_every_view_has_a_codec_at_its_page():
    for kind, spec in VIEWS.all().items():
        assert spec.codec is not None, kind
        assert spec.page_path == spec.codec.path


@pytest.mark.parametrize("kind", sorted(VIEWS))
def test_codec_round_trips_any_text(kind):
    fields = text_fields(kind)  # heads has none: its example round-trips once

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.filter_too_much])
    @given(st.fixed_dictionaries(fields))
    def check(texts):
        try:
            inputs = to_jsonable(VIEWS.get(kind).request_model.model_validate({**base_inputs(kind), **texts}))
        except ValidationError:
            assume(False)  # text the request itself refuses (a length or character rule) has no address
        assert round_trip(kind, inputs) == inputs

    check()


@given(st.lists(st.tuples(st.sampled_from(["coarse", "fine"]), st.integers(0, 10**6),
                          st.sampled_from(["add", "clamp"]), st.floats(-500, 500, allow_nan=False))),
       st.one_of(st.none(), st.booleans()), st.integers(1, 64))
@settings(max_examples=60, deadline=None)
def test_generate_codec_round_trips_features(feats, chat, max_new):
    inputs = to_jsonable(VIEWS.get("steering").request_model.model_validate(
        {"prompt": "x", "chat": chat, "max_new_tokens": max_new,
         "steering": [{"sae": s, "index": i, "mode": m, "value": v} for s, i, m, v in feats]}))
    assert round_trip("steering", inputs) == inputs


# kind -> the fragment its page's form posts to (the page pushes the address of what it computed)
FRAGMENTS = {"analysis": "/fragments/analysis", "generation": "/fragments/generation", "steering": "/fragments/steering",
             "dose": "/fragments/dose", "temperature": "/fragments/temperature", "system_shift": "/fragments/system_shift",
             "split_map": "/fragments/split_map", "compare": "/fragments/compare", "patching": "/fragments/patching",
             "heads": "/fragments/heads", "map": "/fragments/map", "discovery": "/discover/run"}


@pytest.mark.parametrize("kind", sorted(FRAGMENTS))
def test_pushed_address_is_the_codecs(tiny_client, kind):
    """The page's form sent as its address says -> the answer pushes exactly the codec's address of those inputs."""
    spec = VIEWS.get(kind)
    inputs = to_jsonable(spec.request_model.model_validate(spec.example))
    url = spec.codec.write(inputs)
    r = tiny_client.post(FRAGMENTS[kind], content=urlsplit(url).query,
                         headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 200, r.text
    assert r.headers["HX-Push-Url"] == url


def test_streamed_generation_pushes_the_codecs_address_and_links_analyze(tiny_client):
    spec = VIEWS.get("generation")
    body = {"prompt": "Hello there", "max_new_tokens": 3, "temperature": 0.0}
    form = {k: str(v) for k, v in body.items()}  # the page posts its form
    with tiny_client.stream("POST", "/fragments/generation/stream", data=form) as r:
        text = "".join(r.iter_text())
        assert r.headers["HX-Push-Url"] == spec.codec.write(to_jsonable(spec.request_model.model_validate(body)))
    done = re.search(r"event: done\ndata: (.*)\n", text).group(1)
    gen = json.loads(done)
    links = json.loads(re.search(r"event: links\ndata: (.*)\n", text).group(1))["html"]
    href = html_lib.unescape(re.search(r'class="analyze-link" href="([^"]+)"', links).group(1))
    assert href == analyze_url(gen["prompt_text"] + gen["generation"]["text"])
    # the link opens Analyze on that text as it is (no chat template)
    assert to_jsonable(VIEWS.get("analysis").codec.read(QueryParams(urlsplit(href).query)))["chat"] is False


def test_rendered_analyze_link_is_the_codecs(tiny_client):
    r = tiny_client.post("/fragments/generation", data={"prompt": "Hello", "max_new_tokens": "2", "temperature": "0"})
    assert r.status_code == 200
    href = html_lib.unescape(re.search(r'class="analyze-link" href="([^"]+)"', r.text).group(1))
    prompt_text = html_lib.unescape(re.search(r'<input type="hidden" name="result" value="([^"]*)"', r.text).group(1))
    res = json.loads(prompt_text)
    assert href == analyze_url(res["prompt_text"] + res["generation"]["text"])
