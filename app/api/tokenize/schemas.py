"""Tokenize: a prompt (with its optional system prompt and chat template) in, its token count and the limit out."""
from __future__ import annotations

from pydantic import BaseModel, Field

from app.api.schemas import PromptFields


class TokenizeRequest(PromptFields):
    pass


class TokenizeResponse(BaseModel):
    n_tokens: int = Field(description="tokens the model reads (system prompt and chat template included)")
    limit: int = Field(description="max_prompt_tokens: prompts with more tokens are refused")
    n_chars: int = Field(description="characters in the prompt")
    max_chars: int = Field(description="max_prompt_chars")
