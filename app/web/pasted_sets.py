"""Pasted prompt sets behind `sha:<hash>` addresses, kept in the Store by content hash (every replica sharing the
store opens the same link, and it survives a restart)."""
from __future__ import annotations

import json
import re
from urllib.parse import urlencode

from app.engine import discovery as disc

SHA_RE = re.compile(r"^sha:([0-9a-f]{16})$")


def set_ref(prompts) -> str:
    """The address token of a pasted set: 'sha:' + its content hash (pure: the same prompts, the same token)."""
    return "sha:" + disc.prompt_set_hash(list(prompts), [])


def keep(store, prompts) -> str:
    """Store a pasted set under its hash (no-op without a store or when already there); returns its address token."""
    ref = set_ref(prompts)
    if store is not None and prompts:
        store.put_prompt_set(ref[4:], list(prompts))
    return ref


def keep_sides(store, req, sides=("concept", "contrast")) -> None:
    """Keep every pasted side (`<side>_prompts`) of a request."""
    for side in sides:
        prompts = getattr(req, f"{side}_prompts", None)
        if prompts:
            keep(store, prompts)


def lookup(store, ref: str) -> list[str] | None:
    """The prompts behind 'sha:<hash>', or None (unknown hash, malformed token or no store)."""
    m = SHA_RE.match(ref.strip())
    if not m or store is None:
        return None
    return store.get_prompt_set(m.group(1))


def address_sets(q: dict, sides: dict, path: str, max_url: int) -> dict:
    """Put each pasted side into the query q: inline as `<side>_prompts` (compact JSON: the address works anywhere)
    when the whole address stays under max_url, else as `<side>_set=sha:<hash>` (kept in the store when the job
    started). sides: side -> prompts (only the pasted ones)."""
    inline = {**q, **{f"{k}_prompts": json.dumps(list(v), separators=(",", ":"), ensure_ascii=False) for k, v in sides.items()}}
    if len(path + "?" + urlencode(inline)) <= max_url:
        return inline
    return {**q, **{f"{k}_set": set_ref(v) for k, v in sides.items()}}
