"""How a token is shown: its text, or, for a byte-level piece of a character, its bytes (`<0xF0><0x9F>`).

A byte-level BPE (GPT-2, SmolLM2, Llama 3) or a SentencePiece byte fallback (Gemma, Llama 2) splits a character it
has no token for into byte tokens; `tokenizer.decode([id])` turns each into "\ufffd", which says nothing. Every view
shows tokens through `token_text` (one token alone) or `token_texts` (a sequence: the token that completes a
character also shows it, "<0xB6>→🐶").
"""
from __future__ import annotations

import re
from typing import Sequence

REPLACEMENT = "\ufffd"
_SP_BYTE = re.compile(r"<0x([0-9A-Fa-f]{2})>")


def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet (printable stand-ins for the 256 bytes) -> byte value."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def token_bytes(tokenizer, token_id: int, _alphabet: dict[str, int] | None = None) -> bytes | None:
    """The raw bytes a token stands for (byte-level BPE or SentencePiece byte fallback); None when unknown."""
    piece = tokenizer.convert_ids_to_tokens(int(token_id))
    if not isinstance(piece, str):
        return None
    if m := _SP_BYTE.fullmatch(piece):
        return bytes([int(m.group(1), 16)])
    alphabet = _alphabet if _alphabet is not None else _byte_decoder()
    if piece and all(ch in alphabet for ch in piece):
        return bytes(alphabet[ch] for ch in piece)
    if "\u2581" in piece or _SP_BYTE.search(piece):  # SentencePiece: ▁ is a space, <0x..> runs are bytes
        out = bytearray()
        for part in re.split(r"(<0x[0-9A-Fa-f]{2}>)", piece.replace("\u2581", " ")):
            m = _SP_BYTE.fullmatch(part)
            out += bytes([int(m.group(1), 16)]) if m else part.encode("utf-8")
        return bytes(out)
    return None


def show_bytes(b: bytes) -> str:
    """Valid UTF-8 as text, every other byte as <0xXX> (b" \\xf0\\x9f" -> " <0xF0><0x9F>")."""
    s = b.decode("utf-8", "surrogateescape")  # undecodable bytes -> lone surrogates U+DC80..U+DCFF
    return "".join(f"<0x{ord(ch) - 0xDC00:02X}>" if 0xDC80 <= ord(ch) <= 0xDCFF else ch for ch in s)


def token_text(tokenizer, token_id: int) -> str:
    """One token as shown on its own: its decoded text, or its bytes where it holds part of a character."""
    text = tokenizer.decode([int(token_id)])
    if REPLACEMENT not in text:
        return text
    b = token_bytes(tokenizer, token_id)
    return text if b is None else show_bytes(b)


def _char_spans(b: bytes) -> list[tuple[int, int, bool]]:
    """(start, end, valid) of each character of b: a valid UTF-8 sequence, or one stray byte."""
    out, i = [], 0
    while i < len(b):
        for n in (4, 3, 2, 1):
            if i + n <= len(b):
                try:
                    b[i:i + n].decode("utf-8")
                except UnicodeDecodeError:
                    continue
                out.append((i, i + n, True))
                i += n
                break
        else:
            out.append((i, i + 1, False))
            i += 1
    return out


def _run_texts(pieces: list[bytes]) -> list[str]:
    """Texts of consecutive byte tokens: a character inside one token as text; one split across tokens as each
    token's bytes, the token that completes it adding "→" and the character."""
    ends, pos = [], 0
    for p in pieces:
        pos += len(p)
        ends.append(pos)
    starts = [e - len(p) for e, p in zip(ends, pieces)]
    whole = b"".join(pieces)
    texts = [""] * len(pieces)
    for s, e, valid in _char_spans(whole):
        for k, (ts, te) in enumerate(zip(starts, ends)):
            lo, hi = max(s, ts), min(e, te)
            if lo >= hi:
                continue
            if valid and s >= ts and e <= te:
                texts[k] += whole[s:e].decode("utf-8")
            else:
                texts[k] += "".join(f"<0x{x:02X}>" for x in whole[lo:hi])
                if valid and e == hi:
                    texts[k] += "→" + whole[s:e].decode("utf-8")
    return texts


def token_texts(tokenizer, ids: Sequence[int]) -> list[str]:
    """Each token of a sequence as shown in a token strip (see the module docstring); same length as ids."""
    ids = [int(i) for i in ids]
    texts = [tokenizer.decode([i]) for i in ids]
    alphabet = None
    k = 0
    while k < len(ids):
        if REPLACEMENT not in texts[k]:
            k += 1
            continue
        alphabet = alphabet if alphabet is not None else _byte_decoder()
        run: list[bytes] = []
        j = k
        while j < len(ids) and REPLACEMENT in texts[j] and (b := token_bytes(tokenizer, ids[j], alphabet)) is not None:
            run.append(b)
            j += 1
        if not run:  # bytes unknown for this tokenizer: keep its own text
            k += 1
            continue
        texts[k:j] = _run_texts(run)
        k = j
    return texts
