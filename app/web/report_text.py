"""The markdown the project's own report writers produce (headings, paragraphs, "- " lists, **bold**, `code`) as
blocks of inline spans for a template to render with autoescaping: no HTML passes through from the text."""
from __future__ import annotations

import re
from dataclasses import dataclass

INLINE = re.compile(r"\*\*(.+?)\*\*|`([^`]+)`")


@dataclass(frozen=True)
class Block:
    """kind: "h2", "h3", "p" or "ul"; items: the spans of the heading or paragraph, or of each list item."""

    kind: str
    items: tuple[tuple[tuple[str, str], ...], ...]


def spans(text: str) -> tuple[tuple[str, str], ...]:
    """Inline markup -> (("text" | "strong" | "code", text), ...)."""
    out, at = [], 0
    for m in INLINE.finditer(text):
        if m.start() > at:
            out.append(("text", text[at:m.start()]))
        out.append(("strong", m.group(1)) if m.group(1) is not None else ("code", m.group(2)))
        at = m.end()
    if at < len(text):
        out.append(("text", text[at:]))
    return tuple(out)


def blocks(markdown: str) -> list[Block]:
    """Blocks of a markdown text; "#" and "##" headings are h2 (the page has its own h1), "###" h3; image lines are
    dropped (pages show figures themselves)."""
    out: list[Block] = []
    para: list[str] = []
    items: list[str] = []

    def flush():
        if para:
            out.append(Block("p", (spans(" ".join(para)),)))
            para.clear()
        if items:
            out.append(Block("ul", tuple(spans(i) for i in items)))
            items.clear()

    for line in markdown.split("\n"):
        s = line.strip()
        if not s or s.startswith("!["):
            flush()
        elif (h := re.match(r"(#{1,3})\s+(.*)", s)) is not None:
            flush()
            out.append(Block(f"h{max(2, len(h.group(1)))}", (spans(h.group(2)),)))
        elif s.startswith("- "):
            if para:
                flush()
            items.append(s[2:])
        elif items and line.startswith("  "):  # a list item's continuation line
            items[-1] += " " + s
        else:
            if items:
                flush()
            para.append(s)
    flush()
    return out
