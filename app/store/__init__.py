"""Storage of saved explorations: immutable JSON documents keyed by a random id.

`Store` is the protocol routes use (through `StoreDep` in app/api/deps.py). `SQLiteStore` is the default
(WAL, synchronous=FULL, busy_timeout, every write in BEGIN IMMEDIATE); `PostgresStore` runs the same SQL on a
server database so several replicas can share one store. `open_store(url)` picks one from the URL:
`sqlite:///relative/or/absolute.db`, `sqlite:////abs/path.db`, `sqlite://:memory:`, `postgresql://...`.

There is no update and no delete: a saved exploration never changes (triggers refuse UPDATE/DELETE on both
backends). A PostgreSQL server that cannot be reached raises `StoreUnavailable` (one line; a 503 in a route).
"""
from __future__ import annotations

from app.store.base import ID_BYTES, ID_RE, Record, Store, StoreError, Summary, new_id, valid_id
from app.store.postgres import PostgresStore, StoreUnavailable
from app.store.sqlite import SQLiteStore

__all__ = ["ID_BYTES", "ID_RE", "Record", "Store", "StoreError", "Summary", "new_id", "valid_id", "PostgresStore",
           "StoreUnavailable", "SQLiteStore", "open_store"]


def open_store(url: str) -> Store:
    """A store from a URL: sqlite:///path (relative), sqlite:////abs/path, sqlite://:memory:, postgresql://..."""
    if url.startswith("sqlite://"):
        rest = url[len("sqlite://"):]
        if rest in (":memory:", "/:memory:"):
            return SQLiteStore(":memory:")
        if not rest.startswith("/"):
            raise StoreError(f"bad sqlite URL {url!r}: use sqlite:///path/to/file.db")
        return SQLiteStore(rest[1:])  # "/rel.db" -> "rel.db"; "//abs/x.db" -> "/abs/x.db"
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresStore(url)
    raise StoreError(f"unsupported store_url {url!r} (sqlite:///... or postgresql://...)")
