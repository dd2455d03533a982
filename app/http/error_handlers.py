"""Exception handlers and OpenAPI error responses shared by every route (installed by app.http.middleware.install):
out of memory (torch.cuda.OutOfMemoryError, CPU allocator failures) -> 503 + Retry-After; a response that cannot
be JSON-encoded because it holds NaN/inf -> 422 `non_finite_result` (never a 500 from the encoder); text the
tokenizer cannot encode (lone surrogates) -> 422; SQLite errors and an unreachable PostgreSQL store
(`StoreUnavailable`) -> 503 + Retry-After ("nothing was saved"). Every operation documents 503 (+ Retry-After),
every operation with a body 413 and 422, so property-based fuzzing can check that every status is documented."""
from __future__ import annotations

import gzip
import logging
import sqlite3

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from app.api.errors import ERROR_LINES_HEADER, busy_response, error_item, error_lines_header, items_of
from app.http.asgi import HttpMiddleware

log = logging.getLogger("asn")


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


def add_exception_handlers(app: FastAPI) -> None:
    """503 for out of memory and an unavailable store, 422 for non-finite results and text that cannot be encoded."""
    import torch

    async def oom_handler(request: Request, exc: Exception):
        _free_accelerator_memory()
        log.warning("out of memory on %s %s: %s", request.method, request.url.path, exc)
        return busy_response("out of memory while running the model; retry shortly or use a shorter prompt")

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
        return JSONResponse({"detail": items_of(exc, ["query"])}, status_code=422)

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
        return busy_response(f"the exploration store is unavailable ({type(exc).__name__}); nothing was saved, retry shortly")

    app.add_exception_handler(torch.cuda.OutOfMemoryError, oom_handler)
    app.add_exception_handler(MemoryError, oom_handler)
    app.add_exception_handler(RuntimeError, runtime_handler)
    app.add_exception_handler(ValueError, value_handler)
    app.add_exception_handler(ValidationError, pydantic_handler)
    app.add_exception_handler(UnicodeError, unicode_handler)
    app.add_exception_handler(sqlite3.Error, sqlite_handler)
    from app.store import StoreUnavailable

    app.add_exception_handler(StoreUnavailable, sqlite_handler)  # PostgreSQL unreachable mid-run: 503, not 500


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


class ErrorLinesMiddleware(HttpMiddleware):
    """Every JSON error answer ({"detail": ...}, status >= 400) carries its "field: what is wrong" lines in the
    X-Error-Lines header (app.api.errors.readable: the one wording), so static/forms.js shows them as they are.
    Pure ASGI, outermost (the guard's 413/422, auth's 401 and the rate limit's 429 included); only error bodies are
    held back, and a gzipped one is read unzipped."""

    async def http(self, scope, receive, send):
        start: dict | None = None
        chunks: list[bytes] = []

        async def send_with_lines(msg):
            nonlocal start
            if msg["type"] == "http.response.start":
                headers = {k.lower(): v for k, v in msg.get("headers") or []}
                if msg["status"] >= 400 and b"json" in headers.get(b"content-type", b""):
                    start = msg  # held until the body is complete
                    return
            elif start is not None and msg["type"] == "http.response.body":
                chunks.append(msg.get("body", b""))
                if msg.get("more_body", False):
                    return
                body = b"".join(chunks)
                headers = list(start.get("headers") or [])
                zipped = any(k.lower() == b"content-encoding" and v.strip() == b"gzip" for k, v in headers)
                try:
                    lines = error_lines_header(gzip.decompress(body) if zipped else body)
                except OSError:  # not gzip after all
                    lines = None
                if lines is not None:
                    headers.append((ERROR_LINES_HEADER.lower().encode(), lines.encode()))
                await send({**start, "headers": headers})
                start = None
                await send({"type": "http.response.body", "body": body})
                return
            await send(msg)

        await self.app(scope, receive, send_with_lines)
