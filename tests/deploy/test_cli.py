"""`python -m app serve --store ...`: a store that cannot be opened stops the start with one line (exit 2)."""
from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app", "serve", "--profile", "tiny", "--port", str(closed_port()), *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=180)


def test_unreachable_postgres_stops_the_start_with_one_line():
    port = closed_port()
    r = serve("--store", f"postgresql://asn:hunter2@127.0.0.1:{port}/asn")
    assert r.returncode == 2, r.stderr[-2000:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: PostgreSQL store"), r.stderr[-2000:]
    assert "unreachable" in lines[0] and str(port) in lines[0] and "hunter2" not in lines[0]
    assert "serving" not in r.stdout


def test_unsupported_store_url_from_the_environment_stops_the_start(monkeypatch):
    monkeypatch.setenv("ASN_STORE_URL", "mysql://x/y")
    r = serve()
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == ["error: unsupported store_url 'mysql://x/y' (sqlite:///... or postgresql://...)"]
