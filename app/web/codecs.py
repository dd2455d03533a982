"""A view's address, written and read in one place: each view has one `Codec` (its page path, `write(inputs)` -> the
page address that reproduces it, None when too long to push, and `read(params)` -> its request from that address or
the page's form), registered with the view in app/core/registration.py. Pages read with `codec.read`, fragments push
`codec.write` (HX-Push-Url), Fork links through it, and templates link through it; no script holds an address rule.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable, Mapping
from urllib.parse import urlencode

from pydantic import BaseModel

from app.web.forms import cap_url


@dataclass(frozen=True)
class Codec:
    path: str  # the page, e.g. "/generate"
    write: Callable[[Mapping[str, Any]], str | None]  # inputs -> path?query, None when too long to push
    read: Callable[[Any], BaseModel]  # query params or form fields -> the request (ValidationError / FormError)


def fields_query(inputs: Mapping[str, Any]) -> str:
    """Inputs as a query string: scalars as text, booleans as true/false, lists/dicts as compact JSON; None left out."""
    pairs = []
    for k, v in inputs.items():
        if v is None:
            continue
        if isinstance(v, bool):
            pairs.append((k, "true" if v else "false"))
        elif isinstance(v, (list, tuple, dict)):
            pairs.append((k, json.dumps(v, separators=(",", ":"), ensure_ascii=False)))
        else:
            pairs.append((k, str(v)))
    return urlencode(pairs)


def defaults_of(model: type[BaseModel]) -> dict:
    """Each field's default (default factories called); required fields left out."""
    return {k: (f.default if f.default_factory is None else f.default_factory())  # type: ignore[call-arg]
            for k, f in model.model_fields.items() if not f.is_required()}


def fields_codec(path: str, model: type[BaseModel], read: Callable[[Any], BaseModel], always: str) -> Codec:
    """The codec of a page whose address is its request's fields (`fields_query`): only the fields that differ from
    their defaults, `always` always given."""
    defaults = defaults_of(model)

    def write(inputs: Mapping[str, Any]) -> str | None:
        q = {k: v for k, v in inputs.items() if k == always or (v is not None and v != defaults.get(k))}
        return cap_url(path + "?" + fields_query(q))

    return Codec(path, write, read)
