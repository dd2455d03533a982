"""The one way pages read form / query fields, flags and URL caps (errors become lines with app.api.errors.errors_of)."""
from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from app.api.errors import errors_of

MAX_URL = 8_000  # longer page addresses are not pushed (servers cap request lines at ~16 KB)
TRUE, FALSE = {"1", "true", "on", "yes"}, {"0", "false", "off", "no"}
M = TypeVar("M", bound=BaseModel)


def values(params, key: str) -> list[str]:
    """Every value of a key (form data, query params, or a plain dict)."""
    if hasattr(params, "getlist"):
        return list(params.getlist(key))
    return [params[key]] if key in params else []


def last(params, key: str) -> Any:
    """Last non-empty value of a form / query key (a checkbox after its hidden default wins), else None."""
    vals = [v for v in values(params, key) if v != ""]
    return vals[-1] if vals else None


def flag(value, default: bool | None):
    """'1/true/on/yes' -> True, '0/false/off/no' -> False, None/''/'auto' -> default; anything else is passed
    on unchanged so that pydantic names the field."""
    if value is None or value == "" or value == "auto":
        return default
    v = str(value).strip().lower()
    return True if v in TRUE else False if v in FALSE else value


def cap_url(url: str) -> str | None:
    """The address, or None when it is too long to push into the history."""
    return url if len(url) <= MAX_URL else None


class FormError(ValueError):
    """Form fields that cannot become a request: `errors` holds one "field: what is wrong" line each."""

    def __init__(self, errors: list[str]):
        super().__init__("; ".join(errors))
        self.errors = errors


def model_fields_of(params, model: type[BaseModel], keep_blank: tuple[str, ...] = (), strip: bool = True,
                    flags: tuple[str, ...] = ("chat",)) -> dict:
    """The last value of each of the model's fields found in params, blank ones (empty; or only white space with
    `strip`) left out but for `keep_blank`; `flags` read as booleans (auto: None)."""
    raw = {}
    for name in model.model_fields:
        v = last(params, name)
        if v is None or (name not in keep_blank and isinstance(v, str) and not (v.strip() if strip else v)):
            continue
        raw[name] = v
    for k in flags:
        if k in raw:
            raw[k] = flag(raw[k], None)
    return raw


def validated(model: type[M], raw: dict) -> M:
    """model.model_validate(raw), its errors raised as a FormError."""
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise FormError(errors_of(exc)) from None
