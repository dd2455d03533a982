"""/e pages: the Save button's form round trip from a live view, the snapshot page, import form, list,
re-run fragment, export; query-string helpers."""
from __future__ import annotations

import html
import json
import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
from pydantic import BaseModel, Field

from app.core.registration import build_app_templates, build_views
from app.core.settings import Limits
from app.explorations.registry import ViewRegistry
from app.web.templating import render_snapshot
from tests.conftest import make_client

VIEWS, TEMPLATES = build_views(), build_app_templates()  # what create_app registers


def render_fragment(kind, inputs, result):
    return render_snapshot(TEMPLATES, VIEWS, kind, inputs, result)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


class SaveForms(HTMLParser):
    """The hidden fields of every Save form in a page, as the browser would submit them (entities decoded)."""

    def __init__(self):
        super().__init__()
        self.forms: list[dict] = []
        self._in = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form" and "save-box" in (a.get("class") or ""):
            self.forms.append({"_action": a.get("action"), "_hx": a.get("hx-post"), "_enctype": a.get("enctype")})
            self._in = True
        elif tag == "input" and self._in and a.get("type") == "hidden":
            self.forms[-1][a["name"]] = a.get("value", "")

    def handle_endtag(self, tag):
        if tag == "form":
            self._in = False


def save_forms(html: str) -> list[dict]:
    p = SaveForms()
    p.feed(html)
    return p.forms


def live_analysis(client, prompt="Tom & <Jerry>", top_k="4"):
    r = client.post("/fragments/analysis", data={"prompt": prompt, "top_k": top_k})
    assert r.status_code == 200
    return r.text


def lens_reply(client, live: str) -> str:
    """The second step of the live view: the features fragment asks /fragments/analysis/lens (hx-vals of #lens-slot);
    its reply carries the lens and, out of band, the Save box with the complete result."""
    m = re.search(r'<div id="lens-slot"[^>]*hx-post="/fragments/analysis/lens"[^>]*hx-vals="([^"]*)"', live)
    assert m, "the features fragment asks for the lens"
    r = client.post("/fragments/analysis/lens", data=json.loads(html.unescape(m.group(1))))
    assert r.status_code == 200 and 'hx-swap-oob="innerHTML:#analysis .save-slot"' in r.text
    return r.text


def live_save_form(client, prompt="Tom & <Jerry>", top_k="4") -> dict:
    """The Save form the user sees once the lens arrived (the features-only one is replaced by it)."""
    forms = save_forms(lens_reply(client, live_analysis(client, prompt, top_k)))
    assert len(forms) == 1
    return forms[0]


def submit(client, form, htmx=False, **fields):
    data = {k: v for k, v in form.items() if not k.startswith("_")} | fields
    files = {k: (None, v) for k, v in data.items()}  # multipart, as hx-encoding / enctype say
    headers = {"hx-request": "true"} if htmx else {}
    return client.post(form["_action"], files=files, headers=headers, follow_redirects=False)


def test_save_button_round_trip_from_the_live_analysis_view(client):
    live = live_analysis(client)  # step 1: the features; the lens is asked for afterwards
    assert len(save_forms(live)) == 1
    lens = lens_reply(client, live)  # step 2: the lens, and the Save box again with the complete result
    forms = save_forms(lens)
    assert len(forms) == 1
    form = forms[0]
    assert form["_action"] == form["_hx"] == "/e/save" and form["_enctype"] == "multipart/form-data"
    assert form["kind"] == "analysis"
    assert json.loads(form["result"])["lens"] is not None
    r = submit(client, form, title="Tom <and> Jerry", note="line one\nline two")
    assert r.status_code == 303
    url = r.headers["location"]
    assert re.fullmatch(r"/e/[A-Za-z0-9_-]{22,}", url)
    i = url.rsplit("/", 1)[1]
    doc = client.get(f"/api/explorations/{i}").json()
    # what was saved is what the view showed once complete: the same as the JSON API answer for these inputs
    api = client.post("/api/analyze", json=doc["inputs"]).json()
    assert doc["inputs"]["prompt"] == "Tom & <Jerry>" and doc["inputs"]["top_k"] == 4
    assert doc["result"] == api
    assert doc["title"] == "Tom <and> Jerry" and doc["note"] == "line one\nline two"
    # and it renders as the complete live view: the analysis fragment from the saved dicts, with the lens drawn
    saved = client.get(f"/api/explorations/{i}/fragment").text
    assert saved == render_fragment("analysis", doc["inputs"], doc["result"])[0]
    lens_panel = lens[:lens.index('<div hx-swap-oob=')].strip()
    assert 'class="lens-switch"' in lens_panel  # the live logit / tuned switch: a snapshot names its lens instead
    lens_panel = re.sub(r'<form class="lens-switch".*?</form>', "", lens_panel, flags=re.S)
    assert lens_panel and lens_panel in saved and "lens-slot" not in saved
    page = client.get(url)
    assert page.status_code == 200 and saved in page.text
    assert "Tom &lt;and&gt; Jerry" in page.text and "<and>" not in page.text
    # the saved page's own Save box is hidden; the saved fragment carries the same hidden fields
    assert save_forms(page.text)[0] == form
    assert ".saved-fragment .save-box { display: none !important; }" in page.text


def test_save_with_htmx_answers_a_share_link(client):
    form = save_forms(live_analysis(client, "abc"))[0]
    r = submit(client, form, htmx=True, title="")
    assert r.status_code == 201
    m = re.search(r'href="(/e/[A-Za-z0-9_-]+)"', r.text)
    assert m and f'value="http://testserver{m.group(1)}"' in r.text
    assert "analysis: abc" in r.text  # default title from the prompt
    assert client.get(m.group(1)).status_code == 200


def test_save_errors_are_shown_and_nothing_is_stored(client):
    form = save_forms(live_analysis(client, "abc"))[0]
    r = submit(client, form, htmx=True, title="x" * 201)
    assert r.status_code == 422 and "Not saved" in r.text and "200" in r.text  # htmx swaps it (base.html)
    r = submit(client, form, htmx=True, result="{not json")
    assert "Not saved" in r.text and "not JSON" in r.text
    bad_inputs = json.loads(form["inputs"]) | {"top_k": 0}
    r = submit(client, form, htmx=True, inputs=json.dumps(bad_inputs))
    assert "Not saved" in r.text and "top_k" in r.text
    r = submit(client, form, htmx=False, inputs=json.dumps(bad_inputs))  # a plain form post gets the 422
    assert r.status_code == 422
    assert client.get("/api/explorations").json()["total"] == 0


def test_snapshot_page_actions(client):
    form = save_forms(live_analysis(client, "abc def"))[0]
    url = submit(client, form, title="t", note="a <b>note</b>").headers["location"]
    i = url.rsplit("/", 1)[1]
    text = client.get(url).text
    assert f'hx-post="/e/{i}/rerun"' in text
    from app.web.analysis_pages import CODEC

    inputs = json.loads(form["inputs"])
    fork = CODEC.write(inputs)
    assert fork.startswith("/?prompt=abc+def")
    assert f'href="{fork.replace("&", "&amp;")}"' in text
    assert f'href="/e/{i}/export"' in text
    assert f'data-copy="http://testserver/e/{i}"' in text
    assert "a &lt;b&gt;note&lt;/b&gt;" in text
    assert re.search(r'<script src="/static/explorations\.js\?v=[0-9a-f]{16}" defer></script>', text)
    # the view's page opened with the fork address gets the same inputs back
    page = client.get(fork)
    assert page.status_code == 200 and "abc def" in page.text


def test_rerun_fragment(client):
    url = submit(client, live_save_form(client, "abc"), title="t").headers["location"]
    r = client.post(url + "/rerun", headers={"hx-request": "true"})
    assert r.status_code == 200
    assert "Live profile is the saved one" in r.text
    assert ("identical to the saved one" in r.text) or ("up to float rounding" in r.text)
    assert "rerun-fragment" in r.text and "Tom" not in r.text


def test_snapshot_without_a_registered_view(client):
    i = client.post("/api/explorations", json={"kind": "some_future_view", "title": "future", "inputs": {"x": "<i>"},
                                               "result": {"y": [1, 2.5]}}).json()["id"]
    text = client.get(f"/e/{i}").text
    assert "generic-snapshot" in text and "Re-run" not in text and "Fork" not in text
    assert "&lt;i&gt;" in text and '&#34;y&#34;: [\n    1,\n    2.5\n  ]' in text
    r = client.post(f"/e/{i}/rerun", headers={"hx-request": "true"})
    assert r.status_code == 409 and "Re-run failed" in r.text and "some_future_view" in r.text


def test_import_form(client):
    raw = (FIXTURES / "exploration_v1_analysis.json").read_bytes()
    r = client.post("/e/import", files={"file": ("x.json", raw, "application/json")}, follow_redirects=False)
    assert r.status_code == 303
    page = client.get(r.headers["location"])
    assert page.status_code == 200 and "v1 fixture: Tom &amp; &lt;Jerry&gt;" in page.text
    r = client.post("/e/import", files={"file": ("x.json", b"{oops", "application/json")})
    assert r.status_code == 422 and "Import refused" in r.text and "not a JSON document" in r.text
    r = client.post("/e/import", data={"nothing": "here"})
    assert r.status_code == 422 and "file" in r.text
    assert client.get("/api/explorations").json()["total"] == 1


def test_import_form_size_limit(tiny_engine, tmp_path):
    raw = (FIXTURES / "exploration_v2_analysis.json").read_bytes()
    with make_client(tiny_engine, store_url=f"sqlite:///{tmp_path}/s.db", limits=Limits(max_exploration_bytes=2000)) as c:
        r = c.post("/e/import", files={"file": ("x.json", raw, "application/json")})
        assert r.status_code == 422 and "2000 bytes (max_exploration_bytes)" in r.text
        assert c.get("/api/explorations").json()["total"] == 0


def test_list_page(client):
    from app.http.auth import OWNER_COOKIE, owner_id

    store = client.app.state.store
    client.get("/e")  # /e lists only what this browser saved (unlisted links, issue 18): take its owner cookie
    owner = owner_id(client.cookies[OWNER_COOKIE])
    ids = [store.put({"schema_version": 2, "kind": "analysis" if n % 2 else "steering", "title": f"<t{n}>",
                      "profile": {"name": "tiny"}, "inputs": {}, "result": {}}, owner=owner) for n in range(53)]
    r = client.get("/e")
    assert r.status_code == 200
    assert "&lt;t52&gt;" in r.text and "<t52>" not in r.text
    assert f'href="/e/{ids[-1]}"' in r.text and f'href="/e/{ids[2]}"' not in r.text  # 50 per page
    assert "1–50 of 53" in r.text and 'href="/e?offset=50"' in r.text
    older = client.get("/e?offset=50").text
    assert f'href="/e/{ids[0]}"' in older and "51–53 of 53" in older
    only = client.get("/e?kind=steering").text
    assert "of 27" in only and "&lt;t51&gt;" not in only
    assert client.get("/e?kind=../x").status_code == 422
    assert 'action="/e/import"' in r.text


def test_empty_list_and_404_page(client):
    assert "Nothing saved from this browser yet" in client.get("/e").text
    r = client.get("/e/AAAAAAAAAAAAAAAAAAAAAAAA")
    assert r.status_code == 404 and "No such exploration" in r.text


def test_export_is_the_stored_document(client):
    raw = json.loads((FIXTURES / "exploration_v1_analysis.json").read_text())
    i = client.app.state.store.put(raw)
    r = client.get(f"/e/{i}/export")
    assert r.status_code == 200 and r.json() == raw  # an old document is exported as stored (version 1)
    assert r.headers["content-disposition"] == f'attachment; filename="exploration-{i}.json"'


# --- query string helpers --------------------------------------------------------------------------------

class Feature(BaseModel):
    sae: str
    index: int
    strength: float


class SteerLike(BaseModel):
    prompt: str
    seed: int | None = None
    temperature: float = 1.0
    features: list[Feature] = Field(default_factory=list)
    temperatures: list[float] | None = None
    chat: bool | None = None


def test_fields_codec_round_trip():
    """A fields codec writes the non-default fields (structured ones as compact JSON) and its reader gets them back."""
    from urllib.parse import parse_qsl

    from app.web.codecs import fields_codec, fields_query

    req = SteerLike(prompt="a & b = c?", seed=7, temperature=0.7, chat=False,
                    features=[Feature(sae="fine", index=12, strength=-4.5)], temperatures=[0.2, 1.0])
    q = fields_query(req.model_dump())
    assert "seed=7" in q and "chat=false" in q and "prompt=a+%26+b+%3D+c%3F" in q

    def read(params):
        return SteerLike.model_validate({k: json.loads(v) if k in ("features", "temperatures") else v
                                         for k, v in params.items()})

    codec = fields_codec("/generate", SteerLike, read, always="prompt")
    url = codec.write(req.model_dump())
    assert codec.read(dict(parse_qsl(url.split("?", 1)[1]))) == req
    # None fields and defaults are left out and come back as their defaults
    assert codec.write(SteerLike(prompt="x").model_dump()) == "/generate?prompt=x"


def test_fork_url_default_and_view_specific():
    from app.web.codecs import Codec

    views = ViewRegistry()
    views.register("zz_test_view", SteerLike, lambda e, s, r: {}, "/generate")
    assert views.fork_url("zz_test_view", {"prompt": "hi", "seed": None}) == "/generate"  # no codec: the bare page
    other = ViewRegistry()
    other.register("zz_test_view", SteerLike, lambda e, s, r: {},
                   Codec("/custom", lambda inputs: "/custom?p=" + inputs["prompt"], SteerLike.model_validate))
    assert other.fork_url("zz_test_view", {"prompt": "hi"}) == "/custom?p=hi"
    assert other.get("zz_test_view").page_path == "/custom"
    assert views.fork_url("not_registered", {"prompt": "x"}) is None
    with pytest.raises(ValueError):
        views.register("Bad-Kind", SteerLike, lambda e, s, r: {}, "/x")


def test_registering_a_kind_twice_raises():
    views = ViewRegistry()
    views.register("zz", SteerLike, lambda e, s, r: {}, "/generate")
    with pytest.raises(ValueError, match="registered twice"):
        views.register("zz", SteerLike, lambda e, s, r: {}, "/generate")
    assert list(views) == ["zz"]


def test_a_registered_view_without_a_template_or_filter_is_an_error():
    """A missing renderer fails loudly (at start: check_fragments), never a silent generic fallback."""
    from jinja2 import TemplateNotFound

    from app.web.templating import build_templates, check_fragments

    views = ViewRegistry()
    views.register("zz_no_template", SteerLike, lambda e, s, r: {}, "/generate")
    with pytest.raises(TemplateNotFound):
        check_fragments(TEMPLATES, views)
    with pytest.raises(TemplateNotFound):
        render_snapshot(TEMPLATES, views, "zz_no_template", {}, {})
    with pytest.raises(ValueError, match=r"fragments/attribution\.html: filter 'attribution_figure' is not registered"):
        check_fragments(build_templates({}, {}), VIEWS)  # analysis.html without its filters
    with pytest.raises(ValueError, match=r"discovery_view\(\) is not a registered global"):
        check_fragments(build_templates({"lens_figure": str, "visible": str}, {}), VIEWS)
    with pytest.raises(ValueError):
        build_templates({"lens_figure": str, "tojson": str}, {})


def test_a_template_that_cannot_draw_an_old_snapshot_falls_back_to_the_saved_data():
    html, generic = render_fragment("analysis", {"prompt": "p"}, {"tokens": "not a list of tokens", "next_tokens": 5})
    assert generic and "cannot draw this snapshot" in html and "not a list of tokens" in html


def test_saving_an_analysis_keeps_the_open_feature_card(client):
    """Open a feature on the live analysis, Save: the saved page shows that card; Fork reopens it; Re-run matches."""
    live = live_analysis(client, "The cat sat", "5")
    lens_reply(client, live)
    vals = json.loads(html.unescape(re.search(r"data-inputs='([^']*)'", live).group(1)))
    data = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in vals.items() if v is not None}
    card = client.post("/fragments/feature", data=data | {"sae": "fine", "index": "7"})
    assert card.status_code == 200 and 'id="fcard" data-sae="fine" data-index="7"' in card.text
    # the card's answer carries the analysis' Save box (out of band) with the feature and its card
    assert 'hx-swap-oob="innerHTML:#analysis .save-slot"' in card.text
    forms = save_forms(card.text)
    assert len(forms) == 1
    inputs, result = json.loads(forms[0]["inputs"]), json.loads(forms[0]["result"])
    assert inputs["feature"] == "fine:7" and result["card"]["index"] == 7 and result["lens"] is not None
    r = submit(client, forms[0], title="with a card")
    assert r.status_code == 303
    i = r.headers["location"].rsplit("/", 1)[1]
    page = client.get(f"/e/{i}").text
    assert 'id="fcard" data-sae="fine" data-index="7"' in page and "provenance-warning" not in page
    api = client.get("/api/features/fine/7", params={"prompt": "The cat sat", "top": 12}).json()
    assert f'data-max-pos="{api["max_position"]}"' in page  # the page selects the token where it peaks
    assert client.post(f"/api/explorations/{i}/rerun").json()["result_matches"]
    fork = re.search(r'class="fork-link" href="([^"]*)"', page).group(1)
    assert parse_qs(urlparse(html.unescape(fork)).query)["feature"] == ["fine:7"]


def saved_link(r) -> str:
    return re.search(r'class="saved-link" href="(/e/[A-Za-z0-9_-]+)"', r.text).group(1)


def test_a_save_sent_twice_with_its_key_is_one_exploration(client):
    """Issue 25 item 4: the Save form carries an idempotency key (filled by forms.js on its first submit); the same
    key, browser and content save once, and every repeat answers the same link."""
    form = live_save_form(client)
    assert form["save_key"] == ""  # empty in the fragment (saved fragments stay deterministic); forms.js fills it
    key = "k2h9Qd-x_" * 3
    first = submit(client, form, htmx=True, save_key=key, title="once")
    again = submit(client, form, htmx=True, save_key=key, title="once")
    assert first.status_code == 201 and again.status_code == 200
    assert saved_link(first) == saved_link(again) and "Already saved" in again.text
    assert client.get("/api/explorations").json()["total"] == 1
    # a plain form post (no htmx) with the key lands on the same exploration too
    plain = submit(client, form, save_key=key, title="once")
    assert plain.status_code == 303 and plain.headers["location"] == saved_link(first)
    # other content under the same key (a new title) is a save of its own; so is another key
    assert saved_link(submit(client, form, htmx=True, save_key=key, title="twice")) != saved_link(first)
    assert saved_link(submit(client, form, htmx=True, save_key=key[::-1], title="once")) != saved_link(first)
    assert client.get("/api/explorations").json()["total"] == 3
    # the same key from another browser (another owner cookie) is not this browser's save
    with make_client(client.app.state.engine, store_url=client.app.state.settings.store_url) as other:
        assert saved_link(submit(other, form, htmx=True, save_key=key, title="once")) != saved_link(first)
    bad = submit(client, form, htmx=True, save_key="short", title="once")
    assert bad.status_code == 422 and "save_key" in bad.text


def test_a_double_click_racing_to_the_server_saves_once(client):
    """Two posts of one key at the same moment (a double-click before the first answer): one exploration."""
    from concurrent.futures import ThreadPoolExecutor

    form = live_save_form(client)
    key = "race-race-race-race-race"
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: submit(client, form, htmx=True, save_key=key, title="race"), range(4)))
    assert all(r.status_code in (200, 201) for r in answers), [r.text for r in answers]
    assert len({saved_link(r) for r in answers}) == 1
    assert client.get("/api/explorations").json()["total"] == 1


def test_api_save_with_an_idempotency_key(client, monkeypatch):
    from app.api.explorations import routes

    signed = []
    sign = routes.signature_for_save
    monkeypatch.setattr(routes, "signature_for_save", lambda *a: signed.append(1) or sign(*a))
    inputs = {"prompt": "The cat", "top_k": 3}
    result = client.post("/api/analyze", json=inputs).json()
    body = {"kind": "analysis", "title": "api", "inputs": inputs, "result": result}
    a = client.post("/api/explorations", json=body, headers={"idempotency-key": "api-key-0123456789abcdef"})
    b = client.post("/api/explorations", json=body, headers={"idempotency-key": "api-key-0123456789abcdef"})
    assert (a.status_code, b.status_code) == (201, 200) and a.json()["id"] == b.json()["id"]
    assert a.json()["computed"] and b.json()["computed"] and b.json()["repeated"] and not a.json()["repeated"]
    assert len(signed) == 1  # the repeat is answered from the store: no recomputation to sign it
    assert client.post("/api/explorations", json=body).json()["id"] != a.json()["id"]  # no key: a new save each time
    bad = client.post("/api/explorations", json=body, headers={"idempotency-key": "x"})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["header", "idempotency-key"]


def test_list_page_says_it_lists_this_browsers_saves_and_how_to_open_a_link(client):
    """Issue 25 item 7: a fresh browser while others' saves exist: the page says what the list is (this browser's
    saves) and how to open a link, instead of "Nothing saved on this server yet"."""
    store = client.app.state.store
    eid = store.put({"schema_version": 2, "kind": "analysis", "title": "someone else's", "profile": {"name": "tiny"},
                     "inputs": {}, "result": {}}, owner="another-browser")
    page = client.get("/e").text
    assert "Nothing saved on this server" not in page
    assert "Nothing saved from this browser yet" in page and "saved from this browser" in page
    assert "someone else" not in page  # still unlisted
    assert 'action="/e/open"' in page and 'name="link"' in page  # paste a link to open it
    for link in (f"http://testserver/e/{eid}", f"/e/{eid}", eid, f"  https://elsewhere.example/e/{eid}/export ",
                 f"http://testserver/e/{eid}?x=1#top"):
        r = client.get("/e/open", params={"link": link}, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == f"/e/{eid}", link
    bad = client.get("/e/open", params={"link": "https://example.com/not-a-link"})
    assert bad.status_code == 422 and "not a link to a saved exploration" in html.unescape(bad.text)
    assert 'action="/e/open"' in bad.text and "Cannot open this" in bad.text  # the list page, the message in place
