"""app.web.report_text: the report writers' markdown as blocks, against the text it came from."""
from __future__ import annotations

from app.web.report_text import Block, blocks, spans


def test_spans_split_bold_and_code_and_keep_everything_else():
    assert spans("a **b** c `d` e") == (("text", "a "), ("strong", "b"), ("text", " c "), ("code", "d"), ("text", " e"))
    assert spans("<script>1 < 2</script>") == (("text", "<script>1 < 2</script>"),)  # the template escapes it
    assert spans("**unclosed") == (("text", "**unclosed"),)


def test_blocks_of_a_report():
    assert blocks("### Sub")[0].kind == "h3"
    md = ("# Title\n\nFirst line\nsame paragraph.\n\n![fig](x.svg)\n\n## Per concept\n\n- **a** one\n  continued\n"
          "- b `x`\nafter the list\n")
    got = blocks(md)
    assert got == [
        Block("h2", ((("text", "Title"),),)),
        Block("p", ((("text", "First line same paragraph."),),)),
        Block("h2", ((("text", "Per concept"),),)),
        Block("ul", ((("strong", "a"), ("text", " one continued")), (("text", "b "), ("code", "x")))),
        Block("p", ((("text", "after the list"),),)),
    ]
