"""A view's address, written and read in one place: each view has one `Codec` (its page path, `write(inputs)` -> the
page address that reproduces it, None when too long to push, and `read(params)` -> its request from that address or
the page's form), registered with the view in app/core/registration.py. Pages read with `codec.read`, fragments push
`codec.address` (HX-Push-Url, with the tab title `codec.title` beside it), Fork links through it, and templates link
through it; no script holds an address rule or a view's name.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable, Mapping
from urllib.parse import urlencode

from pydantic import BaseModel

from app.web.forms import cap_url

SITE = "Activation Space Navigator"
TITLE_PROMPT_CHARS = 60  # how much of the prompt a tab title shows


@dataclass(frozen=True)
class Address:
    """A pushed address and the tab title that goes with it (htmx sets the title from the fragment's <title>)."""
    url: str
    title: str | None  # None: the tab keeps its title


@dataclass(frozen=True)
class Codec:
    path: str  # the page, e.g. "/generate"
    write: Callable[[Mapping[str, Any]], str | None]  # inputs -> path?query, None when too long to push
    read: Callable[[Any], BaseModel]  # query params or form fields -> the request (ValidationError / FormError)
    page: str = ""  # the page's name in the tab title, e.g. "Generate & steer" ("": the page titles itself)
    view: str = ""  # the view's name where its page shows several, e.g. "Steered vs unsteered"

    def title(self, inputs: Mapping[str, Any] | None = None, named: bool = True) -> str:
        """The tab title "<view> · <prompt (60 chars)> · <page> · Activation Space Navigator": the view's name and
        the prompt only when the inputs have a prompt (`named=False`: no view's name, a page showing none yet)."""
        prompt = str((inputs or {}).get("prompt") or "")
        head = [self.view] if prompt and named and self.view else []
        head += [prompt[:TITLE_PROMPT_CHARS]] if prompt else []
        return " · ".join(head + [p for p in (self.page, SITE) if p])

    def address(self, inputs: Mapping[str, Any]) -> Address | None:
        """The address to push for these inputs and its tab title; None when too long to push."""
        url = self.write(inputs)
        return Address(url, self.title(inputs) if self.page else None) if url else None


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


def fields_codec(path: str, model: type[BaseModel], read: Callable[[Any], BaseModel], always: str,
                 page: str = "") -> Codec:
    """The codec of a page whose address is its request's fields (`fields_query`): only the fields that differ from
    their defaults, `always` always given; `page` names it in the tab title."""
    defaults = defaults_of(model)

    def write(inputs: Mapping[str, Any]) -> str | None:
        q = {k: v for k, v in inputs.items() if k == always or (v is not None and v != defaults.get(k))}
        return cap_url(path + "?" + fields_query(q))

    return Codec(path, write, read, page)
