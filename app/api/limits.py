"""Limits: one source (the Settings given to create_app), enforced in one place.

A request field whose bound is a limit carries a `Limit` in its annotation:

    prompt: Annotated[str, Limit("max_prompt_chars")] = Field(min_length=1)

and every `run_*` service starts with `enforce_limits(req, settings.limits)`, which walks the request (nested
models and lists of models too) and raises a 422 naming the field and the limit. Nothing here reads the
environment: the limits are the app's.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from fastapi import HTTPException
from pydantic import BaseModel

from app.api.errors import error_item

Check = Literal["len", "max", "abs", "each_max", "each_abs", "each_len", "total_len"]


@dataclass(frozen=True)
class Limit:
    """A field bounded by `Limits.<name>`: len (string chars / list items), max (value), abs (|value|),
    each_* for every item of a list, total_len (sum of the items' lengths)."""

    name: str
    check: Check = "len"


def _len_msg(value, limit: int, name: str) -> tuple[str, str]:
    if isinstance(value, str):
        return f"String should have at most {limit} characters ({name})", "string_too_long"
    return f"List should have at most {limit} items ({name})", "too_long"


def _problem(value: Any, lim: Limit, limit) -> tuple[list, str, str] | None:
    """(sub-location, message, type) of the first violation, or None."""
    if value is None:
        return None
    if lim.check == "len" and len(value) > limit:
        return ([], *_len_msg(value, limit, lim.name))
    if lim.check == "max" and value > limit:
        return ([], f"Input should be less than or equal to {limit} ({lim.name})", "less_than_equal")
    if lim.check == "abs" and abs(value) > limit:
        return ([], f"|value| should be at most {limit} ({lim.name})", "less_than_equal")
    for i, v in enumerate(value if lim.check.startswith("each_") else ()):
        if lim.check == "each_max" and v > limit:
            return ([i], f"each value should be at most {limit} ({lim.name})", "less_than_equal")
        if lim.check == "each_abs" and abs(v) > limit:
            return ([i], f"each value should have |value| at most {limit} ({lim.name})", "less_than_equal")
        if lim.check == "each_len" and len(v) > limit:
            return ([i], f"item {i} has more than {limit} characters ({lim.name})", "string_too_long")
    if lim.check == "total_len":
        total = sum(len(v) for v in value)
        if total > limit:
            return ([], f"the items have {total} characters in all; the limit is {limit} ({lim.name})", "too_long")
    return None


def violations(model: BaseModel, limits, loc: tuple = ("body",)) -> list[dict]:
    """Every limit the request breaks, as FastAPI-style 422 items (loc, msg, type, ctx.limit)."""
    out = []
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        for meta in field.metadata:
            if isinstance(meta, Limit):
                limit = getattr(limits, meta.name)  # AttributeError: a Limit naming no limit is a bug
                p = _problem(value, meta, limit)
                if p is not None:
                    out.append(error_item([*loc, name, *p[0]], p[1], p[2], limit=limit))
        if isinstance(value, BaseModel):
            out += violations(value, limits, (*loc, name))
        elif isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                if isinstance(v, BaseModel):
                    out += violations(v, limits, (*loc, name, i))
    return out


def enforce_limits(model: BaseModel, limits, loc: tuple = ("body",)) -> None:
    """422 naming the field and the limit when the request breaks one of the app's limits."""
    found = violations(model, limits, loc)
    if found:
        raise HTTPException(422, detail=found)
