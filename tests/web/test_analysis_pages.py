"""The analysis page and its htmx fragments (tiny engine): what is rendered, escaped, and pushed to the address bar."""
from __future__ import annotations

import html
import json
import re
from urllib.parse import parse_qs, urlparse

import pytest

from tests.conftest import make_client

PROMPT = "The cat sat"


def strip_tokens(page: str) -> list[str]:
    """Visible text of each token in the strip (markup removed, entities decoded)."""
    strip = page[page.index('id="strip"'):page.index('id="legend"')]
    spans = re.findall(r'<span class="t">(.*?)</span><span class="a">', strip, flags=re.S)
    return [html.unescape(re.sub(r"<[^>]+>", "", s)) for s in spans]


def panel_indices(page: str, pos: int, sae: str) -> list[int]:
    start = page.index(f'id="tokpanel-{pos}"')
    end = page.find('<section class="tokpanel', start + 1)
    col = page[start:end if end > 0 else None]
    col = col[col.index(f'data-sae="{sae}"'):]
    col = col[:col.find('<div class="saecol"') if '<div class="saecol"' in col else None]
    return [int(i) for i in re.findall(r'class="feat" data-sae="%s" data-index="(\d+)"' % sae, col)]


def figure(page: str, div: str) -> dict:
    m = re.search(r'<script type="application/json" data-figure="%s">(.*?)</script>' % div, page, flags=re.S)
    return json.loads(m.group(1))


def test_empty_page_shows_form_and_limits_from_settings(tiny_engine):
    from app.core.settings import Limits

    with make_client(tiny_engine, limits=Limits(max_prompt_tokens=32, max_prompt_chars=1234)) as c:
        r = c.get("/")
        assert r.status_code == 200
        assert 'id="analyze-form"' in r.text and 'hx-post="/fragments/analysis"' in r.text
        assert "≤ 32 tokens" in r.text and "≤ 1234 characters" in r.text and 'maxlength="1234"' in r.text
        # the settings' limit is enforced in the fragment too, naming the field and the limit
        f = c.post("/fragments/analysis", data={"prompt": "z" * 40})
        assert f.status_code == 422 and "prompt: prompt has 40 tokens; the limit is 32" in f.text


def test_page_with_prompt_runs_the_analysis(tiny_client):
    r = tiny_client.get("/", params={"prompt": PROMPT})
    assert r.status_code == 200
    api = tiny_client.post("/api/analyze", json={"prompt": PROMPT, "lens": True}).json()
    # whitespace shown as a marker; the textarea is filled with the prompt
    assert strip_tokens(r.text) == [t["token"].replace(" ", "·") for t in api["tokens"]]
    assert f"\n{PROMPT}</textarea>" in r.text
    assert r.text.count('class="tok sink"') == 1
    for pos in (1, 5, len(PROMPT) - 1):
        for sae in ("coarse", "fine"):
            assert panel_indices(r.text, pos, sae) == api["tokens"][pos]["saes"][sae]["indices"]
    # sink: its panel says it is left out of the rankings
    assert panel_indices(r.text, 0, "fine") == [] and "Sink token: left out of the rankings" in r.text
    # the logit lens heatmap carries exactly the lens numbers
    fig = figure(r.text, "lens-fig")
    assert fig["data"][0]["z"] == [[cell[0] for cell in row] for row in api["lens"]["top_probs"]]
    assert len(fig["layout"]["yaxis"]["ticktext"]) == 4
    # reconstruction quality per token and EV per prompt are shown
    ev = api["explained_variance"]["fine"]
    assert f"EV <b>{ev:.3f}</b>" in r.text
    assert f"rel. error <b>{api['tokens'][5]['saes']['coarse']['rel_error']:.3f}</b>" in r.text


def test_include_sinks_toggle_and_lens_off(tiny_client):
    r = tiny_client.get("/", params={"prompt": PROMPT, "include_sinks": "1", "lens": "0"})
    api = tiny_client.post("/api/analyze", json={"prompt": PROMPT, "include_sinks": True}).json()
    assert panel_indices(r.text, 0, "fine") == api["tokens"][0]["saes"]["fine"]["indices"] != []
    assert 'data-figure="lens-fig"' not in r.text
    assert re.search(r'name="include_sinks" value="1" checked', r.text)


def test_fragment_pushes_an_address_that_reproduces_the_view(tiny_client):
    data = {"prompt": "a b\nc", "system_prompt": "sys", "chat": "auto", "top_k": "3", "lens": ["0", "1"]}
    f = tiny_client.post("/fragments/analysis", data=data)
    assert f.status_code == 200
    push = f.headers["HX-Push-Url"]
    q = parse_qs(urlparse(push).query)
    assert q == {"prompt": ["a b\nc"], "system_prompt": ["sys"], "top_k": ["3"]}
    page = tiny_client.get(push)
    assert strip_tokens(page.text) == strip_tokens(f.text)
    assert "↵" in "".join(strip_tokens(f.text)) and "·" in "".join(strip_tokens(f.text))
    assert "<|im_start|>" in "".join(strip_tokens(f.text))  # system prompt -> chat template
    assert "text after the chat template" in f.text


def test_fragment_is_rendered_from_the_saved_dict_alone(tiny_client, tiny_engine):
    """The saved-explorations contract: {inputs, result, kind} after a JSON round trip renders the same fragment,
    with no engine, request or settings in the context."""
    from app.api.analysis import AnalyzeRequest, run_analysis
    from app.core.registration import build_app_templates
    from app.core.settings import Settings
    from app.web.analysis_pages import parse_inputs

    templates = build_app_templates()

    inputs = parse_inputs({"prompt": PROMPT}).model_dump()
    result = run_analysis(tiny_engine, Settings(profile="tiny"), AnalyzeRequest(**inputs)).model_dump()
    tpl = templates.get_template("fragments/analysis.html")
    direct = tpl.render(inputs=inputs, result=result, kind="analysis")
    snap = json.loads(json.dumps({"inputs": inputs, "result": result, "kind": "analysis"}))
    assert tpl.render(**snap) == direct
    assert 'data-figure="lens-fig"' in direct
    live = tiny_client.post("/fragments/analysis", data={"prompt": PROMPT}).text
    assert strip_tokens(live) == strip_tokens(direct)
    for pos in range(len(PROMPT)):
        assert panel_indices(live, pos, "fine") == panel_indices(direct, pos, "fine")


def test_model_text_is_escaped_everywhere(tiny_client):
    evil = '<script>alert("x")</script>'
    r = tiny_client.get("/", params={"prompt": evil})
    assert r.status_code == 200
    assert "<script>alert" not in r.text
    assert strip_tokens(r.text)[:8] == list("<script>")
    inputs = json.loads(html.unescape(re.search(r"data-inputs='(.*?)'", r.text).group(1)))
    assert inputs["prompt"] == evil and "\\u003cscript\\u003ealert" in r.text
    fig = figure(r.text, "lens-fig")
    ticks = fig["layout"]["xaxis"]["ticktext"]
    assert ticks[0] == "&lt;" and ticks[7] == "&gt;"
    for row in fig["data"][0]["customdata"]:
        for cell in row:
            assert "<script" not in cell


def test_feature_fragment_and_address(tiny_client):
    f = tiny_client.post("/fragments/feature", data={"prompt": PROMPT, "sae": "fine", "index": "7"})
    assert f.status_code == 200
    assert parse_qs(urlparse(f.headers["HX-Push-Url"]).query) == {"prompt": [PROMPT], "feature": ["fine:7"]}
    card = tiny_client.get("/api/features/fine/7", params={"prompt": PROMPT, "top": 12}).json()
    acts = json.loads(html.unescape(re.search(r"data-acts='(.*?)'", f.text).group(1)))
    assert acts == card["activations"]
    assert f.text.count("<li>") == 24  # 12 promoted + 12 suppressed
    assert f"decoder norm <b>{card['decoder_norm']:.3f}</b>" in f.text
    # the pushed address opens the page with the analysis and this card
    page = tiny_client.get(f.headers["HX-Push-Url"])
    assert 'id="fcard" data-sae="fine" data-index="7"' in page.text
    # out of range: 404 fragment naming the width, never a 500
    bad = tiny_client.post("/fragments/feature", data={"prompt": PROMPT, "sae": "fine", "index": "512"})
    assert bad.status_code == 404 and "SAE fine has 512 features" in bad.text and "HX-Push-Url" not in bad.headers
    bad = tiny_client.post("/fragments/feature", data={"prompt": PROMPT, "sae": "nope", "index": "1"})
    assert bad.status_code == 422
    # a malformed ?feature= in the address is ignored, not an error
    assert tiny_client.get("/", params={"prompt": PROMPT, "feature": "fine:99999"}).status_code == 200


@pytest.mark.parametrize("data,needle", [
    ({"prompt": ""}, "prompt: required: it is empty"),
    ({"prompt": "a", "top_k": "99"}, "top_k: Input should be less than or equal to 50"),
    ({"prompt": "a", "top_k": "x"}, "top_k: Input should be a valid integer"),
    ({"prompt": "a", "include_sinks": "maybe"}, "include_sinks"),
    ({"prompt": "a", "system_prompt": "s" * 4001}, "system_prompt: String should have at most 4000 characters"),
])
def test_bad_form_input_is_a_422_fragment(tiny_client, data, needle):
    r = tiny_client.post("/fragments/analysis", data=data)
    assert r.status_code == 422 and needle in r.text and "HX-Push-Url" not in r.headers
    page = tiny_client.get("/", params=data)
    assert page.status_code == 422 and needle in page.text and 'id="analyze-form"' in page.text


def test_busy_engine_is_a_503_fragment(tiny_engine):
    with make_client(tiny_engine) as c:
        old = tiny_engine.wait_timeout_s
        tiny_engine.wait_timeout_s = 0.05
        tiny_engine._lock.acquire()
        try:
            r = c.post("/fragments/analysis", data={"prompt": "a"})
        finally:
            tiny_engine._lock.release()
            tiny_engine.wait_timeout_s = old
        assert r.status_code == 503 and r.headers["Retry-After"] and "busy" in r.text
        assert r.text.count('role="alert"') == 1  # forms.js counts down its retry in that box


def test_lens_figure_unit():
    from app.viz.lens import lens_figure, visible

    lens = {"layers": ["embed", "0"], "tokens": ["a", " <b>"],
            "top_tokens": [[["x", "y"], ["\n", "&"]], [["z", "w"], ["<i>", "q"]]],
            "top_probs": [[[0.5, 0.1], [0.9, 0.05]], [[0.3, 0.2], [0.7, 0.1]]]}
    fig = lens_figure(lens)
    tr = fig["data"][0]
    assert tr["z"] == [[0.5, 0.9], [0.3, 0.7]]
    assert tr["text"] == [["x", "↵"], ["z", "&lt;i&gt;"]]
    assert fig["layout"]["xaxis"]["ticktext"] == ["a", "·&lt;b&gt;"]
    assert "&amp;  0.050" in tr["customdata"][0][1] and "<br>" in tr["customdata"][0][1]
    assert visible("") == "∅" and visible("\t x") == "⇥·x"


def test_lens_figure_is_valid_plotly_and_thins_ticks():
    import plotly.graph_objects as go

    from app.viz.lens import lens_figure

    n = 200
    lens = {"layers": ["embed", "0", "1"], "tokens": [f"t{i}" for i in range(n)],
            "top_tokens": [[["x", "y"]] * n] * 3, "top_probs": [[[0.6, 0.1]] * n] * 3}
    fig = lens_figure(lens)
    go.Figure(fig)  # raises on any property Plotly does not know
    assert len(fig["layout"]["xaxis"]["tickvals"]) <= 60 and fig["layout"]["xaxis"]["ticktext"][1] == "t4"
    assert "text" not in fig["data"][0]  # too narrow for cell text; the hover has it


def test_feature_card_links_to_steering_with_the_prompt_and_feature(tiny_client):
    """The card's "steer with this feature" link opens /generate pre-filled with this prompt and feature."""
    import html as _html
    import re
    from urllib.parse import parse_qs, urlsplit

    r = tiny_client.post("/fragments/feature", data={"sae": "fine", "index": 7, "prompt": "a & b <x>"})
    assert r.status_code == 200
    href = _html.unescape(re.search(r'id="fcard-steer"[^>]*href="([^"]+)"', r.text, re.S).group(1))
    q = parse_qs(urlsplit(href).query)
    card = tiny_client.get("/api/features/fine/7", params={"prompt": "a & b <x>"}).json()
    mx = card["max_activation"]  # no atlas here: the scale is its max on the prompt; 6x, inside the 12x slider
    expected_c = round(min(6 * mx, 12 * mx, 500.0), 2) if mx and mx > 0 else 0.0  # no scale: c = 0, chosen on Generate
    sae, index, mode, value = q["f"][0].split(":")
    assert (q["prompt"][0], sae, index, mode) == ("a & b <x>", "fine", "7", "add")
    assert float(value) == pytest.approx(expected_c, abs=0.006)
    page = tiny_client.get(href)
    assert page.status_code == 200
