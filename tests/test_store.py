"""app/store.py: ids, round trips, immutability, SQLite settings, concurrency and durability."""
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

from app.store import ID_RE, SQLiteStore, Store, StoreError, new_id, open_store, valid_id

ROOT = Path(__file__).resolve().parents[1]


def doc(i=0, kind="analysis", title=None):
    return {"schema_version": 2, "kind": kind, "title": title or f"t{i}", "profile": {"name": "tiny"},
            "inputs": {"prompt": f"p{i} <é> \u2603"}, "result": {"x": [i, 0.1 + i, None, "é"]}}


@pytest.fixture()
def store(tmp_path):
    s = SQLiteStore(tmp_path / "db" / "e.db")
    yield s
    s.close()


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


def test_recent_count_and_kind_filter(store):
    ids = []
    for n in range(7):
        ids.append(store.put(doc(n, kind="steering" if n % 2 else "analysis")))
        time.sleep(0.002)  # created_at is the wall clock: keep the order unambiguous
    assert store.count() == 7
    assert store.count(kind="steering") == 3
    recent = store.recent(limit=4)
    assert [r.id for r in recent] == ids[::-1][:4]
    assert [r.id for r in store.recent(limit=4, offset=4)] == ids[::-1][4:]
    st = store.recent(kind="steering")
    assert [r.id for r in st] == [ids[5], ids[3], ids[1]]
    assert st[0].title == "t5" and st[0].profile == "tiny" and st[0].schema_version == 2


def test_sqlite_settings(store):
    assert store.pragma("journal_mode") == "wal"
    assert store.pragma("synchronous") == 2  # FULL
    assert store.pragma("busy_timeout") == 30_000


def test_rows_cannot_be_updated_or_deleted(store):
    i = store.put(doc(1))
    for sql in ("UPDATE explorations SET title = 'x'", "DELETE FROM explorations"):
        with pytest.raises(sqlite3.DatabaseError, match="immutable"):
            store._write(sql, ())
    assert store.get(i) == doc(1)
    # from an independent connection too (the triggers live in the database file)
    conn = sqlite3.connect(store.path)
    with pytest.raises(sqlite3.DatabaseError, match="immutable"):
        conn.execute("DELETE FROM explorations")
    conn.close()


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


def test_reopen_sees_everything(tmp_path):
    s = SQLiteStore(tmp_path / "e.db")
    ids = [s.put(doc(n)) for n in range(20)]
    s.close()
    s2 = SQLiteStore(tmp_path / "e.db")
    assert [s2.get(i) for i in ids] == [doc(n) for n in range(20)]
    s2.close()


def test_eight_threads_2000_saves_no_lock_errors(tmp_path):
    """8 threads saving concurrently (2,000 saves): no 'database is locked', every acknowledged id readable."""
    path = tmp_path / "c.db"
    s = SQLiteStore(path)
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
    s2 = SQLiteStore(path)  # a fresh store: what was acknowledged is on disk
    assert s2.count() == 2000
    for i, n in acked:
        assert s2.get(i)["inputs"]["prompt"] == doc(n)["inputs"]["prompt"]
    s2.close()
    print(f"2000 concurrent saves in {elapsed:.2f}s")


WRITER = """
import sys
from app.store import SQLiteStore
s = SQLiteStore(sys.argv[1])
n = 0
while True:
    i = s.put({"schema_version": 2, "kind": "analysis", "title": "n%d" % n, "inputs": {}, "result": {"n": n}})
    sys.stdout.write("%s %d\\n" % (i, n)); sys.stdout.flush()
    n += 1
"""


def test_acknowledged_saves_survive_a_killed_writer(tmp_path):
    """A writer process is SIGKILLed mid-stream; every id it acknowledged is in the database afterwards."""
    path = tmp_path / "k.db"
    SQLiteStore(path).close()
    p = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    acked = []
    try:
        for line in p.stdout:
            acked.append(line.split())
            if len(acked) >= 150:
                break
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=30)
    s = SQLiteStore(path)
    for i, n in acked:
        got = s.get(i)
        assert got is not None and got["result"]["n"] == int(n)
    assert s.count() >= len(acked)
    s.close()
