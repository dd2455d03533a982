"""The SQLite store: WAL, one connection per thread, every write in BEGIN IMMEDIATE."""
from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from app.store.base import (
    OWNER_INDEX,
    StoreError,
    _SQLStore,
)


class SQLiteStore(_SQLStore):
    """SQLite in WAL mode: one connection per thread, every write in BEGIN IMMEDIATE, synchronous=FULL."""

    CLOSE_ERRORS = (sqlite3.ProgrammingError,)  # a connection made in another thread that is gone: closed with it

    def __init__(self, path: str | Path, busy_timeout_ms: int = 30_000):
        self.path = str(path)
        self.busy_timeout_ms = busy_timeout_ms
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()
        self._memory_lock = threading.Lock() if self.path == ":memory:" else None
        self._shared = None
        conn = self._conn()
        self._write_script(conn, self.DDL + (
            "CREATE TRIGGER IF NOT EXISTS explorations_no_update BEFORE UPDATE ON explorations"
            " BEGIN SELECT RAISE(ABORT, 'explorations are immutable'); END",
            "CREATE TRIGGER IF NOT EXISTS explorations_no_delete BEFORE DELETE ON explorations"
            " BEGIN SELECT RAISE(ABORT, 'explorations are immutable'); END",
        ) + self.EXTRA_DDL)
        conn.execute("BEGIN IMMEDIATE")  # look and add in one write transaction: two processes opening at once
        try:
            have = {row[1] for row in conn.execute("PRAGMA table_info(explorations)")}
            for c, t in self.LATER_COLUMNS:
                if c not in have:
                    conn.execute(f"ALTER TABLE explorations ADD COLUMN {c} {t}")
            conn.execute(OWNER_INDEX)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout_ms / 1000, isolation_level=None,
                               check_same_thread=self.path != ":memory:")
        conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
        if self.path != ":memory:":
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(f"could not switch {self.path} to WAL (journal_mode={mode})")
        conn.execute("PRAGMA synchronous = FULL")
        return conn

    def _conn(self) -> sqlite3.Connection:
        if self.path == ":memory:":  # one shared connection (a second one would see another database)
            if self._shared is None:
                self._shared = self._connect()
            return self._shared
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
            with self._all_lock:
                self._all.append(conn)
        return conn

    def _write_script(self, conn, statements) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            for s in statements:
                conn.execute(s)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _write(self, sql: str, params: tuple) -> int:
        conn = self._conn()
        if self._memory_lock is not None:
            with self._memory_lock:
                return self._write_once(conn, sql, params)
        return self._write_once(conn, sql, params)

    def _write_once(self, conn, sql, params) -> int:
        conn.execute("BEGIN IMMEDIATE")
        try:
            n = conn.execute(sql, params).rowcount
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return n

    def _read(self, sql: str, params: tuple) -> list[tuple]:
        if self._memory_lock is not None:
            with self._memory_lock:
                return self._conn().execute(sql, params).fetchall()
        return self._conn().execute(sql, params).fetchall()

    def pragma(self, name: str):
        return self._conn().execute(f"PRAGMA {name}").fetchone()[0]

    def close(self) -> None:
        super().close()
        if self._shared is not None:
            self._shared.close()
            self._shared = None
