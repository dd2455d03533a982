"""Shared request fields with their limits (422s name the field and the limit)."""
from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.settings import get_settings

L = get_settings().limits


class PromptFields(BaseModel):
    """A prompt with an optional system prompt (rendered with the chat template when given)."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1, max_length=L.max_prompt_chars, description=f"at most {L.max_prompt_chars} characters")
    system_prompt: str | None = Field(default=None, max_length=L.max_system_prompt_chars)
    chat: bool | None = Field(default=None, description="use the chat template (default: when a system prompt is given)")


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
