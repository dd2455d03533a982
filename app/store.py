"""Storage of saved explorations: immutable JSON documents keyed by a random id.

`Store` is the protocol routes use (through `StoreDep` in app/api/deps.py). `SQLiteStore` is the default
(WAL, synchronous=FULL, busy_timeout, every write in BEGIN IMMEDIATE); `PostgresStore` runs the same SQL on a
server database so several replicas can share one store. `open_store(url)` picks one from the URL:
`sqlite:///relative/or/absolute.db`, `sqlite:////abs/path.db`, `sqlite://:memory:`, `postgresql://...`.

There is no update and no delete: a saved exploration never changes (triggers refuse UPDATE/DELETE on both
backends). A PostgreSQL server that cannot be reached raises `StoreUnavailable` (one line; a 503 in a route).
"""
from __future__ import annotations

import json
import re
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

ID_BYTES = 18  # 144 random bits -> 24 url-safe characters
ID_RE = re.compile(r"^[A-Za-z0-9_-]{22,64}$")


def new_id() -> str:
    """A fresh exploration id: secrets.token_urlsafe, never sequential."""
    return secrets.token_urlsafe(ID_BYTES)


def valid_id(exploration_id: str) -> bool:
    return bool(ID_RE.match(exploration_id or ""))


@dataclass(frozen=True)
class Summary:
    """One row of the list page (without the document body)."""

    id: str
    kind: str
    title: str
    created_at: float
    profile: str
    schema_version: int


@dataclass(frozen=True)
class Record:
    """A stored document and what is kept beside it."""

    doc: dict
    owner: str | None
    signature: str | None


class StoreError(RuntimeError):
    pass


@runtime_checkable
class Store(Protocol):
    def put(self, doc: dict, owner: str | None = None, signature: str | None = None) -> str:
        """Store a new document under a fresh id and return the id once it is durable.

        owner: who may list it (a hash of the saving browser's owner token); signature: the server's signature of
        the result (app/provenance.py). Both are kept beside the document, never inside it."""

    def get(self, exploration_id: str) -> dict | None:
        """The stored document exactly as written, or None."""

    def get_record(self, exploration_id: str) -> Record | None:
        """The document with its owner and signature, or None."""

    def recent(self, limit: int = 50, offset: int = 0, kind: str | None = None, owner: str | None = None) -> list[Summary]:
        """Newest first; owner=None: everyone's (operator listing), else only that owner's."""

    def count(self, kind: str | None = None, owner: str | None = None) -> int: ...

    def shared_secret(self, name: str) -> str:
        """A random secret created once per store, the same for every replica on it."""

    def close(self) -> None: ...


def _summary_fields(doc: dict) -> tuple[str, str, str, int]:
    prof = doc.get("profile") or {}
    prof_name = prof.get("name", "") if isinstance(prof, dict) else str(prof)
    version = doc.get("schema_version", doc.get("version", 0))  # v1 documents said "version"
    return str(doc.get("kind", "")), str(doc.get("title", "")), prof_name, int(version) if isinstance(version, int) else 0


OWNER_INDEX = "CREATE INDEX IF NOT EXISTS explorations_owner ON explorations (owner, created_at DESC)"
JOB_COLUMNS = ("id", "key", "kind", "state", "done", "total", "created", "started", "finished", "heartbeat", "replica",
               "cancel_requested", "cached", "error", "meta", "result")


class _SQLStore:
    """Shared SQL (portable between SQLite and PostgreSQL apart from placeholders and connection setup)."""

    ph = "?"
    DDL = (
        "CREATE TABLE IF NOT EXISTS explorations ("
        " id TEXT PRIMARY KEY,"
        " created_at DOUBLE PRECISION NOT NULL,"
        " kind TEXT NOT NULL,"
        " title TEXT NOT NULL,"
        " profile TEXT NOT NULL,"
        " schema_version INTEGER NOT NULL,"
        " doc TEXT NOT NULL)",
        "CREATE INDEX IF NOT EXISTS explorations_created ON explorations (created_at DESC)",
    )
    # Jobs beside explorations (same SQL on both backends): the state, progress and result of background jobs, so
    # any replica can poll, cancel and read a job another one runs. Rows change (unlike explorations); see app/jobs.py.
    EXTRA_DDL: tuple[str, ...] = (
        "CREATE TABLE IF NOT EXISTS jobs ("
        " id TEXT PRIMARY KEY, key TEXT NOT NULL, kind TEXT NOT NULL, state TEXT NOT NULL,"
        " done INTEGER NOT NULL, total INTEGER NOT NULL, created DOUBLE PRECISION NOT NULL,"
        " started DOUBLE PRECISION, finished DOUBLE PRECISION, heartbeat DOUBLE PRECISION NOT NULL,"
        " replica TEXT NOT NULL, cancel_requested INTEGER NOT NULL DEFAULT 0, cached INTEGER NOT NULL DEFAULT 0,"
        " error TEXT, meta TEXT NOT NULL, result TEXT)",
        "CREATE INDEX IF NOT EXISTS jobs_key ON jobs (key, created)",
        "CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, heartbeat)",
        "CREATE TABLE IF NOT EXISTS secrets (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    )
    # Columns added after the first release (unlisted links, server-signed results): added to older databases on open.
    LATER_COLUMNS = (("owner", "TEXT"), ("signature", "TEXT"))

    # --- to implement per backend
    def _conn(self):  # pragma: no cover - abstract
        raise NotImplementedError

    def _write(self, sql: str, params: tuple) -> int:  # pragma: no cover - abstract
        """One statement in its own write transaction; returns the row count."""
        raise NotImplementedError

    def _read(self, sql: str, params: tuple) -> list[tuple]:  # pragma: no cover - abstract
        raise NotImplementedError

    # --- shared
    def _q(self, sql: str) -> str:
        return sql.replace("?", self.ph)

    def put(self, doc: dict, owner: str | None = None, signature: str | None = None) -> str:
        kind, title, prof, version = _summary_fields(doc)
        body = json.dumps(doc, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        for _ in range(5):  # a collision of 144 random bits will not happen; the loop is for form's sake
            exploration_id = new_id()
            try:
                self._write(self._q("INSERT INTO explorations (id, created_at, kind, title, profile, schema_version, doc,"
                                    " owner, signature) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"),
                            (exploration_id, time.time(), kind, title, prof, version, body, owner, signature))
                return exploration_id
            except self._integrity_errors():
                continue
        raise StoreError("could not allocate a unique id")

    def get(self, exploration_id: str) -> dict | None:
        if not valid_id(exploration_id):
            return None
        rows = self._read(self._q("SELECT doc FROM explorations WHERE id = ?"), (exploration_id,))
        return json.loads(rows[0][0]) if rows else None

    def get_record(self, exploration_id: str) -> Record | None:
        if not valid_id(exploration_id):
            return None
        rows = self._read(self._q("SELECT doc, owner, signature FROM explorations WHERE id = ?"), (exploration_id,))
        return Record(json.loads(rows[0][0]), rows[0][1], rows[0][2]) if rows else None

    @staticmethod
    def _where(kind: str | None, owner: str | None) -> tuple[str, tuple]:
        conds, params = [], []
        if kind:
            conds.append("kind = ?")
            params.append(kind)
        if owner is not None:
            conds.append("owner = ?")
            params.append(owner)
        return ("WHERE " + " AND ".join(conds) + " ") if conds else "", tuple(params)

    def recent(self, limit: int = 50, offset: int = 0, kind: str | None = None, owner: str | None = None) -> list[Summary]:
        where, params = self._where(kind, owner)
        rows = self._read(self._q(f"SELECT id, kind, title, created_at, profile, schema_version FROM explorations "
                                  f"{where}ORDER BY created_at DESC, id LIMIT ? OFFSET ?"), (*params, int(limit), int(offset)))
        return [Summary(*row) for row in rows]

    def count(self, kind: str | None = None, owner: str | None = None) -> int:
        where, params = self._where(kind, owner)
        return int(self._read(self._q(f"SELECT COUNT(*) FROM explorations {where}"), params)[0][0])

    def _integrity_errors(self) -> tuple:
        return (sqlite3.IntegrityError,)

    def shared_secret(self, name: str) -> str:
        self._write(self._q("INSERT INTO secrets (name, value) VALUES (?, ?) ON CONFLICT (name) DO NOTHING"),
                    (name, secrets.token_hex(32)))
        return self._read(self._q("SELECT value FROM secrets WHERE name = ?"), (name,))[0][0]

    # --- jobs (app/jobs.py) ---------------------------------------------------------------------------------
    def job_insert(self, row: dict) -> None:
        cols = [c for c in JOB_COLUMNS if c in row]
        self._write(self._q(f"INSERT INTO jobs ({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)})"),
                    tuple(row[c] for c in cols))

    def job_update(self, job_id: str, fields: dict, only_active: bool = True) -> bool:
        """Set fields on a job; with only_active a settled job (done/error/cancelled) is left alone. True if changed."""
        cols = [c for c in fields if c in JOB_COLUMNS and c != "id"]
        guard = " AND state IN ('queued', 'running')" if only_active else ""
        n = self._write(self._q(f"UPDATE jobs SET {', '.join(c + ' = ?' for c in cols)} WHERE id = ?{guard}"),
                        (*(fields[c] for c in cols), job_id))
        return n > 0

    def job_get(self, job_id: str) -> dict | None:
        rows = self._read(self._q(f"SELECT {', '.join(JOB_COLUMNS)} FROM jobs WHERE id = ?"), (job_id,))
        return dict(zip(JOB_COLUMNS, rows[0])) if rows else None

    def job_latest(self, key: str) -> dict | None:
        """The newest job for key that is active or done (not failed or cancelled), or None."""
        rows = self._read(self._q(f"SELECT {', '.join(JOB_COLUMNS)} FROM jobs WHERE key = ? AND state IN "
                                  "('queued', 'running', 'done') ORDER BY created DESC LIMIT 1"), (key,))
        return dict(zip(JOB_COLUMNS, rows[0])) if rows else None

    def job_request_cancel(self, job_id: str, now: float) -> None:
        """Flag an active job for cancellation (its replica stops it at the next checkpoint); a queued one settles now."""
        self._write(self._q("UPDATE jobs SET cancel_requested = 1 WHERE id = ? AND state IN ('queued', 'running')"),
                    (job_id,))
        self._write(self._q("UPDATE jobs SET state = 'cancelled', finished = ? WHERE id = ? AND state = 'queued'"),
                    (now, job_id))

    def job_expire(self, stale_before: float, now: float, error: str) -> int:
        """Active jobs whose replica has not beaten since stale_before -> state error; how many."""
        return self._write(self._q("UPDATE jobs SET state = 'error', error = ?, finished = ? "
                                   "WHERE state IN ('queued', 'running') AND heartbeat < ?"), (error, now, stale_before))


class SQLiteStore(_SQLStore):
    """SQLite in WAL mode: one connection per thread, every write in BEGIN IMMEDIATE, synchronous=FULL."""

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
        with self._all_lock:
            conns, self._all = self._all, []
        for c in conns:
            try:
                c.close()
            except sqlite3.ProgrammingError:  # made in another thread that is gone; closed with it
                pass
        if self._shared is not None:
            self._shared.close()
            self._shared = None
        self._local = threading.local()


class StoreUnavailable(StoreError):
    """The store's server cannot be reached (connection refused, lost, timed out): a 503, nothing was saved."""


# PostgreSQL: the same table, plus a trigger that refuses UPDATE/DELETE/TRUNCATE (as SQLite's triggers do).
PG_IMMUTABLE = (
    "CREATE OR REPLACE FUNCTION explorations_immutable() RETURNS trigger LANGUAGE plpgsql AS"
    " $$ BEGIN RAISE EXCEPTION 'explorations are immutable'; END $$",
    "CREATE OR REPLACE TRIGGER explorations_no_change BEFORE UPDATE OR DELETE ON explorations"
    " FOR EACH ROW EXECUTE FUNCTION explorations_immutable()",
    "CREATE OR REPLACE TRIGGER explorations_no_truncate BEFORE TRUNCATE ON explorations"
    " FOR EACH STATEMENT EXECUTE FUNCTION explorations_immutable()",
)
PG_SCHEMA_LOCK = 0x41534E  # advisory lock id: replicas starting together create the schema one at a time


class PostgresStore(_SQLStore):
    """The same table on PostgreSQL (psycopg 3), for several replicas sharing one store.

    URL `postgresql://user:pass@host:port/db` (libpq; `?host=/socket/dir` works too). One connection per thread
    (autocommit reads; each write its own transaction); the primary key makes concurrent inserts safe. A server
    that cannot be reached raises `StoreUnavailable` with one line (at start: the app does not start).
    """

    ph = "%s"

    def __init__(self, url: str, connect_timeout_s: int = 5):
        try:
            import psycopg
        except ImportError as exc:
            raise StoreError("store_url is postgresql:// but psycopg is not installed: pip install 'psycopg[binary]'") from exc
        self._psycopg = psycopg
        self.url = url
        self.connect_timeout_s = connect_timeout_s
        self._local = threading.local()
        self._all: list = []
        self._all_lock = threading.Lock()
        conn = self._conn()
        self._guard(self._write_script, conn, self.DDL + PG_IMMUTABLE + self.EXTRA_DDL + tuple(
            f"ALTER TABLE explorations ADD COLUMN IF NOT EXISTS {c} {t}" for c, t in self.LATER_COLUMNS) + (OWNER_INDEX,))

    def _connect(self):
        try:
            return self._psycopg.connect(self.url, autocommit=True, connect_timeout=self.connect_timeout_s)
        except self._psycopg.OperationalError as exc:
            raise StoreUnavailable(f"PostgreSQL store {_redact(self.url)} unreachable: "
                                   f"{_first_line(exc)}") from None

    def _conn(self):
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed or conn.broken:
            conn = self._connect()
            self._local.conn = conn
            with self._all_lock:
                self._all.append(conn)
        return conn

    def _guard(self, fn, *args):
        """Run fn; a lost connection -> StoreUnavailable (the thread reconnects on its next call)."""
        try:
            return fn(*args)
        except (self._psycopg.OperationalError, self._psycopg.InterfaceError) as exc:
            if isinstance(exc, self._psycopg.errors.RaiseException):  # our trigger: not a connection problem
                raise
            self._local.conn = None
            raise StoreUnavailable(f"PostgreSQL store unavailable: {_first_line(exc)}") from exc

    def _write_script(self, conn, statements) -> None:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (PG_SCHEMA_LOCK,))
            for st in statements:
                conn.execute(st)

    def _write(self, sql: str, params: tuple) -> int:
        def run():
            conn = self._conn()
            with conn.transaction():
                return conn.execute(sql, params).rowcount
        return self._guard(run)

    def _read(self, sql: str, params: tuple) -> list[tuple]:
        return self._guard(lambda: self._conn().execute(sql, params).fetchall())

    def _integrity_errors(self) -> tuple:
        return (self._psycopg.errors.UniqueViolation,)

    def close(self) -> None:
        with self._all_lock:
            conns, self._all = self._all, []
        for c in conns:
            try:
                c.close()
            except Exception:  # noqa: BLE001 - closing is best effort
                pass
        self._local = threading.local()


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _redact(url: str) -> str:
    """The URL without its password (for messages)."""
    return re.sub(r"(://[^:/@]*):[^@]*@", r"\1:***@", url)


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
