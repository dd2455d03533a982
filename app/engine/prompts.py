"""Turn (prompt, optional system prompt) into token ids, with the model's chat template when asked."""
from __future__ import annotations

from dataclasses import dataclass

from app.engine.tokens import token_texts


@dataclass(frozen=True)
class EncodedPrompt:
    token_ids: tuple[int, ...]
    text: str  # exactly what was tokenised (after the chat template)
    chat: bool


def encode_prompt(tokenizer, prompt: str, system_prompt: str | None = None, chat: bool | None = None,
                  prepend_bos: bool = False) -> EncodedPrompt:
    """Token ids for a prompt; the chat template is used when a system prompt is given (or chat=True).

    Plain prompts are tokenised as raw text (no special tokens), the way "The capital of France is"
    is written in interpretability notebooks; prepend_bos adds the tokenizer's BOS (Gemma wants it).
    """
    use_chat = bool(system_prompt) if chat is None else chat
    if use_chat and getattr(tokenizer, "chat_template", None):
        messages = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + [
            {"role": "user", "content": prompt}]
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        ids = tokenizer.encode(text, add_special_tokens=False)
        return EncodedPrompt(tuple(ids), text, True)
    text = f"{system_prompt}\n\n{prompt}" if system_prompt else prompt
    ids = tokenizer.encode(text, add_special_tokens=False)
    if prepend_bos and tokenizer.bos_token_id is not None:
        ids = [tokenizer.bos_token_id] + ids
    return EncodedPrompt(tuple(ids), text, False)


def token_strings(tokenizer, ids) -> list[str]:
    """Each token decoded on its own (what the token strip shows)."""
    return token_texts(tokenizer, ids)
