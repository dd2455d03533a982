"""Prompt sets: parsing, a stable hash of the pair, token ids without a chat template."""
from __future__ import annotations

import hashlib
from typing import Sequence


def parse_prompt_lines(text: str) -> list[str]:
    """One prompt per line; blank lines and surrounding whitespace dropped."""
    return [ln.strip() for ln in text.splitlines() if ln.strip()]


def prompt_set_hash(concept: Sequence[str], contrast: Sequence[str]) -> str:
    """Stable hash of the two prompt sets (order matters: it fixes prompt indices)."""
    h = hashlib.sha256()
    for name, prompts in (("concept", concept), ("contrast", contrast)):
        h.update(name.encode())
        for p in prompts:
            h.update(b"\x00" + p.encode("utf-8"))
    return h.hexdigest()[:16]


def encode_prompt_set(tokenizer, prompts: Sequence[str], prepend_bos: bool = False,
                      max_tokens: int | None = None) -> list[tuple[int, ...]]:
    """Token ids of each prompt as raw text (no chat template), truncated to max_tokens."""
    out = []
    for p in prompts:
        ids = tokenizer.encode(p, add_special_tokens=False)
        if prepend_bos and tokenizer.bos_token_id is not None:
            ids = [tokenizer.bos_token_id] + ids
        if max_tokens is not None:
            ids = ids[:max_tokens]
        out.append(tuple(int(i) for i in ids))
    return out
