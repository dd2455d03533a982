"""Issue 30 item 1: the server says each address and its tab title, with the view's codec (app/web/codecs.py): a
fragment that pushes an address carries the title as a <title> (htmx sets document.title from it), the streamed
generation carries it beside HX-Push-Url, /map/figure answers the map's address and title, the map search pushes the
codec's address, and "Test steering" is the experiment codec's address; no script holds an address rule."""
from __future__ import annotations

import html
import re
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from starlette.datastructures import QueryParams

from app.core.registration import build_views
from app.explorations.registry import to_jsonable

VIEWS = build_views()
SITE = "Activation Space Navigator"
STATIC = Path(__file__).resolve().parents[2] / "static"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
# kind -> (the fragment its page's form posts to, inputs, the tab title written out by hand)
CASES = {
    "analysis": ("/fragments/analysis", {"prompt": "Hello there"}, f"Hello there · Analyze · {SITE}"),
    "generation": ("/fragments/generation", {"prompt": "Hello there", "max_new_tokens": 2},
                   f"Generation · Hello there · Generate & steer · {SITE}"),
    "steering": ("/fragments/steering", {"prompt": "Hello there", "max_new_tokens": 2,
                                         "steering": [{"sae": "coarse", "index": 3, "mode": "add", "value": 4.0}]},
                 f"Steered vs unsteered · Hello there · Generate & steer · {SITE}"),
    "temperature": ("/fragments/temperature", {"prompt": "x" * 70, "temperatures": [0.5, 1.0], "top_k": 5},
                    f"Temperatures · {'x' * 60} · Temperature & system prompts · {SITE}"),
    "map": ("/fragments/map", {"prompt": "Tell me about cats.", "color_by": "density"}, f"Tell me about cats. · Map · {SITE}"),
    "compare": ("/fragments/compare", None, f"Compare two prompts · {SITE}"),  # no prompt: the page's own title
}


def title_of(text: str) -> str | None:
    m = re.match(r"\s*<title>(.*?)</title>", text, re.S)
    return html.unescape(m.group(1)) if m else None


@pytest.mark.parametrize("kind", sorted(CASES))
def test_fragment_carries_the_codecs_title_and_the_page_says_the_same(tiny_client, kind):
    path, given, want = CASES[kind]
    spec = VIEWS.get(kind)
    inputs = to_jsonable(spec.request_model.model_validate(given or spec.example))
    url = spec.codec.write(inputs)
    r = tiny_client.post(path, content=urlsplit(url).query, headers=FORM)
    assert r.status_code == 200, r.text
    assert r.headers["HX-Push-Url"] == url
    assert title_of(r.text) == want  # first in the answer: htmx reads it there
    assert spec.codec.title(inputs) == want
    assert r.text.count("<title>") == 1
    page = tiny_client.get(url)  # the page at that address (a reload, htmx's history miss) says the same
    assert html.unescape(re.search(r"<title>(.*?)</title>", page.text, re.S).group(1)) == want


def test_failed_fragment_and_unpushed_panel_carry_no_title(tiny_client):
    r = tiny_client.post("/fragments/analysis", data={"prompt": ""})
    assert r.status_code == 422 and "<title>" not in r.text and "HX-Push-Url" not in r.headers


def test_bare_pages_keep_their_names(tiny_client):
    for path, want in (("/generate", "Generate & steer"), ("/temperature", "Temperature & system prompts"),
                       ("/generate?prompt=Hi", "Hi · Generate & steer"), ("/map", "Map"), ("/discover", "Discover"),
                       ("/experiment", "Steering experiment"), ("/patching", "Activation patching")):
        text = tiny_client.get(path).text
        assert html.unescape(re.search(r"<title>(.*?)</title>", text).group(1)) == f"{want} · {SITE}", path


def test_stream_carries_the_address_and_its_title(tiny_client):
    form = {"prompt": "Hello there · ü", "max_new_tokens": "2", "temperature": "0"}
    spec = VIEWS.get("generation")
    inputs = to_jsonable(spec.codec.read(form))
    with tiny_client.stream("POST", "/fragments/generation/stream", data=form) as r:
        assert r.status_code == 200
        "".join(r.iter_text())
        assert r.headers["HX-Push-Url"] == spec.codec.write(inputs)
        assert unquote(r.headers["X-Tab-Title"]) == f"Generation · Hello there · ü · Generate & steer · {SITE}"
    bad = tiny_client.post("/fragments/generation/stream", data={"prompt": "x", "max_new_tokens": "0"})
    assert bad.status_code == 422 and "max_new_tokens" in bad.headers["X-Error-Lines"]


def test_map_figure_answers_the_maps_address_and_title(tiny_client):
    from app.web.map_pages import CODEC

    cur = "http://testserver/map?prompt=Tell+me+about+cats.&color_by=density&q=fine%3A17&drift_ks=%5B0%2C1%5D"
    r = tiny_client.get("/map/figure?color_by=sae&show=fine", headers={"HX-Current-URL": cur})
    assert r.status_code == 200
    got = r.json()
    assert got["data"] and got["layout"]  # the figure as before
    q = parse_qs(urlsplit(got["address"]).query)
    assert urlsplit(got["address"]).path == "/map"
    assert q == {"prompt": ["Tell me about cats."], "color_by": ["sae"], "show": ["fine"], "q": ["fine:17"],
                 "drift_ks": ["[0,1]"]}
    assert got["title"] == f"Tell me about cats. · Map · {SITE}"
    req = CODEC.read(QueryParams(urlsplit(got["address"]).query))  # the map's codec reads it back
    assert (req.color_by, req.show, req.drift_ks, req.prompt) == ("sae", "fine", [0, 1], "Tell me about cats.")
    # a map without a prompt, back to the default colouring: the bare page
    plain = tiny_client.get("/map/figure?color_by=cluster&show=both",
                            headers={"HX-Current-URL": "http://testserver/map?color_by=density"}).json()
    assert plain["address"] == "/map" and plain["title"] == f"Map · {SITE}"


def test_map_search_pushes_the_codecs_address(tiny_client):
    from app.web.map_pages import CODEC

    cur = "http://testserver/map?prompt=cats&show=coarse&q=old"
    r = tiny_client.get("/fragments/map/search?q=fine:17", headers={"HX-Current-URL": cur})
    assert r.status_code == 200
    push = r.headers["HX-Push-Url"]
    assert push == CODEC.write({"prompt": "cats", "show": "coarse", "q": "fine:17"})
    assert parse_qs(urlsplit(push).query) == {"prompt": ["cats"], "show": ["coarse"], "q": ["fine:17"]}
    assert title_of(r.text) == f"cats · Map · {SITE}"


def test_test_steering_link_is_the_experiment_codecs_address():
    from app.web.experiment_pages import CODEC, page_url, test_steering_url

    inputs = {"cos_threshold": 0.3, "corr_threshold": 0.3, "concept_set": "france", "contrast_set": "neutral_glosses"}
    result = {"mapping": {"coarse": [5], "fine": [1, 2, 3], "cos": [[0.5, 0.2, 0.9]], "corr": [[0.4, 0.9, 0.5]]}}
    link = test_steering_url(inputs, result, 5)
    # the codec's: not started, the experiment's default concept set (france) left out
    assert parse_qs(urlsplit(link).query) == {"anchor": ["5"], "children": ["[3,1]"], "contrast_set": ["neutral_glosses"]}
    req = CODEC.read(QueryParams(urlsplit(link).query))
    assert (req.anchor, req.children, req.concept_set, req.contrast_set) == (5, [3, 1], "france", "neutral_glosses")
    assert link == page_url(req.model_dump(), run=False)  # written by the codec: defaults left out, not started


# what a script must not hold: an address read from or written into the location, or a view's input keys
ADDRESS_CODE = re.compile(r"location\.search|searchParams|URLSearchParams\(\s*location|new URL\(|pushState\(")
ALLOWED = {("forms.js", "chat"), ("forms.js", "no_default_system"),  # form fields whose change recounts the tokens
           ("attention.js", "q")}  # a CSS class (the query token)


def test_no_script_holds_an_address_rule():
    keys = {"view", "f", "t", "q", "run"} | {k for spec in VIEWS.all().values() for k in spec.request_model.model_fields}
    found = []
    for p in sorted(STATIC.glob("*.js")):
        if p.name.endswith(".min.js"):
            continue
        for i, line in enumerate(p.read_text().splitlines(), 1):
            found += [f"{p.name}:{i}: {m.group(0)}" for m in ADDRESS_CODE.finditer(line)]
            found += [f"{p.name}:{i}: {q}{k}{q}" for q, k in re.findall(r"""(['"])([A-Za-z_]+)\1""", line)
                      if k in keys and (p.name, k) not in ALLOWED]
            if re.search(r"""\b(VIEWS|Steered vs unsteered|Dose-response)\b""", line):
                found.append(f"{p.name}:{i}: a view's name")
    assert not found, found
