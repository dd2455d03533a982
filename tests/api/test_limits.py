"""Limits have one source, the Settings given to create_app, and are enforced in one place (app/api/limits.py):
the form shows the same limit the API enforces, for every route, nested fields included."""
from __future__ import annotations

import pytest

from app.api.limits import violations
from app.api.schemas import PromptFields
from app.api.steering.schemas import DoseRequest, GenerateRequest, TemperatureRequest
from app.core.settings import Limits
from tests.conftest import make_client


@pytest.fixture(scope="module")
def client(tiny_engine):
    with make_client(tiny_engine, limits=Limits(max_prompt_chars=1234, max_steering_strength=7.0,
                                                max_title_chars=10, max_new_tokens=3)) as c:
        yield c


def only_error(r, field: str) -> dict:
    assert r.status_code == 422, r.text
    errs = [e for e in r.json()["detail"] if e["loc"][-1] == field or field in e["loc"]]
    assert errs, r.json()
    return errs[0]


def test_form_and_api_share_the_injected_limit(client):
    assert 'maxlength="1234"' in client.get("/").text
    e = only_error(client.post("/api/analyze", json={"prompt": "a" * 1235}), "prompt")
    assert e["loc"] == ["body", "prompt"] and "1234" in e["msg"] and "max_prompt_chars" in e["msg"]
    ok = client.post("/api/analyze", json={"prompt": "a" * 1234})  # passes the character limit, stops at the tokens one
    assert ok.status_code == 422 and "max_prompt_chars" not in ok.text and "the limit is 256" in ok.text
    # the HTML fragment and the other views enforce the same number
    f = client.post("/fragments/analysis", data={"prompt": "a" * 1235})
    assert f.status_code == 422 and "1234" in f.text
    for path in ("/api/generate", "/api/steer", "/api/temperature", "/api/lens", "/api/generate/stream"):
        assert "max_prompt_chars" in only_error(client.post(path, json={"prompt": "a" * 1235}), "prompt")["msg"], path
    r = client.post("/api/system-shift", json={"prompt": "a" * 1235})
    assert "1234" in only_error(r, "prompt")["msg"]
    r = client.get("/api/features/coarse/1", params={"prompt": "a" * 1235})
    assert "1234" in only_error(r, "prompt")["msg"]


def test_nested_and_per_item_limits_name_the_field(client):
    body = {"prompt": "hi", "max_new_tokens": 2, "steering": [{"sae": "coarse", "index": 1, "value": 7.5}]}
    e = only_error(client.post("/api/generate", json=body), "value")
    assert e["loc"] == ["body", "steering", 0, "value"] and "7.0" in e["msg"] and e["ctx"] == {"limit": 7.0}
    body = {"prompt": "hi", "max_new_tokens": 4}
    e = only_error(client.post("/api/generate", json=body), "max_new_tokens")
    assert "less than or equal to 3" in e["msg"]
    body = {"prompt": "hi", "max_new_tokens": 2, "feature": {"sae": "coarse", "index": 1}, "strengths": [1.0, -8.0]}
    e = only_error(client.post("/api/dose", json=body), "strengths")
    assert e["loc"] == ["body", "strengths", 1]
    r = client.post("/api/explorations", json={"kind": "analysis", "title": "x" * 11, "inputs": {}, "result": {}})
    assert "max_title_chars" in only_error(r, "title")["msg"]


def test_limits_are_read_when_the_app_is_made_not_at_import(tiny_engine, monkeypatch):
    from app.core.settings import Settings
    from app.main import create_app

    monkeypatch.setenv("ASN_LIMIT_MAX_PROMPT_CHARS", "50")
    from fastapi.testclient import TestClient

    with TestClient(create_app(Settings(profile="tiny"), engine_factory=lambda s: tiny_engine)) as c:
        assert 'maxlength="50"' in c.get("/").text
        assert "50" in only_error(c.post("/api/analyze", json={"prompt": "a" * 51}), "prompt")["msg"]
        assert c.get("/health").json()["limits"]["max_prompt_chars"] == 50


def test_violations_against_a_plain_computation():
    lim = Limits(max_prompt_chars=5, max_system_prompt_chars=3, max_temperatures=2, max_temperature=1.5,
                 max_dose_points=3, max_steering_strength=2.0)
    assert violations(PromptFields(prompt="abcde", system_prompt="abc"), lim) == []
    v = violations(PromptFields(prompt="abcdef", system_prompt="abcd"), lim)
    assert [(x["loc"], x["ctx"]["limit"]) for x in v] == [(["body", "prompt"], 5), (["body", "system_prompt"], 3)]
    t = TemperatureRequest(prompt="ab", temperatures=[0.5, 1.6, 2.0])
    got = {tuple(x["loc"]) for x in violations(t, lim)}
    # independent: which limits the values break
    assert ("body", "temperatures") in got and len([x for x in t.temperatures if x > 1.5]) >= 1
    assert ("body", "temperatures", 1) in got  # the first temperature over 1.5
    d = DoseRequest(prompt="ab", feature={"sae": "fine", "index": 0, "value": -2.5}, strengths=[0.0, 2.0, -2.0])
    assert [x["loc"] for x in violations(d, lim)] == [["body", "feature", "value"]]
    g = GenerateRequest(prompt="ab", steering=[{"index": i, "value": 0.0} for i in range(9)])
    assert [x["loc"] for x in violations(g, Limits())] == [["body", "steering"]]  # default max_steering_features 8
