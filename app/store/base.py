"""Saved explorations' ids, records and the `Store` protocol; the SQL both backends share."""
from __future__ import annotations

import json
import re
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
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
    def put(self, doc: dict, owner: str | None = None, signature: str | None = None,
            exploration_id: str | None = None) -> str:
        """Store a new document under a fresh id and return the id once it is durable.

        owner: who may list it (a hash of the saving browser's owner token); signature: the server's signature of
        the result (app/explorations/provenance.py). Both are kept beside the document, never inside it. exploration_id: the id
        of a save made with an idempotency key (derived from key, owner and content); when a document already has
        it, the same save arrived twice: nothing is written and the id is returned."""

    def get(self, exploration_id: str) -> dict | None:
        """The stored document exactly as written, or None."""

    def get_record(self, exploration_id: str) -> Record | None:
        """The document with its owner and signature, or None."""

    def recent(self, limit: int = 50, offset: int = 0, kind: str | None = None, owner: str | None = None) -> list[Summary]:
        """Newest first; owner=None: everyone's (operator listing), else only that owner's."""

    def count(self, kind: str | None = None, owner: str | None = None) -> int: ...

    def shared_secret(self, name: str) -> str:
        """A random secret created once per store, the same for every replica on it."""

    def put_prompt_set(self, sha: str, prompts: list[str]) -> str:
        """Keep a pasted prompt set under its content hash (idempotent); returns sha."""

    def get_prompt_set(self, sha: str) -> list[str] | None:
        """A pasted prompt set by its content hash, or None."""

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
    # any replica can poll, cancel and read a job another one runs. Rows change (unlike explorations); see app/jobs/.
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
        # pasted prompt sets by content hash, so a `sha:` address opens on every replica and after a restart
        "CREATE TABLE IF NOT EXISTS prompt_sets (sha TEXT PRIMARY KEY, created DOUBLE PRECISION NOT NULL,"
        " prompts TEXT NOT NULL)",
    )
    # Columns added after the first release (unlisted links, server-signed results): added to older databases on open.
    LATER_COLUMNS = (("owner", "TEXT"), ("signature", "TEXT"))

    # what closing a connection may raise and is ignored: closing is best effort
    CLOSE_ERRORS: tuple[type[BaseException], ...] = (Exception,)

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

    def put(self, doc: dict, owner: str | None = None, signature: str | None = None,
            exploration_id: str | None = None) -> str:
        kind, title, prof, version = _summary_fields(doc)
        body = json.dumps(doc, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        if exploration_id is not None and not valid_id(exploration_id):
            raise StoreError("not an exploration id")
        for _ in range(5):  # a collision of 144 random bits will not happen; the loop is for form's sake
            eid = exploration_id or new_id()
            try:
                self._write(self._q("INSERT INTO explorations (id, created_at, kind, title, profile, schema_version, doc,"
                                    " owner, signature) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"),
                            (eid, time.time(), kind, title, prof, version, body, owner, signature))
                return eid
            except self._integrity_errors():
                if exploration_id is not None:  # the same keyed save, twice at once (a double-click): one row
                    return exploration_id
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

    # --- pasted prompt sets (content-addressed: the same prompts always get the same sha) ----------------------
    def put_prompt_set(self, sha: str, prompts: list[str]) -> str:
        """Keep a pasted set under its content hash (a second put of the same set writes nothing); returns sha."""
        self._write(self._q("INSERT INTO prompt_sets (sha, created, prompts) VALUES (?, ?, ?) ON CONFLICT (sha) DO NOTHING"),
                    (sha, time.time(), json.dumps(list(prompts), ensure_ascii=False)))
        return sha

    def get_prompt_set(self, sha: str) -> list[str] | None:
        """The prompts stored under sha, or None."""
        rows = self._read(self._q("SELECT prompts FROM prompt_sets WHERE sha = ?"), (sha,))
        return list(json.loads(rows[0][0])) if rows else None

    # --- jobs (app/jobs/) ------------------------------------------------------------------------------------
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

    def close(self) -> None:
        with self._all_lock:
            conns, self._all = self._all, []
        for c in conns:
            try:
                c.close()
            except self.CLOSE_ERRORS:
                pass
        self._local = threading.local()
