"""/generate and /temperature pages and their fragments (tiny engine): forms, results, escaping, the
saved-explorations contract (fragments render from {inputs, result, kind} alone), 422 fragments."""
from __future__ import annotations

import html
import json
import re
from urllib.parse import parse_qs, urlparse

import pytest

PROMPT = "Hi <b>there</b>"


def test_generate_page_form(tiny_client):
    r = tiny_client.get("/generate")
    assert r.status_code == 200
    for needle in ('id="gen-form"', 'name="temperature"', 'id="stream-btn"', 'id="stop-btn"', 'id="add-feature"', "/static/generate.js",
                   "attention sink"):
        assert needle in r.text


def test_generate_page_from_address_renders_steering(tiny_client):
    r = tiny_client.get("/generate", params={"prompt": PROMPT, "f": "coarse:3:add:40", "max_new_tokens": "5", "view": "steer"})
    assert r.status_code == 200, r.text
    assert 'id="col-unsteered"' in r.text and 'id="col-steered"' in r.text
    assert "C-3</a>" in r.text
    assert "<b>there</b>" not in r.text and "&lt;b&gt;there&lt;/b&gt;" in r.text  # model/user text escaped
    assert 'value="40"' in r.text  # the feature row is refilled from the address


def test_steering_fragment_matches_api_and_pushes_address(tiny_client):
    form = {"prompt": PROMPT, "max_new_tokens": "5", "temperature": "0", "seed": "0", "f_sae": "fine", "f_index": "7",
            "f_mode": "clamp", "f_value": "4", "generated_only": "off", "skip_sinks": ["off", "on"]}
    r = tiny_client.post("/fragments/steering", data=form)
    assert r.status_code == 200, r.text
    api = tiny_client.post("/api/steer", json={"prompt": PROMPT, "max_new_tokens": 5,
                                               "steering": [{"sae": "fine", "index": 7, "mode": "clamp", "value": 4}]}).json()
    n_div = sum(api["diverged"])
    steered_col = r.text.split('id="col-steered"')[1].split('class="legend')[0]
    unsteered_col = r.text.split('id="col-unsteered"')[1].split('id="col-steered"')[0]
    assert steered_col.count('class="gtok div') == n_div == unsteered_col.count('class="gtok div')
    assert steered_col.count(" first") == (1 if api["first_divergence"] is not None else 0)
    q = parse_qs(urlparse(r.headers["HX-Push-Url"]).query)
    assert q["f"] == ["fine:7:clamp:4.0"] and q["view"] == ["steer"] and q["prompt"] == [PROMPT]
    assert 'name="kind" value="steering"' in r.text or "save" in r.text.lower()


def test_dose_fragment_has_figure_and_column(tiny_client):
    form = {"prompt": PROMPT, "max_new_tokens": "3", "f_sae": "coarse", "f_index": "2", "f_mode": "add", "f_value": "0",
            "strengths": "-10, 0, 10"}
    r = tiny_client.post("/fragments/dose", data=form)
    assert r.status_code == 200, r.text
    assert 'data-figure="dose-fig"' in r.text
    assert r.text.count("<tr><td class=\"num\">") == 3


def test_temperature_and_system_shift_fragments(tiny_client):
    r = tiny_client.post("/fragments/temperature", data={"prompt": PROMPT, "t": "0.2, 1.0", "top_k": "3", "top_p": "1", "top_n": "6"})
    assert r.status_code == 200, r.text
    assert 'data-figure="temp-fig"' in r.text and 'data-figure="temp-fig-cut"' in r.text
    assert r.text.count('class="cut"') == 2 * 3  # 6 shown, top-3 kept, at both temperatures
    r = tiny_client.post("/fragments/system_shift", data={"prompt": PROMPT, "system_a": "", "system_b": "Be <i>brief</i>.", "top_n": "4"})
    assert r.status_code == 200, r.text
    assert "was " in r.text and "now " in r.text and "→" in r.text
    assert "<i>brief</i>" not in r.text
    r = tiny_client.get("/temperature", params={"prompt": PROMPT, "t": "0.5", "view": "temperature"})
    assert r.status_code == 200 and 'data-figure="temp-fig"' in r.text


def test_bad_form_gives_422_fragment_naming_the_field(tiny_client):
    r = tiny_client.post("/fragments/steering", data={"prompt": PROMPT, "f_sae": "coarse", "f_index": "999999", "f_mode": "add", "f_value": "1"})
    assert r.status_code == 422 and "index" in r.text and "role=\"alert\"" in r.text
    r = tiny_client.post("/fragments/temperature", data={"prompt": PROMPT, "t": "9"})
    assert r.status_code == 422 and "temperatures" in r.text


@pytest.mark.parametrize("kind, endpoint, body", [
    ("steering", "/api/steer", {"prompt": PROMPT, "max_new_tokens": 3, "steering": [{"sae": "coarse", "index": 1, "value": 5}]}),
    ("dose", "/api/dose", {"prompt": PROMPT, "max_new_tokens": 2, "feature": {"sae": "coarse", "index": 1}, "strengths": [0, 5]}),
    ("temperature", "/api/temperature", {"prompt": PROMPT}),
    ("system_shift", "/api/system-shift", {"prompt": PROMPT, "system_b": "x"}),
    ("generation", "/api/generate", {"prompt": PROMPT, "max_new_tokens": 2}),
])
def test_fragments_render_from_inputs_and_result_only(tiny_client, kind, endpoint, body):
    """The saved-explorations contract: the fragment renders from {inputs, result, kind} with no engine."""
    from app.core.registration import build_app_templates

    templates = build_app_templates()

    result = tiny_client.post(endpoint, json=body).json()
    html = templates.get_template(f"fragments/{kind}.html").render(inputs=body | {"seed": 0, "temperature": 0, "top_k": 0, "top_p": 1.0,
                                                                                  "max_new_tokens": body.get("max_new_tokens", 1),
                                                                                  "steering": body.get("steering", [])},
                                                                   result=result, kind=kind)
    assert f'data-kind="{kind}"' in html
    assert "<b>there</b>" not in html


def sse_events(text: str) -> list[tuple[str, dict]]:
    out = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.split("\n"))
        out.append((lines["event"], json.loads(lines["data"])))
    return out


def test_page_stream_ends_with_a_save_box_that_saves_the_streamed_generation(tiny_client):
    body = {"prompt": PROMPT, "max_new_tokens": 6, "temperature": 0.8, "seed": 3,
            "steering": [{"sae": "coarse", "index": 5, "mode": "add", "value": 8.0}]}
    form = {"prompt": PROMPT, "max_new_tokens": "6", "temperature": "0.8", "seed": "3", "f": "coarse:5:add:8.0"}
    r = tiny_client.post("/fragments/generation/stream", data=form)  # the page's form, read by the generation codec
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r.text)
    kinds = [k for k, _ in events]
    assert kinds[0] == "start" and kinds[-3:] == ["save", "links", "done"] and kinds.count("token") == 6
    done = events[-1][1]
    streamed = "".join(d["text"] for k, d in events if k == "token")
    form = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', dict(events)["save"]["html"]))
    form = {k: html.unescape(v) for k, v in form.items()}
    assert form["kind"] == "generation" and json.loads(form["result"]) == done
    saved = tiny_client.post("/e/save", files={k: (None, v) for k, v in form.items()}, follow_redirects=False)
    assert saved.status_code == 303
    i = saved.headers["location"].rsplit("/", 1)[1]
    doc = tiny_client.get(f"/api/explorations/{i}").json()
    assert doc["kind"] == "generation" and doc["inputs"]["steering"][0]["index"] == 5
    assert "".join(t["text"] for t in doc["result"]["generation"]["tokens"]) == streamed
    page = tiny_client.get(f"/e/{i}").text
    assert "provenance-warning" not in page and 'data-kind="generation"' in page  # signed: computed here
    # the JSON stream is unchanged: no save event
    assert "save" not in [k for k, _ in sse_events(tiny_client.post("/api/generate/stream", json=body).text)]


def _saved_result(html_text: str) -> dict:
    """The result JSON a fragment's Save form carries (exactly what was rendered)."""
    import html
    import json
    import re

    m = re.search(r'name="result" value="([^"]*)"', html_text)
    assert m, "the fragment has a Save form"
    return json.loads(html.unescape(m.group(1)))


def test_steer_and_dose_results_have_headings_and_labelled_save_buttons(tiny_client):
    form = {"prompt": PROMPT, "max_new_tokens": "2", "f_sae": "coarse", "f_index": "2", "f_mode": "add", "f_value": "3",
            "strengths": "-5, 5"}
    steer = tiny_client.post("/fragments/steering", data=form)
    dose = tiny_client.post("/fragments/dose", data=form)
    assert steer.status_code == dose.status_code == 200
    assert '<h2 class="result-h">Steered vs unsteered</h2>' in steer.text
    assert '<h2 class="result-h">Dose-response: C-2 (add)</h2>' in dose.text
    assert '<button type="submit" class="save-button">Save steered vs unsteered</button>' in steer.text
    assert '<button type="submit" class="save-button">Save dose-response</button>' in dose.text


@pytest.mark.parametrize("endpoint, data", [
    ("/fragments/steering", {"prompt": ""}),
    ("/fragments/temperature", {"prompt": ""}),
    ("/fragments/dose", {"prompt": "", "f_sae": "coarse", "f_index": "1", "strengths": "0, 1"}),
])
def test_error_fragments_say_what_is_wrong_in_plain_words(tiny_client, endpoint, data):
    """422 fragments keep their status and name the field in plain words, not pydantic's raw sentence."""
    r = tiny_client.post(endpoint, data=data)
    assert r.status_code == 422
    assert "<li>prompt: required: it is empty</li>" in r.text and 'role="alert"' in r.text
    assert "String should have at least 1 character" not in r.text


def test_temperature_page_has_one_meaning_of_no_system_prompt(tiny_client, tiny_engine):
    """Both views read the page's chat selector (default on); A/B with two empty arms is refused on system_b."""
    page = tiny_client.get("/temperature")
    assert 'select name="chat" id="temp-chat"' in page.text and 'placeholder="(empty)' in page.text
    want_chat = tiny_engine.tokenizer.apply_chat_template(  # the tokenizer's own template, not the app's helper
        [{"role": "user", "content": PROMPT}], add_generation_prompt=True, tokenize=False)
    r = tiny_client.post("/fragments/temperature", data={"prompt": PROMPT, "t": "1.0", "system_prompt": ""})
    assert r.status_code == 200 and _saved_result(r.text)["prompt_text"] == want_chat != PROMPT
    assert "chat template on, no system prompt" in r.text
    r = tiny_client.post("/fragments/temperature", data={"prompt": PROMPT, "t": "1.0", "chat": "off"})
    assert _saved_result(r.text)["prompt_text"] == PROMPT
    r = tiny_client.post("/fragments/system_shift", data={"prompt": PROMPT, "system_a": "", "system_b": ""})
    assert r.status_code == 422
    assert "system_b: system prompts A and B are the same: both are empty (no system prompt)" in r.text
    r = tiny_client.post("/fragments/system_shift", data={"prompt": PROMPT, "system_b": "Be brief.", "chat": "off"})
    assert r.status_code == 200 and "raw text (chat template off)" in r.text
    assert _saved_result(r.text)["text_a"] == PROMPT


def test_open_in_analyze_reads_the_sequence_the_model_read_and_wrote(tiny_client, tiny_engine):
    """With the chat template and a system prompt, the link analyses the rendered prompt plus the generated text as
    raw text: the analysed token ids start with the template's ids (the tokenizer's own) and are the tokenizer's
    ids of that whole text (the tiny model writes random bytes, so its text need not re-encode to the same ids)."""
    form = {"prompt": "Hello there", "system_prompt": "Be brief.", "chat": "on", "max_new_tokens": "4"}
    page = tiny_client.post("/fragments/generation", data=form)
    assert page.status_code == 200, page.text
    href = html.unescape(re.search(r'<a class="analyze-link" href="([^"]+)"', page.text).group(1))
    q = {k: v[0] for k, v in parse_qs(urlparse(href).query).items()}
    gen = tiny_client.post("/api/generate", json={**form, "chat": True, "max_new_tokens": 4}).json()["generation"]
    tok = tiny_engine.tokenizer
    rendered = tok.apply_chat_template([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there"}],
                                       add_generation_prompt=True, tokenize=False)
    assert q == {"prompt": rendered + gen["text"], "chat": "off"}
    analysed = tiny_client.post("/api/analyze", json={"prompt": q["prompt"], "chat": False}).json()
    got = [t["token_id"] for t in analysed["tokens"]]
    prompt_ids = tok.encode(rendered, add_special_tokens=False)
    assert got[:len(prompt_ids)] == prompt_ids and got == tok.encode(q["prompt"], add_special_tokens=False)
