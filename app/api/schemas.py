"""Shared request fields with their limits (422s name the field and the limit)."""
from __future__ import annotations

import dataclasses
import math
from typing import Annotated, Any, get_type_hints

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, create_model, field_validator

from app.api.limits import Limit


def check_text(v: str | None) -> str | None:
    """Text the model and the store can take: 422 (not silent sanitising) on lone surrogates and NUL.

    Decision: lone UTF-16 surrogates (only reachable through JSON \\uD800 escapes) are not Unicode text, cannot be
    encoded as UTF-8 and make the tokenizer raise; NUL is valid Unicode but truncates strings in C APIs and is never
    meaningful in a prompt. Both are rejected with a 422 that says where, rather than silently changed, so what
    the model reads is always exactly what the user sent. Other control, bidi and zero-width characters are
    accepted (they are real text and real tokens) and are rendered escaped.
    """
    if v is None:
        return v
    if "\x00" in v:
        raise ValueError(f"contains a NUL character (U+0000) at position {v.index(chr(0))}; remove it")
    try:
        v.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"contains a lone UTF-16 surrogate at position {exc.start} (not valid Unicode)") from None
    return v


SafeText = Annotated[str, AfterValidator(check_text)]


def search_query(v: str) -> str:
    """A search box's text: checked like any text, and not only spaces."""
    check_text(v)
    if not v.strip():
        raise ValueError("the query is empty (only spaces)")
    return v
"""A str field that rejects lone surrogates and NUL with a 422 (use for any text that reaches the model or store)."""


class PromptFields(BaseModel):
    """A prompt with an optional system prompt (rendered with the chat template when given)."""

    model_config = ConfigDict(extra="forbid")

    prompt: Annotated[str, Limit("max_prompt_chars")] = Field(min_length=1, description="at most max_prompt_chars characters (/health limits)")
    system_prompt: Annotated[str | None, Limit("max_system_prompt_chars")] = Field(default=None, description="at most max_system_prompt_chars characters")
    chat: bool | None = Field(default=None, description="use the chat template (default: when a system prompt is given)")
    no_default_system: bool = Field(default=False, description="with the chat template and no system prompt: send an empty "
                                    "system message so a template that inserts a default system prompt (SmolLM2) leaves it out")

    @field_validator("prompt", "system_prompt", mode="after")
    @classmethod
    def _valid_text(cls, v):
        return check_text(v)


class SystemReadModel(BaseModel):
    """Which system prompt the model read (app.engine.prompts.encode_prompt), shown in every chat view."""

    source: str = Field(description='"given", "template default" (the chat template inserted its own), "none" or "prepended as text"')
    text: str | None = Field(default=None, description="the system prompt the model read (\"\" = an empty system turn)")
    default: str | None = Field(default=None, description="the chat template's default system prompt, when it has one")
    can_omit: bool = Field(default=False, description="the default can be left out (no_default_system)")
    chat: bool = Field(default=False, description="the chat template was used")


def finite(v: float, name: str = "value") -> float:
    if v is not None and not math.isfinite(v):
        raise ValueError(f"{name} must be a finite number")
    return v


class FiniteModel(BaseModel):
    """Rejects NaN/inf in every float field."""

    @field_validator("*", mode="after")
    @classmethod
    def _finite(cls, v):
        if isinstance(v, float) and not math.isfinite(v):
            raise ValueError("must be a finite number (no NaN or infinity)")
        return v


def finite_or_none(x) -> float | None:
    """A number as a float, None for NaN / infinity (JSON has neither)."""
    x = float(x)
    return x if math.isfinite(x) else None


def model_of(record: type, through: str | None = None) -> type[BaseModel]:
    """A pydantic model with an engine dataclass's fields (types, defaults, order), up to and including `through`:
    an API model that subclasses it shares the engine's one field list (its own fields follow)."""
    hints = get_type_hints(record)
    names = [f.name for f in dataclasses.fields(record)]
    if through is not None and through not in names:  # a misspelling would silently copy every field
        raise ValueError(f"{record.__name__} has no field {through!r}; it has {', '.join(names)}")
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(record):
        fields[f.name] = (hints[f.name], ... if f.default is dataclasses.MISSING else f.default)
        if f.name == through:
            break
    return create_model(f"{record.__name__}Fields", **fields)
