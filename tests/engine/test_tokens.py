"""How tokens are shown (app/engine/tokens.py): byte tokens as their bytes, never "\ufffd"; the token that completes a
split character also shows it. Expected strings are written from the characters' UTF-8 bytes, not from the code."""
from __future__ import annotations

import pytest

from app.engine.tiny import byte_tokenizer
from app.engine.tokens import show_bytes, token_text, token_texts


@pytest.fixture(scope="module")
def tok():
    return byte_tokenizer()


def test_dog_emoji_is_four_byte_tokens_shown_as_bytes(tok):
    ids = tok.encode("a 🐶", add_special_tokens=False)
    assert "🐶".encode() == b"\xf0\x9f\x90\xb6"
    assert token_texts(tok, ids) == ["a", " ", "<0xF0>", "<0x9F>", "<0x90>", "<0xB6>→🐶"]
    assert [token_text(tok, i) for i in ids[2:]] == ["<0xF0>", "<0x9F>", "<0x90>", "<0xB6>"]
    assert [tok.decode([i]) for i in ids[2:]] == ["\ufffd"] * 4  # what views showed before


def test_cjk_characters_and_ascii_mixed(tok):
    ids = tok.encode("东京是", add_special_tokens=False)
    want = []
    for ch in "东京是":
        b = ch.encode()
        want += [f"<0x{x:02X}>" for x in b[:-1]] + [f"<0x{b[-1]:02X}>→{ch}"]
    assert token_texts(tok, ids) == want
    assert token_texts(tok, tok.encode("The cat", add_special_tokens=False)) == list("The cat")


def test_a_real_replacement_character_stays_itself(tok):
    # U+FFFD typed by the user is a valid character (EF BF BD): it completes like any other
    assert token_texts(tok, tok.encode("x\ufffd", add_special_tokens=False)) == ["x", "<0xEF>", "<0xBF>", "<0xBD>→\ufffd"]


def test_show_bytes():
    assert show_bytes(b" \xf0\x9f") == " <0xF0><0x9F>"
    assert show_bytes("é".encode() + b"\x80") == "é<0x80>"


def test_sentencepiece_byte_fallback_pieces():
    """Gemma / Llama 2 style: a piece named <0xF0> is that byte."""
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "▁a": 1, "<0xF0>": 2, "<0x9F>": 3, "<0x90>": 4, "<0xB6>": 5}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    sp = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>")
    assert sp.decode([2]) == "\ufffd"
    assert token_texts(sp, [1, 2, 3, 4, 5]) == [" a", "<0xF0>", "<0x9F>", "<0x90>", "<0xB6>→🐶"]
