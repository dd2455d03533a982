"""Counting a prompt's tokens: the same encoding every view uses (app.engine.prompts.encode_prompt), no model run."""
from __future__ import annotations

from app.api.limits import enforce_limits
from app.api.tokenize.schemas import TokenizeRequest, TokenizeResponse
from app.engine.prompts import encode_prompt


def run_tokenize(engine, settings, req: TokenizeRequest) -> TokenizeResponse:
    """Token count of the prompt as encoded for the model (more than the limit is reported, not refused)."""
    enforce_limits(req, settings.limits)
    ep = encode_prompt(engine.tokenizer, req.prompt, req.system_prompt, req.chat, prepend_bos=engine.profile.prepend_bos,
                       no_default_system=req.no_default_system)
    return TokenizeResponse(n_tokens=len(ep.token_ids), limit=settings.limits.max_prompt_tokens,
                            n_chars=len(req.prompt), max_chars=settings.limits.max_prompt_chars)
