"""Issue 25 items 6 and 12 (tiny engine): unknown addresses answer an HTML 404 page to a browser and JSON to the API;
bad address parameters say what is wrong in place; a negative feature index is a 404 naming the range;
/favicon.ico is the app's icon."""
from __future__ import annotations

import html
import re

import pytest

from app.core.settings import ROOT

BROWSER = {"accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}  # what Chromium sends


def title_of(text: str) -> str:
    return html.unescape(re.search(r"<title>(.*?)</title>", text, re.S).group(1)).strip()


@pytest.mark.parametrize("path", ["/nonexistent", "/e/%3Cscript%3Ealert(1)%3C/script%3E", "/features/coarse",
                                  "/e/abc/export"])
def test_unknown_address_is_an_html_404_page_for_a_browser(tiny_client, path):
    r = tiny_client.get(path, headers=BROWSER)
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("text/html")
    assert title_of(r.text).startswith("Not found")
    assert '<header class="top"' in r.text and 'href="/"' in r.text  # the site around it: a way on
    assert "<script>alert" not in r.text  # the address is shown as text
    assert "{&#34;detail&#34;" not in r.text and '{"detail"' not in r.text


def test_the_404_page_says_which_address_and_why(tiny_client):
    r = tiny_client.get("/e/abc/export", headers=BROWSER)
    assert "no exploration with this id" in r.text  # the route's own reason
    r = tiny_client.get("/no/such/page?x=1", headers=BROWSER)
    assert "/no/such/page" in r.text and "No page at this address" in r.text


@pytest.mark.parametrize("path, headers", [
    ("/api/nonexistent", BROWSER),  # the JSON API keeps JSON, even for a browser
    ("/api/features/coarse/99999", BROWSER),
    ("/nonexistent", {"accept": "application/json"}),  # a client asking for JSON
    ("/nonexistent", {}),  # no Accept: a script (curl sends */*)
    ("/nonexistent", {**BROWSER, "hx-request": "true"}),  # htmx: the error goes in place (forms.js)
])
def test_api_and_scripts_keep_json_404(tiny_client, path, headers):
    r = tiny_client.get(path, headers=headers)
    assert r.status_code == 404 and r.headers["content-type"] == "application/json"
    assert "detail" in r.json()


def test_negative_feature_index_is_a_404_naming_the_range(tiny_client):
    width = 64  # the tiny profile's coarse SAE
    r = tiny_client.get("/features/coarse/-1", headers=BROWSER)
    assert r.status_code == 404
    assert "coarse #0" not in r.text  # it used to render a page titled after feature 0
    assert f"feature index -1 does not exist: SAE coarse has {width} features (0..{width - 1})" in html.unescape(r.text)
    assert title_of(r.text).startswith("Not found")
    r = tiny_client.get("/features/coarse/64", headers=BROWSER)
    assert r.status_code == 404 and f"(0..{width - 1})" in r.text and title_of(r.text).startswith("Not found")
    r = tiny_client.get("/features/coarse/x1", headers=BROWSER)
    assert r.status_code == 404 and "whole number" in html.unescape(r.text)
    assert tiny_client.get("/features/coarse/5", headers=BROWSER).status_code == 200


def alerts(text: str) -> str:
    """The text of the page's in-place address notices."""
    found = re.findall(r'<div class="errors panel param-errors" role="alert">(.*?)</div>', text, re.S)
    return html.unescape(re.sub(r"<[^>]+>", " ", " ".join(found)))


def test_malformed_steering_feature_in_the_address_says_so(tiny_client):
    r = tiny_client.get("/generate", params={"f": "garbage", "view": "steer"}, headers=BROWSER)
    said = alerts(r.text)
    assert "f: 'garbage' is not sae:index:mode:value" in said and "coarse:12:add:8" in said
    r = tiny_client.get("/generate", params={"f": "coarse:99999:add:8", "view": "steer"}, headers=BROWSER)
    assert "f: feature index 99999 does not exist: SAE coarse has 64 features (0..63)" in alerts(r.text)
    r = tiny_client.get("/generate", params={"f": "nope:1:add:8", "view": "steer"}, headers=BROWSER)
    assert "f: no SAE named 'nope'" in alerts(r.text)
    r = tiny_client.get("/generate", params={"f": "coarse:1:sideways:8", "view": "steer"}, headers=BROWSER)
    assert "f: mode 'sideways'" in alerts(r.text)
    r = tiny_client.get("/generate", params={"f": "coarse:1:add:lots", "view": "steer"}, headers=BROWSER)
    assert "f: strength 'lots'" in alerts(r.text)
    # a good address has no notice
    r = tiny_client.get("/generate", params={"f": "coarse:3:add:8", "view": "steer"}, headers=BROWSER)
    assert r.status_code == 200 and alerts(r.text) == ""
    r = tiny_client.get("/temperature", params={"prompt": "Hi", "t": "0.5", "view": "temperature"})
    assert r.status_code == 200 and alerts(r.text) == ""


def test_unknown_feature_in_the_analyze_address_says_so(tiny_client):
    r = tiny_client.get("/", params={"feature": "coarse:99999"}, headers=BROWSER)
    assert "feature: feature index 99999 does not exist: SAE coarse has 64 features (0..63)" in alerts(r.text)
    r = tiny_client.get("/", params={"feature": "coarse:x"}, headers=BROWSER)
    assert "feature: 'coarse:x' is not sae:index" in alerts(r.text)
    # with a prompt the analysis is still shown, the notice says why no card opened
    r = tiny_client.get("/", params={"prompt": "The cat", "feature": "fine:99999"}, headers=BROWSER)
    assert r.status_code == 200 and 'class="strip' in r.text and 'id="fcard"' not in r.text
    assert "feature: feature index 99999 does not exist: SAE fine has 512 features (0..511)" in alerts(r.text)
    r = tiny_client.get("/", params={"prompt": "The cat", "feature": "fine:7"}, headers=BROWSER)
    assert alerts(r.text) == "" and 'id="fcard"' in r.text


def test_favicon_ico_is_the_app_icon(tiny_client):
    r = tiny_client.get("/favicon.ico")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("image/svg+xml")
    assert r.content == (ROOT / "static" / "favicon.svg").read_bytes()
    assert "max-age" in r.headers.get("cache-control", "")
    assert tiny_client.head("/favicon.ico").status_code == 200
