"""The error shapes every route uses, and their wording, in one place: the `{"loc", "msg", "type"}` item
(`error_item`; a pydantic error re-rooted under where the field came from: `invalid`), 422 naming the field (and
the limit), 404 naming the valid range, 503 + Retry-After (`busy_response`, `retry_after_header`), and the
"field: what is wrong" line a person reads (`readable`, `errors_of`; every JSON error answer carries its lines in
the `X-Error-Lines` header, app/http/error_handlers.py, so static/forms.js words nothing itself)."""
from __future__ import annotations

import json
from typing import Any, Mapping

from fastapi import HTTPException
from fastapi.responses import JSONResponse
from pydantic import ValidationError

RETRY_AFTER_S = 2  # when nothing better is known: the engine's own busy answer says its wait
LOC_ROOTS = ("body", "query", "path", "form")
ERROR_LINES_HEADER = "X-Error-Lines"


def error_item(loc: list, msg: str, type_: str = "value_error", **ctx) -> dict:
    """One entry of a FastAPI-style `detail` list; loc starts with where the field is ("body", "query", "path")."""
    item: dict = {"loc": list(loc), "msg": msg, "type": type_}
    if ctx:
        item["ctx"] = ctx
    return item


def _json_ctx(ctx: dict) -> dict:
    return {k: (v if isinstance(v, (int, float, str, bool, type(None))) else str(v)) for k, v in ctx.items()}


def items_of(exc: ValidationError, prefix: list) -> list[dict]:
    """A pydantic error's items under `prefix` (["query"], ["body", "inputs"], ...): loc, msg, type and a JSON-safe
    ctx (a limit such as max_length), never the echoed input."""
    return [error_item([*prefix, *e["loc"]], e["msg"], e["type"], **_json_ctx(e.get("ctx") or {}))
            for e in exc.errors(include_url=False, include_input=False)]


def invalid(exc: ValidationError, prefix: list) -> HTTPException:
    """422 for a request model built inside a route (from query fields, a stored document, ...)."""
    return HTTPException(422, detail=items_of(exc, prefix))


def unprocessable(loc: list, msg: str, type_: str = "value_error", **ctx) -> HTTPException:
    """422 with one FastAPI-style item; loc starts with where the field is ("body", "query", "path")."""
    return HTTPException(422, detail=[error_item(loc, msg, type_, **ctx)])


def out_of_range(loc: list, msg: str) -> HTTPException:
    """404 for an index outside its valid range (the message names the range)."""
    return HTTPException(404, detail=[error_item(loc, msg, "out_of_range")])


def retry_after_header(seconds: int = RETRY_AFTER_S) -> dict[str, str]:
    return {"Retry-After": str(int(seconds))}


def busy_response(detail: str, retry_after: int = RETRY_AFTER_S) -> JSONResponse:
    """503 + Retry-After: busy or short of memory now, worth asking again in `retry_after` seconds."""
    return JSONResponse({"detail": detail}, status_code=503, headers=retry_after_header(retry_after))


def no_such_feature(sae: str, index: int, width: int) -> str:
    """The one wording of a feature index outside its SAE, naming the valid range."""
    return f"feature index {index} does not exist: SAE {sae} has {width} features (0..{width - 1})"


def check_feature_index(saes, sae: str, index: int, loc: list, status: int = 404) -> int:
    """The SAE's width when 0 <= index < width. Otherwise a 404 (422 where the route documents that) naming the
    valid range; an unknown SAE name is a 404 naming the SAEs there are."""
    if sae not in saes:
        raise HTTPException(404, detail=f"no SAE named {sae!r}; this profile has {', '.join(saes)}")
    width = int(saes[sae].cfg.d_sae)
    if not 0 <= int(index) < width:
        msg = no_such_feature(sae, index, width)
        raise out_of_range(loc, msg) if status == 404 else unprocessable(loc, msg)
    return width


# --- wording: what a person reads ---------------------------------------------------------------------------

def readable(e: Mapping[str, Any], default: str = "input") -> str:
    """One error item as "field: what is wrong" in plain words (the field, and the limit where there is one)."""
    loc = [str(x) for x in e.get("loc", ())]
    if loc and loc[0] in LOC_ROOTS:
        loc = loc[1:]
    kind, ctx, msg = e.get("type", ""), e.get("ctx") or {}, str(e.get("msg", ""))
    msg = msg.removeprefix("Value error, ")
    if kind == "missing" or (kind == "string_too_short" and ctx.get("min_length") == 1):
        msg = "required: it is empty"
    elif kind == "string_too_long" and "max_length" in ctx:
        msg = f"too long: at most {ctx['max_length']:,} characters"
    return f"{'.'.join(loc) or default}: {msg}"


def detail_lines(detail, default: str = "input") -> list[str]:
    """Lines of a `detail` (a list of items, or text)."""
    if isinstance(detail, list):
        return [readable(e, default) if isinstance(e, dict) else str(e) for e in detail]
    return [str(detail)]


def errors_of(exc, default: str = "input") -> list[str]:
    """Human lines ("prompt: ...") from a pydantic ValidationError, an HTTPException (422/404, detail list or
    text) or any exception, for error fragments."""
    if isinstance(exc, ValidationError):
        return [readable(e, default) for e in exc.errors()]
    detail = getattr(exc, "detail", None)
    return [str(exc)] if detail is None else detail_lines(detail, default)


MAX_LINES_HEADER = 2_000  # proxies refuse long response headers (nginx buffers 4-8 KB for all of them)


def error_lines_header(body: bytes) -> str | None:
    """The X-Error-Lines value of a JSON error body {"detail": ...}: its lines as a JSON list (ASCII: a header is
    latin-1), as many as fit in MAX_LINES_HEADER; None when the body is not such a document."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(doc, dict) or "detail" not in doc:
        return None
    lines = detail_lines(doc["detail"])
    for n in range(len(lines), 0, -1):
        kept = lines[:n] + ([f"... and {len(lines) - n} more"] if n < len(lines) else [])
        value = json.dumps(kept, ensure_ascii=True)
        if len(value) <= MAX_LINES_HEADER:
            return value
    return json.dumps([lines[0][:MAX_LINES_HEADER // 8] + " ..."], ensure_ascii=True)
