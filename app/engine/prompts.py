"""Turn (prompt, optional system prompt) into token ids, with the model's chat template when asked."""
from __future__ import annotations

from dataclasses import dataclass

from app.engine.tokens import token_texts


@dataclass(frozen=True)
class EncodedPrompt:
    token_ids: tuple[int, ...]
    text: str  # exactly what was tokenised (after the chat template)
    chat: bool
    system: str | None = None  # the system prompt the model read ("" = an empty system turn, None = none)
    system_source: str = "none"  # "given" | "template default" | "none" | "prepended as text"


@dataclass(frozen=True)
class TemplateSystem:
    """What a chat template does with the system prompt, found by rendering it (not from a list of models)."""

    default: str | None  # the system prompt it inserts when none is given (None: it inserts none)
    can_omit: bool  # an empty system message leaves the default out, so a true "none" can be offered
    supports_system: bool  # a system message renders at all (Gemma's template refuses one)


_USER, _MARK = "\x1fuser\x1f", "\x1fsystem\x1f"


def _render(tokenizer, messages) -> str:
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def _common_prefix(a: str, b: str) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def _common_suffix(a: str, b: str) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[-1 - n] == b[-1 - n]:
        n += 1
    return n


def template_system(tokenizer) -> TemplateSystem | None:
    """Render the template with no system message and with a marker one; the text the first has where the second has
    the marker is the template's default system prompt (SmolLM2: "You are a helpful AI assistant named SmolLM, ...").
    None when the tokenizer has no chat template."""
    if not getattr(tokenizer, "chat_template", None):
        return None
    user = {"role": "user", "content": _USER}
    plain = _render(tokenizer, [user])
    try:
        marked = _render(tokenizer, [{"role": "system", "content": _MARK}, user])
    except Exception:  # noqa: BLE001 - a template that raises on a system message (Gemma) has no system turn
        return TemplateSystem(None, False, False)
    # both end with the same user turn; what plain has before it, less the system turn's wrapper, is the default
    k = _common_suffix(plain, marked)
    head, marked_head = plain[:len(plain) - k], marked[:len(marked) - k]
    pre, found, post = marked_head.partition(_MARK)
    default = None
    if found and head:
        i = _common_prefix(head, pre)
        j = _common_suffix(head[i:], post)
        default = head[i:len(head) - j].strip() or None
    can_omit = False
    if default:
        empty = _render(tokenizer, [{"role": "system", "content": ""}, user])
        can_omit = default not in empty
    return TemplateSystem(default or None, can_omit, True)


def encode_prompt(tokenizer, prompt: str, system_prompt: str | None = None, chat: bool | None = None,
                  prepend_bos: bool = False, no_default_system: bool = False) -> EncodedPrompt:
    """Token ids for a prompt; the chat template is used when a system prompt is given (or chat=True).

    Plain prompts are tokenised as raw text (no special tokens), the way "The capital of France is"
    is written in interpretability notebooks; prepend_bos adds the tokenizer's BOS (Gemma wants it).
    With the chat template and no system prompt, a template that inserts a default system prompt does so, unless
    no_default_system: then an empty system message is sent (where that leaves the default out). The result says
    which system prompt the model read (`system`, `system_source`).
    """
    use_chat = bool(system_prompt) if chat is None else chat
    if use_chat and getattr(tokenizer, "chat_template", None):
        system, source = (system_prompt, "given") if system_prompt else (None, "none")
        sys_msgs = [{"role": "system", "content": system_prompt}] if system_prompt else []
        if not system_prompt:
            ts = template_system(tokenizer)
            if ts is not None and ts.default:
                if no_default_system and ts.can_omit:
                    sys_msgs, system, source = [{"role": "system", "content": ""}], "", "none"
                else:
                    system, source = ts.default, "template default"
        messages = sys_msgs + [{"role": "user", "content": prompt}]
        text = _render(tokenizer, messages)
        ids = tokenizer.encode(text, add_special_tokens=False)
        return EncodedPrompt(tuple(ids), text, True, system, source)
    text = f"{system_prompt}\n\n{prompt}" if system_prompt else prompt
    ids = tokenizer.encode(text, add_special_tokens=False)
    if prepend_bos and tokenizer.bos_token_id is not None:
        ids = [tokenizer.bos_token_id] + ids
    return EncodedPrompt(tuple(ids), text, False, system_prompt or None, "prepended as text" if system_prompt else "none")


def token_strings(tokenizer, ids) -> list[str]:
    """Each token decoded on its own (what the token strip shows)."""
    return token_texts(tokenizer, ids)
