"""The PostgreSQL store (psycopg 3): the same table and SQL, for several replicas sharing one store."""
from __future__ import annotations

import re
import threading

from app.store.base import (
    OWNER_INDEX,
    StoreError,
    _SQLStore,
)


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


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _redact(url: str) -> str:
    """The URL without its password (for messages)."""
    return re.sub(r"(://[^:/@]*):[^@]*@", r"\1:***@", url)
