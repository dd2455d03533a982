"""Request guards and error mapping shared by every route (installed by `install(app, settings)`).

- `BodyGuardMiddleware` (pure ASGI): a body over `Limits.max_body_bytes` gets 413 before anything parses it
  (Content-Length checked first; chunked bodies are counted while read). JSON bodies are then screened once
  for what no route can handle: NaN / +-Infinity / overflowing numbers (1e999), lone surrogates, nesting
  deeper than `Limits.max_json_depth` -> 422 naming the field. The buffered body is replayed to the app;
  later `receive()` calls go to the server, so streaming routes still see a client disconnect.
- `SecurityHeadersMiddleware`: a strict Content-Security-Policy (scripts only from the app's own origin; no
  inline scripts, no eval; Plotly figures travel in `<script type="application/json">` data blocks, which CSP
  does not execute), nosniff, no framing, no referrer.
- Exception handlers: out of memory (torch.cuda.OutOfMemoryError, CPU allocator failures) -> 503 + Retry-After;
  a response that cannot be JSON-encoded because it holds NaN/inf -> 422 `non_finite_result` (never a 500
  from the encoder); text the tokenizer cannot encode (lone surrogates) -> 422; SQLite errors and an
  unreachable PostgreSQL store (`StoreUnavailable`) -> 503 + Retry-After ("nothing was saved").
- OpenAPI: every operation documents 503 (+ Retry-After), every operation with a body documents 413 and 422,
  so property-based fuzzing can check that every status the app answers is documented.
"""
from __future__ import annotations

import json
import logging
import math
import sqlite3

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

log = logging.getLogger("asn")

CSP = "; ".join([
    "default-src 'self'",
    "script-src 'self'",
    # Plotly and htmx set inline style attributes on the elements they draw; styles cannot run code.
    "style-src 'self' 'unsafe-inline'",
    "img-src 'self' data: blob:",
    "font-src 'self' data:",
    "connect-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
])
SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
    "permissions-policy": "camera=(), microphone=(), geolocation=()",
}
RETRY_AFTER_S = 2
BODY_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


def error_item(loc: list, msg: str, type_: str, **ctx) -> dict:
    """One entry of a FastAPI-style 422 `detail` list."""
    item = {"loc": loc, "msg": msg, "type": type_}
    if ctx:
        item["ctx"] = ctx
    return item


async def _send_json(send, status: int, payload: dict, headers: dict[str, str] | None = None) -> None:
    body = json.dumps(payload).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def too_large_payload(limit: int, got: int | None = None) -> dict:
    seen = f"{got} bytes" if got is not None else f"more than {limit} bytes"
    return {"detail": [error_item(["body"], f"request body is {seen}; the limit is {limit} bytes (max_body_bytes)",
                                  "body_too_large", limit=limit)]}


class _Constant:
    """NaN / Infinity / -Infinity as written in the JSON text (Python's json accepts them; JSON does not)."""

    __slots__ = ("text",)

    def __init__(self, text: str):
        self.text = text


def _parse_float(s: str):
    v = float(s)
    return v if math.isfinite(v) else _Constant(s)


def _has_lone_surrogate(s: str) -> bool:
    try:
        s.encode("utf-8")
        return False
    except UnicodeEncodeError:
        return True


def scan_json(obj, max_depth: int) -> list[dict]:
    """422 items for non-finite numbers, lone surrogates and over-deep nesting (iterative: no recursion limit)."""
    problems: list[dict] = []
    stack = [(obj, ["body"], 0)]
    while stack and len(problems) < 20:
        v, loc, depth = stack.pop()
        if isinstance(v, _Constant) or (isinstance(v, float) and not math.isfinite(v)):
            text = v.text if isinstance(v, _Constant) else repr(v)
            problems.append(error_item(loc, f"must be a finite number; got {text} (NaN and infinity are not allowed)",
                                       "finite_number"))
        elif isinstance(v, str):
            if _has_lone_surrogate(v):
                problems.append(error_item(loc, "text contains a lone UTF-16 surrogate (not valid Unicode)",
                                           "lone_surrogate"))
        elif isinstance(v, (dict, list)):
            if depth >= max_depth:
                problems.append(error_item(loc, f"JSON is nested more than {max_depth} levels deep; the limit is "
                                                f"{max_depth} (max_json_depth)", "too_deep", limit=max_depth))
                continue
            items = v.items() if isinstance(v, dict) else enumerate(v)
            for k, child in items:
                if isinstance(k, str) and _has_lone_surrogate(k):
                    problems.append(error_item(loc, "a key contains a lone UTF-16 surrogate (not valid Unicode)",
                                               "lone_surrogate"))
                    continue
                stack.append((child, loc + [k], depth + 1))
    return problems


def _is_json(headers: dict[bytes, bytes]) -> bool:
    ct = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
    return ct == b"application/json" or ct.endswith(b"+json")


class BodyGuardMiddleware:
    """413 for bodies over the limit before parsing; 422 for JSON no route can take (see module docstring)."""

    def __init__(self, app, max_body_bytes: int, max_json_depth: int = 32):
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_json_depth = max_json_depth

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        limit = self.max_body_bytes
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                n = int(declared)
            except ValueError:
                n = -1
            if n < 0:
                await _send_json(send, 400, {"detail": "invalid Content-Length"}, {"connection": "close"})
                return
            if n > limit:
                await _send_json(send, 413, too_large_payload(limit, n), {"connection": "close"})
                return
        chunks, total = [], 0
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return  # the client left before sending its body: nothing to answer
            body = msg.get("body", b"")
            total += len(body)
            if total > limit:
                await _send_json(send, 413, too_large_payload(limit), {"connection": "close"})
                return
            chunks.append(body)
            if not msg.get("more_body", False):
                break
        body = b"".join(chunks)
        if body and _is_json(headers):
            try:
                parsed = json.loads(body, parse_constant=_Constant, parse_float=_parse_float)
            except RecursionError:
                await _send_json(send, 422, {"detail": [error_item(["body"], "JSON is nested too deeply; the limit is "
                                                                   f"{self.max_json_depth} levels (max_json_depth)",
                                                                   "too_deep", limit=self.max_json_depth)]})
                return
            except UnicodeDecodeError as exc:
                await _send_json(send, 422, {"detail": [error_item(["body"], f"body is not valid UTF-8 JSON ({exc.reason} "
                                                                   f"at byte {exc.start})", "invalid_encoding")]})
                return
            except ValueError:
                parsed = None  # malformed JSON: FastAPI answers its own 422
            if parsed is not None:
                problems = scan_json(parsed, self.max_json_depth)
                if problems:
                    await _send_json(send, 422, {"detail": problems})
                    return
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # http.disconnect from the server, for streaming routes

        await self.app(scope, replay, send)


class SecurityHeadersMiddleware:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        csp = CSP

        async def send_with_headers(msg):
            if msg["type"] == "http.response.start":
                raw = list(msg.get("headers") or [])
                present = {k.lower() for k, _ in raw}
                extra = {"content-security-policy": csp, **SECURITY_HEADERS}
                raw += [(k.encode(), v.encode()) for k, v in extra.items() if k.encode() not in present]
                msg = {**msg, "headers": raw}
            await send(msg)

        await self.app(scope, receive, send_with_headers)


def _busy(detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=503, headers={"Retry-After": str(RETRY_AFTER_S)})


def _is_oom(exc: BaseException) -> bool:
    import torch

    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    msg = str(exc).lower()
    return isinstance(exc, (RuntimeError, MemoryError)) and (
        "out of memory" in msg or "can't allocate memory" in msg or isinstance(exc, MemoryError))


def _free_accelerator_memory() -> None:
    import torch

    try:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # pragma: no cover - best effort
        pass


NON_FINITE_JSON = "Out of range float values are not JSON compliant"
NON_FINITE_SAMPLING = "probability tensor contains either `inf`, `nan` or element < 0"


def non_finite_result(where: str) -> JSONResponse:
    """422: the inputs drove the numbers to NaN/infinity; said plainly instead of a 500 from the encoder/sampler."""
    return JSONResponse({"detail": [error_item(
        [where], "the result contains NaN or infinity (numbers overflowed, e.g. a steering strength too large for "
                 "this model); nothing was returned", "non_finite_result")]}, status_code=422)


def _request_model_names() -> set[str]:
    from app.api.schemas import PromptFields

    names, todo = set(), [PromptFields]
    while todo:
        cls = todo.pop()
        names.add(cls.__name__)
        todo.extend(cls.__subclasses__())
    return names


def install(app: FastAPI, settings) -> None:
    """Middleware, exception handlers and OpenAPI error responses for the whole app."""
    import torch

    limits = settings.limits
    app.add_middleware(BodyGuardMiddleware, max_body_bytes=limits.max_body_bytes,
                       max_json_depth=getattr(limits, "max_json_depth", 32))
    from app.auth import AuthMiddleware, OwnerCookieMiddleware, RateLimitMiddleware

    app.add_middleware(OwnerCookieMiddleware)  # which saved explorations this browser may list
    if settings.rate_limit_per_minute > 0:  # inside auth: strangers never use up a client's budget
        app.add_middleware(RateLimitMiddleware, per_minute=settings.rate_limit_per_minute,
                           burst=settings.rate_limit_burst, routes=settings.rate_limit_routes)
    if settings.auth_token is not None and settings.auth_token.get_secret_value():
        app.add_middleware(AuthMiddleware, token=settings.auth_token.get_secret_value())
    app.add_middleware(SecurityHeadersMiddleware)  # added last = outermost: 413/422 from the guard get headers too

    async def oom_handler(request: Request, exc: Exception):
        _free_accelerator_memory()
        log.warning("out of memory on %s %s: %s", request.method, request.url.path, exc)
        return _busy("out of memory while running the model; retry shortly or use a shorter prompt")

    async def runtime_handler(request: Request, exc: RuntimeError):
        if _is_oom(exc):
            return await oom_handler(request, exc)
        if NON_FINITE_SAMPLING in str(exc):  # torch.multinomial on logits that overflowed (e.g. extreme steering)
            return non_finite_result("sampling")
        raise exc

    async def pydantic_handler(request: Request, exc: ValidationError):
        # A request model (PromptFields and subclasses) built inside a route from query/form input: a 422 like any
        # other bad input. Any other model failing validation inside a route is a server bug and stays a 500.
        if exc.title not in _request_model_names():
            raise exc
        errors = [error_item(["query", *e.get("loc", ())], e.get("msg", ""), e.get("type", "value_error"))
                  for e in exc.errors(include_url=False, include_input=False, include_context=False)]
        return JSONResponse({"detail": errors}, status_code=422)

    async def value_handler(request: Request, exc: ValueError):
        if NON_FINITE_JSON in str(exc):
            log.warning("non-finite result on %s %s", request.method, request.url.path)
            return non_finite_result("response")
        raise exc

    async def unicode_handler(request: Request, exc: UnicodeError):
        return JSONResponse({"detail": [error_item(["body"], f"text cannot be encoded: {exc.reason} "
                                                   "(lone surrogates are not valid Unicode)", "invalid_text")]},
                            status_code=422)

    async def sqlite_handler(request: Request, exc: sqlite3.Error):
        log.warning("storage error on %s %s: %s", request.method, request.url.path, exc)
        return _busy(f"the exploration store is unavailable ({type(exc).__name__}); nothing was saved, retry shortly")

    app.add_exception_handler(torch.cuda.OutOfMemoryError, oom_handler)
    app.add_exception_handler(MemoryError, oom_handler)
    app.add_exception_handler(RuntimeError, runtime_handler)
    app.add_exception_handler(ValueError, value_handler)
    app.add_exception_handler(ValidationError, pydantic_handler)
    app.add_exception_handler(UnicodeError, unicode_handler)
    app.add_exception_handler(sqlite3.Error, sqlite_handler)
    from app.store import StoreUnavailable

    app.add_exception_handler(StoreUnavailable, sqlite_handler)  # PostgreSQL unreachable mid-run: 503, not 500
    document_error_responses(app)


ERROR_SCHEMA = {"type": "object", "properties": {"detail": {}}, "required": ["detail"]}


def document_error_responses(app: FastAPI) -> None:
    """Every operation documents 503 (+ Retry-After); with a body 413 and 422; with a path parameter 404."""
    original = app.openapi

    def openapi():
        if app.openapi_schema and app.openapi_schema.get("x-asn-errors"):
            return app.openapi_schema
        schema = original()
        for ops in schema.get("paths", {}).values():
            for method, op in ops.items():
                if method not in {"get", "post", "put", "patch", "delete"}:
                    continue
                responses = op.setdefault("responses", {})
                responses.setdefault("503", {
                    "description": "the model is busy or out of memory (or storage unavailable): retry later",
                    "headers": {"Retry-After": {"description": "seconds", "schema": {"type": "integer"}}},
                    "content": {"application/json": {"schema": ERROR_SCHEMA}}})
                if "requestBody" in op or method in {"post", "put", "patch"}:
                    responses.setdefault("413", {"description": "request body over max_body_bytes",
                                                 "content": {"application/json": {"schema": ERROR_SCHEMA}}})
                if any(p.get("in") == "path" for p in op.get("parameters", [])):
                    responses.setdefault("404", {"description": "no such item",
                                                 "content": {"application/json": {"schema": ERROR_SCHEMA}}})
                if "requestBody" in op or op.get("parameters"):
                    responses.setdefault("422", {"description": "validation error (names the field and the limit)",
                                                 "content": {"application/json": {"schema": ERROR_SCHEMA}}})
        schema["x-asn-errors"] = True
        app.openapi_schema = schema
        return schema

    app.openapi = openapi
