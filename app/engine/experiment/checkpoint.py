"""Resumable runs: each finished chunk of generations (and of scores) written to a folder, read back on a re-run.

The folder holds one JSON file per chunk under a key made of everything that decides its content (config hash,
chunk index); a killed run started again with the same config skips what is there."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path


def config_key(obj) -> str:
    """A short hash of anything JSON-able (tuples as lists)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


class ChunkCache:
    """get(name) / put(name, value): JSON files under folder/<key>/ (written to .tmp, then renamed: never half a file)."""

    def __init__(self, folder: str | Path, key: str):
        self.dir = Path(folder) / key
        self.dir.mkdir(parents=True, exist_ok=True)

    def get(self, name: str):
        p = self.dir / f"{name}.json"
        if not p.exists():
            return None
        return json.loads(p.read_text(encoding="utf-8"))

    def put(self, name: str, value) -> None:
        p = self.dir / f"{name}.json"
        tmp = p.with_suffix(".tmp")
        tmp.write_text(json.dumps(value), encoding="utf-8")
        os.replace(tmp, p)
