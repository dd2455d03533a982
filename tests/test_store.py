"""app/store.py: ids, round trips, immutability, paging, migrations, concurrency and durability.

The contract tests run against both backends: SQLite in tmp_path and a real PostgreSQL server started by the
`pg_server` fixture (tests/pg_server.py; one server per test process, a fresh database per test).
"""
from __future__ import annotations

import base64
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from app.store import (
    ID_RE,
    PostgresStore,
    SQLiteStore,
    Store,
    StoreError,
    StoreUnavailable,
    new_id,
    open_store,
    valid_id,
)

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"


def doc(i=0, kind="analysis", title=None):
    return {"schema_version": 2, "kind": kind, "title": title or f"t{i}", "profile": {"name": "tiny"},
            "inputs": {"prompt": f"p{i} <é> \u2603"}, "result": {"x": [i, 0.1 + i, None, "é"]}}


@pytest.fixture()
def store(store_url):
    s = open_store(store_url)
    yield s
    s.close()


@pytest.fixture()
def sqlite_store(tmp_path):
    s = SQLiteStore(tmp_path / "db" / "e.db")
    yield s
    s.close()


def independent_connection(store):
    """A connection that does not go through the store (to show the database itself refuses changes)."""
    if isinstance(store, SQLiteStore):
        return sqlite3.connect(store.path, isolation_level=None)
    import psycopg

    return psycopg.connect(store.url, autocommit=True)


def test_ids_are_random_urlsafe_and_at_least_128_bits():
    ids = [new_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    for i in ids[:50]:
        raw = base64.urlsafe_b64decode(i + "=" * (-len(i) % 4))
        assert len(raw) * 8 >= 128
        assert ID_RE.match(i) and valid_id(i)
    # not sequential: consecutive ids share no long common prefix (random ids share ~0.02 chars on average)
    common = [len(os.path.commonprefix([a, b])) for a, b in zip(ids, ids[1:])]
    assert sum(common) / len(common) < 0.5
    for bad in ("", "short", "../../etc/passwd", "a" * 65, "a" * 30 + "!", "a" * 30 + "/"):
        assert not valid_id(bad)


def test_round_trip_is_exact(store):
    d = doc(1)
    i = store.put(d)
    assert store.get(i) == d
    assert store.get(new_id()) is None
    assert store.get("not an id") is None
    assert isinstance(store, Store)


def test_recent_count_kind_filter_and_paging(store):
    ids = []
    for n in range(7):
        ids.append(store.put(doc(n, kind="steering" if n % 2 else "analysis")))
        time.sleep(0.002)  # created_at is the wall clock: keep the order unambiguous
    assert store.count() == 7
    assert store.count(kind="steering") == 3
    recent = store.recent(limit=4)
    assert [r.id for r in recent] == ids[::-1][:4]
    assert [r.id for r in store.recent(limit=4, offset=4)] == ids[::-1][4:]
    assert store.recent(limit=4, offset=7) == []
    pages = [r.id for off in range(0, 7, 2) for r in store.recent(limit=2, offset=off)]
    assert pages == ids[::-1]  # pages of 2 cover everything once, in order
    st = store.recent(kind="steering")
    assert [r.id for r in st] == [ids[5], ids[3], ids[1]]
    assert st[0].title == "t5" and st[0].profile == "tiny" and st[0].schema_version == 2
    assert store.recent(kind="nope") == [] and store.count(kind="nope") == 0


def test_sqlite_settings(sqlite_store):
    assert sqlite_store.pragma("journal_mode") == "wal"
    assert sqlite_store.pragma("synchronous") == 2  # FULL
    assert sqlite_store.pragma("busy_timeout") == 30_000


def test_rows_cannot_be_updated_or_deleted(store):
    i = store.put(doc(1))
    errors = (sqlite3.DatabaseError,) if isinstance(store, SQLiteStore) else (Exception,)
    for sql in ("UPDATE explorations SET title = 'x'", "DELETE FROM explorations"):
        with pytest.raises(errors, match="immutable"):
            store._write(sql, ())
    assert store.get(i) == doc(1)
    # from an independent connection too (the triggers live in the database)
    conn = independent_connection(store)
    statements = ["DELETE FROM explorations", "UPDATE explorations SET doc = '{}'"]
    if not isinstance(store, SQLiteStore):
        statements.append("TRUNCATE explorations")
    for sql in statements:
        with pytest.raises(errors, match="immutable"):
            conn.execute(sql)
    conn.close()
    assert store.get(i) == doc(1) and store.count() == 1


def test_old_documents_are_stored_as_written_and_migrated_on_read(store):
    from app.api.explorations import SCHEMA_VERSION, load_document

    raw = {}
    for v in (1, 2):
        d = json.loads((FIXTURES / f"exploration_v{v}_analysis.json").read_text())
        raw[v] = (store.put(d), d)
    for v, (i, d) in raw.items():
        got = store.get(i)
        assert got == d  # never rewritten
        assert json.dumps(got, sort_keys=True) == json.dumps(d, sort_keys=True)
        migrated = load_document(got)
        assert migrated.schema_version == SCHEMA_VERSION and migrated.kind == d["kind"]
    v1 = raw[1][1]
    assert load_document(store.get(raw[1][0])).inputs == v1["request"]  # v1 "request" became "inputs"
    assert {s.schema_version for s in store.recent()} == {1, 2}


def test_open_store_urls(tmp_path):
    s = open_store(f"sqlite:///{tmp_path}/a.db")  # sqlite:////abs/path
    assert isinstance(s, SQLiteStore) and s.path == f"{tmp_path}/a.db"
    s.close()
    m = open_store("sqlite://:memory:")
    i = m.put(doc(3))
    assert m.get(i) == doc(3)
    m.close()
    cwd = os.getcwd()
    try:
        os.chdir(tmp_path)
        r = open_store("sqlite:///rel/b.db")
        assert r.path == "rel/b.db" and (tmp_path / "rel" / "b.db").exists()
        r.close()
    finally:
        os.chdir(cwd)
    for bad in ("mysql://x", "sqlite:rel.db", "file.db"):
        with pytest.raises(StoreError):
            open_store(bad)


def test_reopen_sees_everything(store_url):
    s = open_store(store_url)
    ids = [s.put(doc(n)) for n in range(20)]
    s.close()
    s2 = open_store(store_url)
    assert [s2.get(i) for i in ids] == [doc(n) for n in range(20)]
    s2.close()


def test_eight_threads_2000_saves_no_lock_errors(store_url):
    """8 threads saving concurrently (2,000 saves): no 'database is locked', every acknowledged id readable."""
    s = open_store(store_url)
    acked: list[tuple[str, int]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def worker(w):
        start.wait()
        for k in range(250):
            n = w * 1000 + k
            try:
                i = s.put(doc(n, title=f"w{w}-{k}"))
            except BaseException as exc:  # noqa: BLE001 - any error fails the test below
                errors.append(exc)
                continue
            with lock:
                acked.append((i, n))
            if k % 50 == 0:  # readers interleaved with writers
                assert s.get(i)["title"] == f"w{w}-{k}"

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    assert not errors, errors[:3]
    assert len(acked) == 2000 and len({i for i, _ in acked}) == 2000
    s.close()
    s2 = open_store(store_url)  # a fresh store: what was acknowledged is on disk
    assert s2.count() == 2000
    for i, n in acked:
        assert s2.get(i)["inputs"]["prompt"] == doc(n)["inputs"]["prompt"]
    s2.close()
    print(f"2000 concurrent saves in {elapsed:.2f}s")


WRITER = """
import sys
from app.store import open_store
s = open_store(sys.argv[1])
limit, tag = int(sys.argv[2]), sys.argv[3]
n = 0
while limit < 0 or n < limit:
    i = s.put({"schema_version": 2, "kind": "analysis", "title": "%s%d" % (tag, n), "inputs": {}, "result": {"n": n}})
    sys.stdout.write("%s %d\\n" % (i, n)); sys.stdout.flush()
    n += 1
s.close()
"""


def writer(url: str, limit: int = -1, tag: str = "n") -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", WRITER, url, str(limit), tag], stdout=subprocess.PIPE, text=True,
                            cwd=ROOT)


def test_two_processes_saving_at_once_lose_nothing(store_url):
    """Two writer processes, 300 saves each at the same time (the schema created by both): all 600 there."""
    procs = [writer(store_url, 300, tag) for tag in ("a", "b")]
    outs = [p.communicate(timeout=240) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1] for o in outs]
    acked = [(tag, line.split()) for tag, (out, _) in zip("ab", outs) for line in out.splitlines()]
    assert len(acked) == 600 and len({i for _, (i, _) in acked}) == 600
    s = open_store(store_url)
    assert s.count() == 600
    for tag, (i, n) in acked:
        got = s.get(i)
        assert got["title"] == f"{tag}{n}" and got["result"]["n"] == int(n)
    s.close()


def test_acknowledged_saves_survive_a_killed_writer(store_url):
    """A writer process is SIGKILLed mid-stream; every id it acknowledged is in the database afterwards."""
    open_store(store_url).close()
    p = writer(store_url)
    acked = []
    try:
        for line in p.stdout:
            acked.append(line.split())
            if len(acked) >= 150:
                break
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=30)
    s = open_store(store_url)
    for i, n in acked:
        got = s.get(i)
        assert got is not None and got["result"]["n"] == int(n)
    assert s.count() >= len(acked)
    s.close()


def test_unreachable_postgres_is_one_line_store_unavailable(pg_server):
    """A server that is not there: StoreUnavailable, one line, no password in it; never a hang."""
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    t0 = time.perf_counter()
    with pytest.raises(StoreUnavailable) as info:
        PostgresStore(f"postgresql://u:secret@127.0.0.1:{port}/x", connect_timeout_s=2)
    msg = str(info.value)
    assert "\n" not in msg and "secret" not in msg and "unreachable" in msg and str(port) in msg
    assert time.perf_counter() - t0 < 10
    with pytest.raises(StoreUnavailable, match="does not exist"):
        open_store(pg_server.url("no_such_database"))


def test_postgres_lost_connection_is_store_unavailable_then_recovers(pg_url, pg_server):
    s = open_store(pg_url)
    i = s.put(doc(1))
    import psycopg

    with psycopg.connect(pg_server.admin_url, autocommit=True) as admin:  # cut every client connection
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                      (pg_url.rsplit("/", 1)[1],))
    with pytest.raises(StoreUnavailable):
        s.get(i)
    assert s.get(i) == doc(1)  # the next call reconnects
    s.close()


def test_owner_and_signature_are_kept_beside_the_document(store):
    mine = [store.put(doc(n), owner="alice", signature=f"sig{n}") for n in range(3)]
    time.sleep(0.002)
    theirs = store.put(doc(9, kind="steering"), owner="bob")
    anon = store.put(doc(10))
    assert [r.id for r in store.recent(owner="alice")] == mine[::-1]
    assert [r.id for r in store.recent(owner="bob")] == [theirs]
    assert store.recent(owner="carol") == [] and store.count(owner="carol") == 0
    assert store.count(owner="alice") == 3 and store.count(owner="alice", kind="steering") == 0
    assert store.count(owner="bob", kind="steering") == 1
    assert store.count() == 5 and {r.id for r in store.recent()} == {*mine, theirs, anon}  # operator: everything
    rec = store.get_record(mine[1])
    assert rec.doc == doc(1) and rec.owner == "alice" and rec.signature == "sig1"
    assert store.get(mine[1]) == doc(1)  # the document itself carries neither
    assert store.get_record(anon).owner is None and store.get_record(anon).signature is None
    assert store.get_record(new_id()) is None and store.get_record("bad id") is None


def test_shared_secret_is_created_once_and_shared(store_url):
    a, b = open_store(store_url), open_store(store_url)
    k = a.shared_secret("signing")
    assert len(k) == 64 and b.shared_secret("signing") == k and a.shared_secret("signing") == k
    assert a.shared_secret("other") != k
    a.close()
    b.close()


def test_an_old_database_gets_the_new_columns(tmp_path):
    """A data/explorations.db made before owner/signature existed opens, keeps its rows, and takes new ones."""
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE explorations (id TEXT PRIMARY KEY, created_at DOUBLE PRECISION NOT NULL, kind TEXT NOT NULL,"
                 " title TEXT NOT NULL, profile TEXT NOT NULL, schema_version INTEGER NOT NULL, doc TEXT NOT NULL)")
    old_id = new_id()
    conn.execute("INSERT INTO explorations VALUES (?, 1.0, 'analysis', 't', 'tiny', 2, ?)", (old_id, json.dumps(doc(1))))
    conn.commit()
    conn.close()
    s = SQLiteStore(path)
    assert s.get(old_id) == doc(1) and s.get_record(old_id).owner is None
    i = s.put(doc(2), owner="o")
    assert [r.id for r in s.recent(owner="o")] == [i] and s.count() == 2
    s.close()


def test_put_under_a_given_id_twice_stores_one_document(store):
    """A keyed save (issue 25 item 4) arriving twice, also at the same moment: one row, the same id answered."""
    eid = "K" * 24
    first = doc(1, title="keyed")
    assert store.put(first, owner="o", exploration_id=eid) == eid
    assert store.put(doc(2, title="keyed again"), owner="o", exploration_id=eid) == eid
    assert store.get(eid) == first and store.count(owner="o") == 1
    ids, other = [], "Q" * 24
    threads = [threading.Thread(target=lambda: ids.append(store.put(doc(3), owner="o", exploration_id=other)))
               for _ in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert ids == [other] * 4 and store.count(owner="o") == 2
    with pytest.raises(StoreError):
        store.put(doc(4), exploration_id="../x")
