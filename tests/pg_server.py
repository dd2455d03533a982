"""A throwaway PostgreSQL server for tests: Debian's binaries, initdb + pg_ctl in a temporary directory.

Runs as an unprivileged user (`nobody` when the tests run as root: initdb refuses root), listens on a free port on
127.0.0.1 and on a unix socket in the directory, trust authentication for the `postgres` role, fsync off (a test
server: nothing on it must outlive the run). `make postgres` installs the binaries (`postgresql` package).
"""
from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path


class PostgresMissing(RuntimeError):
    pass


def find_bindir() -> Path | None:
    """The newest Debian PostgreSQL bin directory holding initdb and pg_ctl (or those on PATH)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class PgServer:
    port: int
    socket_dir: Path
    start_seconds: float  # initdb + start, for the record

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def url(self, db: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{db}"

    def create_database(self) -> str:
        """A fresh empty database; returns its URL."""
        import psycopg

        name = "t_" + uuid.uuid4().hex[:16]
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, url: str) -> None:
        import psycopg

        name = url.rsplit("/", 1)[1]
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def running_postgres():
    """Start a server in a fresh temporary directory; stop it and remove the directory afterwards."""
    bindir = find_bindir()
    if bindir is None:
        raise PostgresMissing("PostgreSQL binaries not found (install Debian's `postgresql`: make postgres)")
    t0 = time.perf_counter()
    base = Path(tempfile.mkdtemp(prefix="asn-pg-"))  # under /tmp: an unprivileged user can reach it
    data, sock, log = base / "data", base / "sock", base / "server.log"
    sock.mkdir()
    preexec = None
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        for p in (base, sock):
            os.chown(p, nobody.pw_uid, nobody.pw_gid)

        def preexec():  # noqa: F811 - drop root in the child before exec
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
    env = {**os.environ, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8", "PGTZ": "UTC"}
    env.pop("PGDATA", None)

    def run(*args):
        return subprocess.run([str(bindir / args[0]), *args[1:]], preexec_fn=preexec, env=env, cwd=base,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120)

    started = False
    try:
        r = run("initdb", "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8",
                "--no-sync", "--no-instructions")
        if r.returncode:
            raise RuntimeError(f"initdb failed: {r.stdout[-2000:]}")
        port = _free_port()
        opts = (f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off "
                "-c synchronous_commit=off -c max_connections=300 -c shared_buffers=32MB")
        r = run("pg_ctl", "-D", str(data), "-l", str(log), "-o", opts, "-w", "-t", "60", "start")
        if r.returncode:
            raise RuntimeError(f"pg_ctl start failed: {r.stdout[-1000:]} {log.read_text()[-2000:] if log.exists() else ''}")
        started = True
        yield PgServer(port=port, socket_dir=sock, start_seconds=time.perf_counter() - t0)
    finally:
        if started:
            run("pg_ctl", "-D", str(data), "-m", "immediate", "-w", "-t", "30", "stop")
        shutil.rmtree(base, ignore_errors=True)
