"""app/http/middleware.py: body limit (413 before parsing, chunked too), JSON screen, CSP and headers, error mapping."""
from __future__ import annotations

import asyncio
import json
import re
import sqlite3
from html.parser import HTMLParser
from pathlib import Path
from unittest import mock

import pytest
import torch
from fastapi.testclient import TestClient

from app.http.body_guard import BodyGuardMiddleware, load_json, scan_json
from app.http.middleware import CSP, SecurityHeadersMiddleware
from tests.reliability.conftest import assert_clean, build_app, iter_api_routes

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def small_client(tiny_engine, tmp_path):
    from app.core.settings import Limits

    app = build_app(tiny_engine, tmp_path, limits=Limits(max_body_bytes=2_000))
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


# ---------- raw ASGI: the guard itself ----------

def _asgi(mw, method="POST", headers=(), chunks=(b"",), disconnect_after=False):
    """Drive an ASGI middleware by hand; returns (status, body, messages the inner app received, chunks read)."""
    sent, read = [], [0]
    queue = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
    if disconnect_after:
        queue = queue[:1] + [{"type": "http.disconnect"}]

    async def receive():
        read[0] += 1
        return queue.pop(0) if queue else {"type": "http.disconnect"}

    async def send(msg):
        sent.append(msg)

    scope = {"type": "http", "method": method, "path": "/x", "headers": list(headers)}
    asyncio.run(mw(scope, receive, send))
    status = next((m["status"] for m in sent if m["type"] == "http.response.start"), None)
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, body, read[0]


class Echo:
    """Inner app: reads the whole body through receive(), then one more receive (a streaming route's disconnect check)."""

    def __init__(self):
        self.calls, self.bodies, self.after = 0, [], None

    async def __call__(self, scope, receive, send):
        self.calls += 1
        body, more = b"", True
        while more:
            m = await receive()
            body += m.get("body", b"")
            more = m.get("more_body", False)
        self.bodies.append(body)
        self.after = (await receive())["type"]
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


def test_declared_length_over_limit_is_413_without_reading_or_calling_the_app():
    inner = Echo()
    status, body, reads = _asgi(BodyGuardMiddleware(inner, 100), headers=[(b"content-length", b"101")],
                                chunks=[b"x" * 101])
    assert status == 413 and inner.calls == 0 and reads == 0
    d = json.loads(body)["detail"][0]
    assert "101 bytes" in d["msg"] and "100" in d["msg"] and "max_body_bytes" in d["msg"]


def test_chunked_body_over_limit_stops_reading_at_the_limit():
    inner = Echo()
    chunks = [b"y" * 30] * 10  # 300 bytes, no Content-Length (chunked)
    status, _, reads = _asgi(BodyGuardMiddleware(inner, 100), chunks=chunks)
    assert status == 413 and inner.calls == 0
    assert reads == 4  # 30+30+30 = 90 <= 100, the 4th chunk crosses the limit; the other 6 are never read


def test_body_at_the_limit_is_replayed_whole_and_later_receive_reaches_the_server():
    inner = Echo()
    chunks = [b"a" * 50, b"b" * 50]
    status, body, _ = _asgi(BodyGuardMiddleware(inner, 100), chunks=chunks)
    assert (status, body) == (200, b"ok")
    assert inner.bodies == [b"a" * 50 + b"b" * 50]
    assert inner.after == "http.disconnect"  # the replay does not swallow the server's disconnect


def test_client_gone_before_body_complete_gets_no_response_and_no_app_call():
    inner = Echo()
    status, _, _ = _asgi(BodyGuardMiddleware(inner, 1000), chunks=[b"a", b"b"], disconnect_after=True)
    assert status is None and inner.calls == 0


def test_get_passes_untouched_and_security_headers_are_added():
    inner = Echo()
    sent = []

    async def run():
        async def receive():
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(m):
            sent.append(m)

        await SecurityHeadersMiddleware(BodyGuardMiddleware(inner, 10))({"type": "http", "method": "GET", "path": "/",
                                                                         "headers": []}, receive, send)

    asyncio.run(run())
    headers = dict(sent[0]["headers"])
    assert headers[b"content-security-policy"].decode() == CSP
    assert headers[b"x-content-type-options"] == b"nosniff" and headers[b"x-frame-options"] == b"DENY"


@pytest.mark.parametrize("text,loc,kind", [
    ('{"a": NaN}', ["body", "a"], "finite_number"),
    ('{"a": {"b": [1, Infinity]}}', ["body", "a", "b", 1], "finite_number"),
    ('{"a": -Infinity}', ["body", "a"], "finite_number"),
    ('{"a": 1e999}', ["body", "a"], "finite_number"),
    ('{"a": "x\\ud800y"}', ["body", "a"], "lone_surrogate"),
    ('{"a\\udfff": 1}', ["body"], "lone_surrogate"),
])
def test_scan_json_names_the_field(text, loc, kind):
    problems = scan_json(load_json(text), 32)
    assert [(p["loc"], p["type"]) for p in problems] == [(loc, kind)]


def test_scan_json_accepts_ordinary_values():
    doc = '{"a": 1.5, "b": [1e308, -0.0, "caf\\u00e9 \\ud83d\\ude00 \\u202e\\u0000"], "c": null}'
    assert scan_json(load_json(doc), 32) == []


# ---------- through the real app ----------

def test_real_app_413_for_declared_and_chunked_bodies(small_client):
    c = small_client
    r = c.post("/api/analyze", content=b'{"prompt": "' + b"a" * 3000 + b'"}', headers={"content-type": "application/json"})
    assert r.status_code == 413 and "2000" in r.text
    r = c.post("/api/analyze", content=(b"a" * 500 for _ in range(6)), headers={"content-type": "application/json"})
    assert r.status_code == 413 and "content-length" not in {k.lower() for k in r.request.headers}
    assert "content-security-policy" in r.headers  # the guard's own answers carry the headers too
    ok = c.post("/api/analyze", json={"prompt": "hi", "top_k": 3})
    assert ok.status_code == 200, ok.text


@pytest.mark.parametrize("raw,field,needle", [
    (b'{"prompt": "hi", "top_k": NaN}', "top_k", "finite"),
    (b'{"prompt": "hi", "top_k": 1e999}', "top_k", "finite"),
    (b'{"prompt": "hi\\ud800"}', "prompt", "surrogate"),
    (b'{"prompt": "hi\xff\xfe"}', None, "utf-8"),
    (b"[" * 40 + b"]" * 40, None, "nested"),
])
def test_real_app_rejects_unusable_json_with_422(rel_client, raw, field, needle):
    r = rel_client.post("/api/analyze", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert needle in json.dumps(detail).lower()
    if field:
        assert detail[0]["loc"] == ["body", field]


@pytest.mark.parametrize("prompt,needle", [("a\x00b", "NUL"), ("", "at least 1"), ("x" * 100_000, "8000")])
def test_prompt_fields_reject_nul_empty_and_huge_naming_the_field(rel_client, prompt, needle):
    r = rel_client.post("/api/analyze", json={"prompt": prompt})
    assert r.status_code == 422
    d = r.json()["detail"][0]
    assert d["loc"] == ["body", "prompt"] and needle in d["msg"]


def test_prompt_fields_accept_controls_bidi_and_zero_width(rel_client, tiny_engine):
    text = "a\u202eb\u200bc\x07\t\r\n\x1b[31m"
    r = rel_client.post("/api/analyze", json={"prompt": text, "top_k": 2})
    assert r.status_code == 200, r.text
    # the model read exactly what was sent (no silent sanitising): same ids as the tokenizer gives directly
    ids = tiny_engine.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert [t["token_id"] for t in r.json()["tokens"]] == ids and len(ids) == len(text.encode("utf-8"))


def test_oom_anywhere_in_model_work_is_503_with_retry_after_and_leaves_nothing_behind(rel_client, tiny_engine, golden):
    def boom(*a, **k):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    with mock.patch("app.engine.analysis.analyze", boom):
        r = rel_client.post("/api/analyze", json={"prompt": "hello"})
    assert r.status_code == 503 and int(r.headers["retry-after"]) > 0 and "memory" in r.text
    with mock.patch("app.engine.analysis.analyze", side_effect=RuntimeError("DefaultCPUAllocator: can't allocate memory")):
        r = rel_client.post("/api/analyze", json={"prompt": "hello"})
    assert r.status_code == 503 and r.headers["retry-after"]
    assert_clean(tiny_engine, golden)
    assert rel_client.post("/api/analyze", json={"prompt": "hello"}).status_code == 200


def test_other_runtime_errors_are_not_disguised_as_oom(rel_client):
    with mock.patch("app.engine.analysis.analyze", side_effect=RuntimeError("shape mismatch")):
        r = rel_client.post("/api/analyze", json={"prompt": "hello"})
    assert r.status_code == 500  # a real bug stays visible as one (the fuzz suite requires none exist)


def test_non_finite_result_is_reported_not_a_500(tiny_engine, tmp_path):
    app = build_app(tiny_engine, tmp_path)

    @app.get("/__test/nan-dict")
    def nan_dict():
        return {"value": float("nan"), "ok": 1.0}

    @app.get("/__test/inf-list")
    def inf_list():
        return [1.0, float("inf")]

    with TestClient(app, raise_server_exceptions=False) as c:
        for path in ("/__test/nan-dict", "/__test/inf-list"):
            r = c.get(path)
            assert r.status_code == 422, (path, r.status_code, r.text)
            d = r.json()["detail"][0]
            assert d["type"] == "non_finite_result" and "NaN or infinity" in d["msg"]


def test_sqlite_failure_is_503_saying_nothing_was_saved(tiny_engine, tmp_path):
    app = build_app(tiny_engine, tmp_path)

    @app.post("/__test/save")
    def save():
        raise sqlite3.OperationalError("database is locked")

    with TestClient(app, raise_server_exceptions=False) as c:
        r = c.post("/__test/save", json={})
    assert r.status_code == 503 and r.headers["retry-after"] and "nothing was saved" in r.text


def test_busy_queue_is_503_with_retry_after(rel_client, tiny_engine):
    old = tiny_engine.max_waiting
    tiny_engine.max_waiting = 0  # the lock is held and no one may wait: the next request is turned away at once
    try:
        tiny_engine._lock.acquire()
        try:
            r = rel_client.post("/api/analyze", json={"prompt": "hello"})
        finally:
            tiny_engine._lock.release()
    finally:
        tiny_engine.max_waiting = old
    assert r.status_code == 503 and int(r.headers["retry-after"]) >= 1
    assert_clean(tiny_engine)


def test_session_is_not_reentrant_and_fails_fast(tiny_engine):
    import time

    with tiny_engine.session():
        t0 = time.perf_counter()
        with pytest.raises(RuntimeError, match="not reentrant"):
            with tiny_engine.session():
                pass
        assert time.perf_counter() - t0 < 1.0
    assert_clean(tiny_engine)


def test_openapi_documents_error_statuses_for_every_operation(rel_client):
    schema = rel_client.get("/openapi.json").json()
    n = 0
    for path, ops in schema["paths"].items():
        for method, op in ops.items():
            n += 1
            assert "503" in op["responses"], (method, path)
            assert "Retry-After" in op["responses"]["503"]["headers"]
            if "requestBody" in op:
                assert {"413", "422"} <= set(op["responses"]), (method, path)
            if "{" in path:
                assert "404" in op["responses"], (method, path)
    assert n >= 3


# ---------- CSP: no inline script anywhere ----------

class _ScriptAudit(HTMLParser):
    def __init__(self):
        super().__init__()
        self.problems = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for name, value in attrs:
            if name.startswith(("on", "hx-on")):
                self.problems.append(f"<{tag} {name}=...> inline event handler")
            if value and name in ("href", "src", "action", "formaction") and value.strip().lower().startswith("javascript:"):
                self.problems.append(f"<{tag} {name}=javascript:...>")
        if tag == "script" and not a.get("src") and a.get("type") != "application/json":
            self.problems.append("inline <script> without src (blocked by script-src 'self')")
        if tag == "script" and a.get("src", "").startswith(("http:", "https:", "//")):
            self.problems.append(f"external script {a['src']}")


def _html_routes(app):
    """Every GET page without path parameters (new views are picked up automatically)."""
    for path, r in iter_api_routes(app):
        if "GET" in r.methods and "{" not in path and not r.include_in_schema:
            yield path


def test_pages_have_no_inline_scripts_or_handlers_and_carry_the_csp(rel_client):
    pages = list(_html_routes(rel_client.app))
    assert "/" in pages
    problems = {}
    for path in pages:
        r = rel_client.get(path)
        if r.status_code != 200 or "text/html" not in r.headers.get("content-type", ""):
            continue
        assert r.headers["content-security-policy"] == CSP, path
        audit = _ScriptAudit()
        audit.feed(r.text)
        if audit.problems:
            problems[path] = audit.problems
    assert not problems, problems
    directives = dict(d.strip().split(" ", 1) for d in CSP.split(";"))
    assert directives["script-src"] == "'self'" and "unsafe" not in directives["script-src"]
    assert directives["object-src"] == "'none'" and directives["base-uri"] == "'none'"


def test_template_sources_have_no_inline_scripts_handlers_or_safe_filters():
    problems = []
    for f in sorted((ROOT / "templates").rglob("*.html")):
        text = f.read_text()
        rel = f.relative_to(ROOT)
        for m in re.finditer(r"<script\b([^>]*)>", text):
            attrs = m.group(1)
            if "src=" not in attrs and "application/json" not in attrs:
                problems.append(f"{rel}: inline <script{attrs}>")
        for m in re.finditer(r"\s((?:hx-)?on[a-z:-]*)\s*=", text):
            problems.append(f"{rel}: inline handler {m.group(1)}=")
        for m in re.finditer(r"\|\s*safe\b", text):
            problems.append(f"{rel}: |safe at offset {m.start()}")
        if re.search(r"javascript:", text, re.I):
            problems.append(f"{rel}: javascript: URL")
    assert not problems, "\n".join(problems)


def test_found_by_fuzzing_nul_in_a_query_prompt_is_422_not_500(rel_client):
    """GET /api/features/... builds PromptFields from query parameters inside the route (schemathesis found the 500)."""
    r = rel_client.get("/api/features/coarse/1", params={"prompt": "abc\x00def"})
    assert r.status_code == 422, r.text
    d = r.json()["detail"][0]
    assert d["loc"][:2] == ["query", "prompt"] and "NUL" in d["msg"]


def test_found_by_fuzzing_sampling_on_non_finite_probabilities_is_422(rel_client):
    with mock.patch("torch.multinomial", side_effect=RuntimeError(
            "probability tensor contains either `inf`, `nan` or element < 0")):
        r = rel_client.post("/api/generate", json={"prompt": "hi", "max_new_tokens": 2, "temperature": 1.0})
    assert r.status_code == 422 and r.json()["detail"][0]["type"] == "non_finite_result", r.text


def test_response_model_bugs_stay_500(tiny_engine, tmp_path):
    from pydantic import BaseModel

    class Internal(BaseModel):
        n: int

    app = build_app(tiny_engine, tmp_path)

    @app.get("/__test/bug")
    def bug():
        return Internal(n="not a number")

    with TestClient(app, raise_server_exceptions=False) as c:
        assert c.get("/__test/bug").status_code == 500
