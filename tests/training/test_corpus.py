"""app.training.corpus: readers on small synthetic files in each source's real layout, packing, dedup."""
from __future__ import annotations

import gzip
import json

from app.training import corpus as C


def test_b64num():
    assert C._b64num("A") == 0
    assert C._b64num("B") == 1
    assert C._b64num("/") == 63
    assert C._b64num("BA") == 64
    assert C._b64num("Bc") == 64 + 28
    # dictd offsets: base-64 digits, most significant first
    assert C._b64num("CAAA") == 2 * 64 ** 3


def _enc(n: int) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    s = ""
    while True:
        s = alphabet[n % 64] + s
        n //= 64
        if n == 0:
            return s


def test_read_dictd(tmp_path):
    entries = {"apple": "The fleshy pome or fruit of a rosaceous tree, <i>Pyrus malus</i>, cultivated widely.",
               "byte": "A unit of information\n   equal to eight bits, the smallest addressable unit of memory.",
               "ox": "short"}  # too short: dropped
    data, index, off = "", [], 0
    for word, text in entries.items():
        raw = text.encode()
        index.append(f"{word}\t{_enc(off)}\t{_enc(len(raw))}")
        data += text
        off += len(raw)
    d = tmp_path / "usr/share/dictd"
    d.mkdir(parents=True)
    (d / "gcide.index").write_text("00databaseinfo\tA\tB\n" + "\n".join(index) + "\n")
    with gzip.open(d / "gcide.dict.dz", "wb") as f:
        f.write(data.encode())
    out = list(C.read_dictd_gcide(tmp_path))
    assert out == ["The fleshy pome or fruit of a rosaceous tree, Pyrus malus , cultivated widely.",
                   "A unit of information equal to eight bits, the smallest addressable unit of memory."]


def test_read_wordnet(tmp_path):
    d = tmp_path / "usr/share/wordnet"
    d.mkdir(parents=True)
    (d / "data.noun").write_text(
        "  1 This software and database is being provided\n"
        "00001740 03 n 02 entity 0 thing 0 001 ~ 00001930 n 0000 | that which is perceived to exist\n")
    for pos in ("verb", "adj", "adv"):
        (d / f"data.{pos}").write_text("")
    assert list(C.read_wordnet(tmp_path)) == ["entity, thing (noun): that which is perceived to exist"]


def test_read_fortunes_and_jargon(tmp_path):
    d = tmp_path / "usr/share/games/fortunes"
    d.mkdir(parents=True)
    (d / "computers").write_text("A computer lets you make more mistakes faster.\n%\nshort\n%\n"
                                 "Real programmers don't comment their code; it was hard to write.\n")
    (d / "computers.dat").write_bytes(b"\x00\x01binary")
    assert list(C.read_fortunes(tmp_path)) == ["A computer lets you make more mistakes faster.",
                                               "Real programmers don't comment their code; it was hard to write."]
    j = tmp_path / "usr/share/doc/jargon"
    j.mkdir(parents=True)
    with gzip.open(j / "jargon.txt.gz", "wb") as f:
        f.write(b"hack:   n. 1. Originally, a quick job that produces what is needed.\n\ntiny\n")
    assert list(C.read_jargon(tmp_path)) == ["hack: n. 1. Originally, a quick job that produces what is needed."]


def test_read_factbook(tmp_path):
    d = tmp_path / "data/europe"
    d.mkdir(parents=True)
    (d / "fr.json").write_text(json.dumps({
        "Government": {"Country name": {"conventional short form": {"text": "France"}}},
        "Geography": {"Location": {"text": "Western Europe, bordering the Bay of Biscay &amp; the Channel"},
                      "Climate": {"text": "generally cool winters"}},
        "Economy": {"GDP": {"real": {"text": "$3 trillion"}, "note": "ignored"}},
    }))
    out = list(C.read_factbook(tmp_path))
    assert "France - Geography\nLocation: Western Europe, bordering the Bay of Biscay & the Channel\n" \
           "Climate: generally cool winters" in out
    assert "France - Economy\nGDP: real: $3 trillion" in out


def test_read_python_doc(tmp_path):
    d = tmp_path / "usr/share/doc/python3.11/html/_sources/library"
    d.mkdir(parents=True)
    (d / "json.rst.txt").write_text(
        ":mod:`json` --- JSON encoder\n============================\n\n"
        "JSON (JavaScript Object Notation) is a lightweight data interchange format inspired by JavaScript.\n\n"
        "Basic Usage\n-----------\n\n.. function:: dump(obj, fp)\n   Serialize obj as a JSON formatted stream to fp "
        "(a file-like object) using this conversion table.\n\n"
        "The json module always produces str objects, not bytes objects, so fp.write() must support str input.\n")
    out = list(C.read_python_doc(tmp_path))
    assert len(out) == 2
    assert out[0].startswith(":mod:`json`") and "lightweight data interchange" in out[0]
    assert out[1].startswith("Basic Usage") and "always produces str objects" in out[1]
    assert ".. function::" not in out[1]  # reST directives (and their indented bodies) are stripped


def test_pack_windows():
    docs = [[1, 2, 3], [4, 5], [6, 7, 8, 9]]
    assert C.pack_windows(docs, 4, [0]) == [[1, 2, 3, 0], [4, 5, 0, 6], [7, 8, 9, 0]]
    assert C.pack_windows(docs, 5, [0, 0]) == [[1, 2, 3, 0, 0], [4, 5, 0, 0, 6], [7, 8, 9, 0, 0]]
    assert C.pack_windows(docs, 6, []) == [[1, 2, 3, 4, 5, 6]]  # remainder dropped
    assert C.pack_windows([], 4, [0]) == []


def test_build_corpus_offline(tmp_path, monkeypatch):
    """Dedup (case/whitespace-insensitive), per-source budget, seeded shuffle, recorded sha256 of the token lists."""
    roots = {}
    for i, src in enumerate(C.SOURCES[:2]):
        roots[src.name] = tmp_path / src.name
    texts = {C.SOURCES[0].name: ["alpha beta gamma", "Alpha  beta GAMMA", "delta epsilon", "zeta eta theta"],
             C.SOURCES[1].name: ["delta epsilon", "iota kappa"]}
    monkeypatch.setattr(C, "SOURCES", [C.Source(s.name, s.fetch, s.licence, 1_000, f"fake{i}") for i, s in enumerate(C.SOURCES[:2])])
    monkeypatch.setattr(C, "READERS", {f"fake{i}": (lambda root, i=i: iter(texts[C.SOURCES[i].name])) for i in range(2)})
    monkeypatch.setattr(C, "fetch", lambda src, cache: tmp_path)

    class Tok:
        def encode(self, t, add_special_tokens=False):
            return [len(w) for w in t.split()]

    docs, rec = C.build_corpus(Tok(), seed=3, cache=tmp_path)
    assert sorted(map(tuple, docs)) == sorted([(5, 4, 5), (5, 7), (4, 3, 5), (4, 5)])
    assert [s["documents"] for s in rec["sources"]] == [3, 1]  # duplicate + cross-source duplicate removed
    assert rec["tokens"] == 10
    docs2, rec2 = C.build_corpus(Tok(), seed=3, cache=tmp_path)
    assert docs2 == docs and rec2["sha256"] == rec["sha256"]
