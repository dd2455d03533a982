"""app.training.prose: package descriptions with per-document licences, and their record in the corpus manifest."""
from __future__ import annotations

import hashlib
import json

from app.training import corpus as C
from app.training import prose

METADATA = """Metadata-Version: 2.1
Name: {name}
Version: 1.2.3
{licence}Classifier: Programming Language :: Python :: 3

[![Build](https://ci.example/badge.svg)](https://ci.example)
<p align="center"><img src="logo.png"></p>

# {name}

{name} parses calendars and turns every event into a plain record you can sort and filter.

## Install

Install it with pip, then import it in your program and call the parse function on a file.
"""


def _dist(site, name, licence):
    d = site / f"{name}-1.2.3.dist-info"
    d.mkdir(parents=True)
    (d / "METADATA").write_text(METADATA.format(name=name, licence=licence), encoding="utf-8")


def test_pypi_documents_carry_each_package_licence(tmp_path):
    site = tmp_path / "site"
    _dist(site, "calparse", "License-Expression: MIT\n")
    _dist(site, "oldpkg", "License: BSD-3-Clause\n")
    _dist(site, "classified", "Classifier: License :: OSI Approved :: Apache Software License\n")
    _dist(site, "nolicence", "License: UNKNOWN\n")  # left out: no licence to record
    docs = list(prose.pypi_documents([site, site]))  # a second copy of a folder adds nothing
    assert {d["package"] for d in docs} == {"calparse", "oldpkg", "classified"}
    lic = {d["package"]: d["licence"] for d in docs}
    assert lic == {"calparse": "MIT", "oldpkg": "BSD-3-Clause", "classified": "Apache Software License"}
    first = [d["text"] for d in docs if d["package"] == "calparse"]
    assert first == ["calparse: # calparse\n\ncalparse parses calendars and turns every event into a plain record you can "
                     "sort and filter.",
                     "calparse: ## Install\n\nInstall it with pip, then import it in your program and call the parse "
                     "function on a file."]
    assert not any("badge" in d["text"] or "<img" in d["text"] for d in docs)


def test_debian_documents_read_the_status_file_and_dep5_licences(tmp_path):
    status = tmp_path / "status"
    status.write_text(
        "Package: hello\nStatus: install ok installed\nVersion: 2.10-3\nDescription: example package based on GNU hello\n"
        " The GNU hello program produces a familiar, friendly greeting.  It\n allows non-programmers to use a classic "
        "computer science tool.\n .\n It is a good example of a package.\n\n"
        "Package: nocopyright\nStatus: install ok installed\nDescription: a package without a DEP-5 copyright file\n"
        " This long description is long enough to be a document but has no licence file at all.\n\n"
        "Package: removed\nStatus: deinstall ok config-files\nDescription: gone\n Long enough text that would otherwise be "
        "read as a document of this corpus.\n", encoding="utf-8")
    doc = tmp_path / "doc"
    (doc / "hello").mkdir(parents=True)
    (doc / "hello" / "copyright").write_text("Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/"
                                             "\n\nFiles: *\nCopyright: FSF\nLicense: GPL-3+\n", encoding="utf-8")
    (doc / "nocopyright").mkdir()
    (doc / "nocopyright" / "copyright").write_text("This package is free software.\n", encoding="utf-8")
    docs = list(prose.debian_documents(status, doc))
    assert docs == [{"text": "hello: example package based on GNU hello.\nThe GNU hello program produces a familiar, "
                             "friendly greeting.  It\nallows non-programmers to use a classic computer science tool.\n\n"
                             "It is a good example of a package.", "licence": "GPL-3+", "package": "hello",
                     "version": "2.10-3"}]


def test_build_corpus_records_per_document_licences_tokens_and_sha256(tmp_path, monkeypatch):
    root = tmp_path / "raw" / "pypi-descriptions"
    docs = [{"text": "alpha beta gamma", "licence": "MIT", "package": "a", "version": "1"},
            {"text": "delta epsilon", "licence": "Apache-2.0", "package": "b", "version": "1"},
            {"text": "zeta eta theta iota", "licence": "MIT", "package": "c", "version": "1"}]
    prose.snapshot(root, iter(docs))
    prose.snapshot(root, iter([]))  # the first snapshot stays
    src = next(s for s in C.SOURCES if s.name == "pypi-descriptions")
    assert src.fetch == "local:site-packages" and src.reader == "read_local_snapshot"
    monkeypatch.setattr(C, "SOURCES", [C.Source(src.name, src.fetch, src.licence, 1_000, src.reader)])
    monkeypatch.setattr(C, "fetch", lambda s, cache: root)

    class Tok:
        def encode(self, t, add_special_tokens=False):
            return [len(w) for w in t.split()]

    out, rec = C.build_corpus(Tok(), seed=0, cache=tmp_path)
    (entry,) = rec["sources"]
    assert entry["licences"] == {"MIT": 2, "Apache-2.0": 1} and entry["tokens"] == 9 and entry["documents"] == 3
    # independently: the same seeded shuffle of the documents, then sha256 over each one's token ids as JSON
    import random

    texts = [d["text"] for d in docs]
    random.Random(0).shuffle(texts)
    h = hashlib.sha256()
    for t in texts:
        h.update(json.dumps(Tok().encode(t)).encode())
    assert entry["sha256"] == h.hexdigest()
    assert sorted(map(tuple, out)) == sorted(tuple(Tok().encode(d["text"])) for d in docs)
