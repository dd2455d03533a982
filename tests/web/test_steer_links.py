"""Steer links and sliders share one scale (issue 25 item 3): the feature's typical activation (its mean when firing
on the atlas, else its max on the prompt); a link opens at 6x it, inside the Generate slider (12x) and the strength
limit; a card has one steer link, labelled with the strength it adds. Expected values are recomputed here from the
atlas arrays and a plain SAE encode, not read from the app."""
from __future__ import annotations

import html as H
import re
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest

from app.engine import steering as ST
from tests.atlas_fixtures import with_atlas
from tests.conftest import make_client

PROMPT = "The capital of France is Paris"


def steer_values(html: str) -> list[float]:
    hrefs = [H.unescape(h) for h in re.findall(r'<a class="steer-link[^"]*"[^>]*href="(/generate\?[^"]+)"', html, re.S)]
    return [float(parse_qs(urlsplit(h).query)["f"][0].split(":")[3]) for h in hrefs]


def test_link_is_inside_the_slider_and_the_limit():
    for typical in (0.01, 1.0, 7.13, 40.0, 614.5):
        span = ST.slider_span(typical, 500.0)
        assert span == min(12 * typical, 500.0)
        assert abs(ST.link_strength(typical, 500.0)) <= span <= 500.0
    assert ST.link_strength(7.13, 500.0) == pytest.approx(42.78)  # the dog feature F-1475's scale on SmolLM2


def fired_feature(atlas, sae="fine"):
    mean = atlas.mean_when_firing[sae]
    return int(np.argmax(mean))  # the strongest: its old 2x-max link was the largest


def test_card_has_one_steer_link_scaled_by_the_atlas(tiny_engine, atlas):
    f = fired_feature(atlas)
    mean = float(atlas.mean_when_firing["fine"][f])
    with with_atlas(tiny_engine, atlas), make_client(tiny_engine) as c:
        r = c.post("/fragments/feature", data={"sae": "fine", "index": f, "prompt": PROMPT})
        values = steer_values(r.text)
        assert values == [round(min(6 * mean, 500.0), 2)]  # one link, not one per section
        assert f"steer: add c = {values[0]:g}" in r.text
        info = c.post("/api/steer/feature", json={"prompt": PROMPT, "sae": "fine", "index": f}).json()
        assert info["typical_max"] == pytest.approx(mean, rel=1e-6)  # the slider uses the same scale
        assert -info["slider_max"] <= values[0] <= info["slider_max"] == pytest.approx(min(12 * mean, 500.0), rel=1e-6)
        page = c.get(f"/features/fine/{f}").text
        assert steer_values(page) == values
        frag = c.get(f"/fragments/atlas/fine/{f}", params={"prompt": PROMPT}).text
        assert steer_values(frag) == values


def test_links_respect_a_small_strength_limit(tiny_engine, atlas):
    """With max_steering_strength = 2, every link opens at |c| <= 2 and the Generate page takes it without a 422."""
    from app.core.settings import Limits

    f = fired_feature(atlas)
    with with_atlas(tiny_engine, atlas), make_client(tiny_engine, limits=Limits(max_steering_strength=2.0)) as c:
        r = c.post("/fragments/feature", data={"sae": "fine", "index": f, "prompt": PROMPT})
        at = c.post("/fragments/attribution", data={"prompt": PROMPT, "n_validate": "0"})
        values = steer_values(r.text) + steer_values(at.text)
        assert values and all(abs(v) <= 2.0 for v in values)
        href = H.unescape(re.search(r'id="fcard-steer"[^>]*href="([^"]+)"', r.text, re.S).group(1))
        q = parse_qs(urlsplit(href).query)
        sae, idx, mode, val = q["f"][0].split(":")
        run = c.post("/api/steer", json={"prompt": PROMPT, "max_new_tokens": 2,
                                         "steering": [{"sae": sae, "index": int(idx), "mode": mode, "value": float(val)}]})
        assert run.status_code == 200, run.text


def test_attribution_links_carry_the_sign_and_the_rule(tiny_engine, atlas):
    with with_atlas(tiny_engine, atlas), make_client(tiny_engine) as c:
        body = c.post("/api/attribution", json={"prompt": PROMPT, "n_validate": 0, "top": 6}).json()
        html = c.post("/fragments/attribution", data={"prompt": PROMPT, "n_validate": "0", "top": "6"}).text
    want = []
    for f in body["features"]:
        mean = float(atlas.mean_when_firing[f["sae"]][f["index"]])
        typical = mean if mean > 0 else f["max_activation"]
        want.append(round(min(6 * typical, 500.0), 2) * (1 if f["attribution"] >= 0 else -1))
    assert [f["steer_value"] for f in body["features"]] == pytest.approx(want)
    assert steer_values(html) == pytest.approx(want)
