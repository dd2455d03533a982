"""`BodyGuardMiddleware` (pure ASGI, installed by app.http.middleware.install): a body over `Limits.max_body_bytes`
gets 413 before anything parses it (Content-Length checked first; chunked bodies are counted while read). JSON
bodies are then screened once for what no route can handle: NaN / +-Infinity / overflowing numbers (1e999), lone
surrogates, nesting deeper than `Limits.max_json_depth` -> 422 naming the field. The buffered body is replayed to
the app; later `receive()` calls go to the server, so streaming routes still see a client disconnect."""
from __future__ import annotations

import json
import math

from app.api.errors import error_item

BODY_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


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


def load_json(body: bytes | str):
    """The JSON document as written: NaN / Infinity / overflowing numbers kept as markers for `scan_json`
    (ValueError for malformed JSON, RecursionError when nested too deeply)."""
    return json.loads(body, parse_constant=_Constant, parse_float=_parse_float)


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
                parsed = load_json(body)
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
