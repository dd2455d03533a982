"""Error wording in one place: every JSON error answer carries the server's "field: what is wrong" lines
(app/api/errors.readable) in X-Error-Lines, whoever answered (a route, FastAPI's validation, the body guard, the
busy handler), gzipped or not; static/forms.js shows those lines as they are."""
from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from app.api.errors import MAX_LINES_HEADER, busy_response, error_lines_header, readable
from app.engine.engine import EngineBusy
from tests.reliability.conftest import build_app


@pytest.fixture()
def client(tiny_engine, tmp_path):
    from app.core.settings import Limits

    app = build_app(tiny_engine, tmp_path, limits=Limits(max_body_bytes=20_000))
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def lines_of(r) -> list[str]:
    return json.loads(r.headers["X-Error-Lines"])


def test_a_pydantic_string_too_long_is_worded_with_its_limit(client):
    r = client.post("/api/attribution", json={"prompt": "The cat sat", "target": "x" * 201})
    assert r.status_code == 422
    assert lines_of(r) == ["target: too long: at most 200 characters"]
    assert [readable(e) for e in r.json()["detail"]] == lines_of(r)  # the body itself is unchanged FastAPI shape


def test_a_missing_field_and_a_range_and_the_guard_are_worded_too(client):
    r = client.post("/api/analyze", json={})
    assert r.status_code == 422 and lines_of(r) == ["prompt: required: it is empty"]
    r = client.get("/api/features/coarse/999999")
    assert r.status_code == 404
    assert lines_of(r) == [f"index: {r.json()['detail'][0]['msg']}"] and "0.." in lines_of(r)[0]
    r = client.post("/api/analyze", content=b'{"prompt": "x", "top_k": NaN}', headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and lines_of(r)[0].startswith("top_k: must be a finite number")
    r = client.post("/api/analyze", content=b"{" + b" " * 30_000 + b"}", headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and "the limit is 20000 bytes" in lines_of(r)[0]


def test_a_long_gzipped_error_still_carries_its_lines(client):
    words = ["w" * 65] * 50  # 50 items too long: a 422 body well over GZip's 1 KB threshold
    r = client.post("/api/experiment", json={"anchor": 0, "words": words}, headers={"Accept-Encoding": "gzip"})
    assert r.status_code == 422 and r.headers.get("content-encoding") == "gzip"
    lines = lines_of(r)
    assert lines[0] == "words.0: too long: at most 64 characters"
    assert len(r.headers["X-Error-Lines"]) <= MAX_LINES_HEADER
    assert len(r.json()["detail"]) == 50 and lines[-1].startswith("... and ")


def test_busy_is_503_with_retry_after_and_its_line(client, tiny_engine, monkeypatch):
    def busy(*a, **k):
        raise EngineBusy(retry_after=7)

    monkeypatch.setattr("app.api.analysis.service.run_analysis", busy, raising=False)
    monkeypatch.setattr(type(tiny_engine), "session", busy)
    r = client.post("/api/analyze", json={"prompt": "hi"})
    assert r.status_code == 503 and r.headers["Retry-After"] == "7"
    assert lines_of(r) == ["the model is busy; retry in 7s"]
    direct = busy_response("short of memory")
    assert direct.status_code == 503 and direct.headers["Retry-After"] == "2"


def test_the_header_is_only_for_error_documents():
    assert error_lines_header(b'{"detail": "no exploration with this id"}') == '["no exploration with this id"]'
    assert error_lines_header(b"<html>") is None and error_lines_header(b'{"x": 1}') is None
