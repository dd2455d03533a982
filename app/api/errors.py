"""The error shapes every route uses: 422 naming the field (and the limit), 404 naming the valid range."""
from __future__ import annotations

from fastapi import HTTPException


def unprocessable(loc: list, msg: str, type_: str = "value_error", **ctx) -> HTTPException:
    """422 with one FastAPI-style item; loc starts with where the field is ("body", "query", "path")."""
    item: dict = {"loc": list(loc), "msg": msg, "type": type_}
    if ctx:
        item["ctx"] = ctx
    return HTTPException(422, detail=[item])


def out_of_range(loc: list, msg: str) -> HTTPException:
    """404 for an index outside its valid range (the message names the range)."""
    return HTTPException(404, detail=[{"loc": list(loc), "type": "out_of_range", "msg": msg}])
