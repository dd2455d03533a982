"""English prose from this machine, each document with its own licence: the long descriptions of the installed Python
packages (PyPI metadata in site-packages *.dist-info/METADATA, licence from License-Expression / License / the licence
classifier) and of the installed Debian packages (/var/lib/dpkg/status, licence from the package's DEP-5
/usr/share/doc/<package>/copyright). Nothing is downloaded: `snapshot_*` writes the documents once into the corpus
cache (docs.jsonl: text, licence, package, version) so a later build reads the same text; documents whose licence
cannot be read are left out.
"""
from __future__ import annotations

import json
import re
import sys
from email.parser import HeaderParser
from pathlib import Path
from typing import Iterator

MIN_CHARS = 80
_BADGE = re.compile(r"^\s*(\[!\[|!\[|<img|<a |<p |</?div|<picture|<source|\.\. image::|\.\. \|)", re.I)
_TAG = re.compile(r"<[^>]+>")
_HEADING = re.compile(r"\n(?=#{1,6} |[^\n]+\n[=\-~^*]{4,}\n)")
_LICENCE_LINE = re.compile(r"^License:\s*(\S.*)$", re.M)


def site_dirs() -> list[Path]:
    """This interpreter's site-packages folders."""
    return [Path(p) for p in sys.path if p.endswith(("site-packages", "dist-packages")) and Path(p).is_dir()]


def pypi_licence(meta) -> str | None:
    """License-Expression, else a one-line License field, else the last part of a 'License ::' classifier."""
    expr = (meta.get("License-Expression") or "").strip()
    if expr:
        return expr
    lic = (meta.get("License") or "").strip()
    if lic and "\n" not in lic and len(lic) <= 60 and lic.upper() not in ("UNKNOWN", "NONE"):
        return lic
    for c in meta.get_all("Classifier") or []:
        if c.startswith("License ::") and not c.endswith(":: OSI Approved"):
            return c.split("::")[-1].strip()
    return None


def clean_markdown(text: str) -> str:
    """A long description without badges, images and HTML tags."""
    lines = [ln for ln in text.splitlines() if not _BADGE.match(ln)]
    return "\n".join(_TAG.sub(" ", ln).rstrip() for ln in lines).strip()


def sections(name: str, text: str) -> Iterator[str]:
    """A description cut at its headings, each section prefixed by the package name (>= MIN_CHARS)."""
    for sec in _HEADING.split(text):
        sec = re.sub(r"\n{3,}", "\n\n", sec).strip()
        if len(sec) >= MIN_CHARS:
            yield f"{name}: {sec}"


def pypi_documents(dirs: list[Path]) -> Iterator[dict]:
    """One dict per section of every distribution's long description (first copy of a name wins)."""
    seen: set[str] = set()
    for d in dirs:
        for meta_path in sorted(d.glob("*.dist-info/METADATA")):
            raw = meta_path.read_text(encoding="utf-8", errors="replace")
            meta = HeaderParser().parsestr(raw)
            name = (meta.get("Name") or "").strip()
            if not name or name.lower() in seen:
                continue
            seen.add(name.lower())
            licence = pypi_licence(meta)
            body = meta.get_payload() if isinstance(meta.get_payload(), str) else ""
            desc = (meta.get("Description") or "") + "\n" + body
            if licence is None or not desc.strip():
                continue
            for sec in sections(name, clean_markdown(desc)):
                yield {"text": sec, "licence": licence, "package": name, "version": meta.get("Version", "")}


def debian_licence(doc_root: Path, package: str) -> str | None:
    """The first 'License:' of /usr/share/doc/<package>/copyright (DEP-5), else None."""
    f = doc_root / package / "copyright"
    try:
        m = _LICENCE_LINE.search(f.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return None
    return m.group(1).strip() if m else None


def debian_documents(status: Path, doc_root: Path) -> Iterator[dict]:
    """'package: synopsis. long description' for every installed package of the dpkg status file."""
    for block in status.read_text(encoding="utf-8", errors="replace").split("\n\n"):
        fields: dict[str, str] = {}
        key = None
        for line in block.splitlines():
            if line.startswith((" ", "\t")) and key:
                fields[key] += "\n" + line
            elif ":" in line:
                key, _, val = line.partition(":")
                fields[key] = val.strip()
        name, desc = fields.get("Package"), fields.get("Description")
        if not name or not desc or "installed" not in fields.get("Status", "installed"):
            continue
        head, _, rest = desc.partition("\n")
        body = "\n".join("" if ln.strip() == "." else ln.strip() for ln in rest.splitlines()).strip()
        text = f"{name}: {head.strip()}.\n{body}".strip()
        licence = debian_licence(doc_root, name)
        if licence and len(text) >= MIN_CHARS:
            yield {"text": text, "licence": licence, "package": name, "version": fields.get("Version", "")}


def snapshot(root: Path, docs: Iterator[dict]) -> Path:
    """Write docs.jsonl under root once (atomic); later calls keep the first snapshot."""
    out = root / "docs.jsonl"
    if not out.exists():
        root.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        with tmp.open("w", encoding="utf-8") as fh:
            for d in docs:
                fh.write(json.dumps(d, ensure_ascii=False) + "\n")
        tmp.replace(out)
    return out


def snapshot_local(kind: str, root: Path) -> Path:
    """The snapshot of one local source: "site-packages" or "dpkg"."""
    if kind == "site-packages":
        return snapshot(root, pypi_documents(site_dirs()))
    if kind == "dpkg":
        return snapshot(root, debian_documents(Path("/var/lib/dpkg/status"), Path("/usr/share/doc")))
    raise ValueError(f"unknown local source {kind!r}")


def read_snapshot(root: Path) -> Iterator[tuple[str, str]]:
    """(text, licence) of every document in root/docs.jsonl."""
    with (root / "docs.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            d = json.loads(line)
            yield d["text"], d["licence"]
