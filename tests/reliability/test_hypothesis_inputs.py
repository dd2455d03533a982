"""hypothesis on hostile text (lone surrogates, NUL, controls, bidi, 100k characters) and hostile floats (NaN, inf,
1e308, -0.0, subnormals) in every string / number field of every JSON-body operation in the OpenAPI schema:
the only answers are 2xx, 413 and 422 (503 + Retry-After when busy). Figures: test-artifacts/reliability/inputs.json.
"""
from __future__ import annotations

import collections
import json
import math

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.reliability.conftest import assert_clean, build_app, report

SPECIAL_TEXT = ["\ud800", "a\udfffb", "\x00", "a\x00b", "\x07\x1b[2J\r\n\t", "\u202e\u2066abc\u2069", "\u200b\ufeff",
                "x" * 100_000, "é" * 50_000, "\U0001f600" * 1000, "<script>x</script>", "'; DROP TABLE explorations;--"]
SPECIAL_FLOATS = [math.nan, math.inf, -math.inf, 1e308, -1e308, 5e-324, -0.0, 1e-300]
hostile_text = st.one_of(st.sampled_from(SPECIAL_TEXT), st.text(max_size=50))  # st.text includes surrogates
hostile_float = st.one_of(st.sampled_from(SPECIAL_FLOATS), st.floats(allow_nan=True, allow_infinity=True))
OK = {200, 201, 202, 204, 404, 409, 413, 422}  # 404/409: a generated id that does not exist / a job not finished


def body_operations(schema: dict):
    comps = schema.get("components", {}).get("schemas", {})
    for path, ops in schema["paths"].items():
        for method, op in ops.items():
            content = op.get("requestBody", {}).get("content", {})
            if "{" in path or "application/json" not in content:
                continue
            ref = content["application/json"]["schema"].get("$ref", "")
            model = comps.get(ref.rsplit("/", 1)[-1], {})
            fields = {}
            for name, sch in model.get("properties", {}).items():
                kinds = {s.get("type") for s in sch.get("anyOf", [sch])}
                fields[name] = kinds
            yield method, path, fields, model.get("required", [])


def dumps(obj) -> bytes:
    """JSON with NaN/Infinity literals and lone surrogates escaped (what a hostile client can send)."""
    return json.dumps(obj, allow_nan=True).encode()


@pytest.fixture()
def fuzz_client(tiny_engine, tmp_path):
    with TestClient(build_app(tiny_engine, tmp_path), raise_server_exceptions=False) as c:
        yield c
        runner = getattr(c.app.state, "jobs", None)
        if runner is not None:
            runner.shutdown()


def test_hostile_text_and_floats_in_every_field(fuzz_client, tiny_engine):
    schema = fuzz_client.get("/openapi.json").json()
    ops = [o for o in body_operations(schema) if o[2]]
    assert ops, "no JSON body operations found"
    statuses, bad, per_op = collections.Counter(), [], collections.Counter()
    base = {"prompt": "hello", "title": "t", "kind": "analysis"}

    @settings(max_examples=max(60, 8 * len(ops)), deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def one(data):
        method, path, fields, required = data.draw(st.sampled_from(ops))
        body = {k: base.get(k, "x") for k in required if "string" in fields.get(k, ())}
        for name in data.draw(st.lists(st.sampled_from(sorted(fields)), min_size=1, max_size=3, unique=True)):
            kinds = fields[name]
            if "string" in kinds:
                body[name] = data.draw(hostile_text)
            elif kinds & {"number", "integer"}:
                body[name] = data.draw(hostile_float)
            elif "array" in kinds:
                body[name] = data.draw(st.lists(st.one_of(hostile_text, hostile_float), max_size=4))
        r = fuzz_client.request(method.upper(), path, content=dumps(body), headers={"content-type": "application/json"})
        statuses[r.status_code] += 1
        per_op[f"{method.upper()} {path}"] += 1
        if r.status_code not in OK and not (r.status_code == 503 and r.headers.get("retry-after")):
            bad.append(f"{method.upper()} {path} {str(body)[:200]} -> {r.status_code} {r.text[:200]}")

    one()
    report("inputs", {"cases": sum(statuses.values()), "statuses": {str(k): v for k, v in statuses.items()},
                      "operations": dict(per_op), "failures": bad[:10]})
    assert not bad, "\n".join(bad[:10])
    assert statuses[422] > 0
    # jobs the fuzzing started (a valid discovery or experiment body) run on in the background with their hooks
    # attached: clean means clean once they are cancelled and stopped
    fuzz_client.app.state.jobs.shutdown(wait=True)
    assert_clean(tiny_engine)


@pytest.mark.parametrize("value", ["\ud800", "a\x00", "x" * 100_000])
@pytest.mark.parametrize("field", ["prompt", "system_prompt"])
def test_prompt_text_never_500(fuzz_client, field, value):
    body = {"prompt": "hi", field: value}
    r = fuzz_client.post("/api/analyze", content=dumps(body), headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"] == ["body", field]


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_steering_strength_is_422(fuzz_client, value):
    if "/api/steer" not in fuzz_client.get("/openapi.json").json()["paths"]:
        pytest.skip("no steering route")
    body = {"prompt": "hi", "max_new_tokens": 2, "steering": [{"sae": "coarse", "index": 1, "value": value}]}
    r = fuzz_client.post("/api/steer", content=dumps(body), headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][:2] == ["body", "steering"], r.text
