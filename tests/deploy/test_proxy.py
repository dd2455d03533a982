"""docker/compose.shared.yaml's topology without Docker: two replicas (tiny profile, access token) on one
PostgreSQL store behind nginx running docker/nginx.conf as shipped, with only the upstream addresses, the listen
port and the file paths rewritten. Through the one address: the token gate, sign-in, a save, a whole streamed
generation, and a link that still opens (from the other replica) after the replica that saved it is SIGKILLed.

Marked `replicas` (part of make test); Debian's nginx-light comes with `make postgres`.
"""
from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port
from tests.deploy.test_replicas import Replica
from tests.server_process import ROOT

pytestmark = [pytest.mark.replicas,
              pytest.mark.skipif(shutil.which("nginx") is None, reason="Debian nginx not installed (make postgres)")]
TOKEN = "team-secret-token"


def nginx_conf(tmp: Path, spool: Path, port: int, upstreams: list[int]) -> Path:
    """docker/nginx.conf with the replicas' addresses, a free port, logs under tmp and body buffers in spool."""
    conf = (ROOT / "docker" / "nginx.conf").read_text()
    for host, up in zip(("replica-a:8000", "replica-b:8000"), upstreams, strict=True):
        assert host in conf
        conf = conf.replace(host, f"127.0.0.1:{up}")
    assert "listen 80;" in conf
    conf = conf.replace("listen 80;", f"listen 127.0.0.1:{port};")
    conf = f"pid {tmp}/nginx.pid;\nerror_log {tmp}/nginx-error.log;\n" + conf
    conf = conf.replace("http {", f"http {{\n    access_log {tmp}/nginx-access.log;\n"
                                  f"    client_body_temp_path {spool}/body; proxy_temp_path {spool}/proxy;", 1)
    path = tmp / "nginx.conf"
    path.write_text(conf)
    return path


@pytest.fixture()
def proxied(pg_url, tmp_path, monkeypatch):
    monkeypatch.setenv("ASN_AUTH_TOKEN", TOKEN)
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "*")
    a, b = Replica("A", pg_url, tmp_path), Replica("B", pg_url, tmp_path)
    # nginx's workers drop root (to nobody) and cannot enter pytest's 0700 tmp_path: their spool is a folder of its own
    spool = Path(tempfile.mkdtemp(prefix="asn-nginx-"))
    spool.chmod(0o777)
    conf = None
    try:
        a.wait_ready()
        b.wait_ready()
        for _ in range(3):  # free_port() hands out a port nothing holds now; another process may take it first
            conf = nginx_conf(tmp_path, spool, free_port(), [a.port, b.port])
            check = subprocess.run(["nginx", "-t", "-c", str(conf)], capture_output=True, text=True)
            assert check.returncode == 0, check.stderr
            started = subprocess.run(["nginx", "-c", str(conf)], capture_output=True, text=True)
            if started.returncode == 0 or "Address already in use" not in started.stderr:
                break
        assert started.returncode == 0, started.stderr
        port = int(conf.read_text().split("listen 127.0.0.1:")[1].split(";")[0])
        yield f"http://127.0.0.1:{port}", {"A": a, "B": b}
    finally:
        if conf is not None:
            subprocess.run(["nginx", "-c", str(conf), "-s", "stop"], capture_output=True)
        a.stop()
        b.stop()
        shutil.rmtree(spool, ignore_errors=True)


def test_two_replicas_behind_nginx_as_configured(proxied):
    base, replicas = proxied
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    assert httpx.get(base + "/health").status_code == 200
    for path in ("/", "/static/app.css", "/docs"):
        assert httpx.get(base + path).status_code == 401, path
    assert httpx.get(base + "/", headers={"Authorization": "Bearer nope"}).status_code == 401

    with httpx.Client(base_url=base, timeout=120) as c:
        signin = c.post("/signin", data={"token": TOKEN, "next": "/"})
        assert signin.status_code == 303 and signin.headers["location"] == "/"
        assert c.get("/").status_code == 200  # the cookie, through the proxy

        result = c.post("/api/analyze", json={"prompt": "The capital of France is"}, headers=bearer)
        assert result.status_code == 200
        saved = c.post("/api/explorations", json={"kind": "analysis", "title": "through nginx",
                                                   "inputs": {"prompt": "The capital of France is"},
                                                   "result": result.json()}, headers=bearer)
        assert saved.status_code == 201, saved.text
        link = saved.json()["url"]

        with c.stream("POST", "/api/generate/stream", json={"prompt": "Once upon a time", "max_new_tokens": 24},
                      headers=bearer) as stream:  # server-sent events through the proxy, to the end
            events = [line for line in stream.iter_lines() if line.startswith("event: ")]
        assert events.count("event: token") == 24 and "event: done" in events

        # ip_hash: this client talks to one replica; kill it, the other serves the link from PostgreSQL
        logs = {name: Path(r.log.name).read_text() for name, r in replicas.items()}
        (saver,) = [name for name, text in logs.items() if "POST /api/explorations" in text]
        replicas[saver].proc.send_signal(signal.SIGKILL)
        replicas[saver].proc.wait(timeout=10)
        opened = c.get(link)
        assert opened.status_code == 200 and "through nginx" in opened.text
        listed = c.get("/api/explorations", headers=bearer).json()
        assert [e["title"] for e in listed["items"]] == ["through nginx"]
        other = "B" if saver == "A" else "A"
        end = time.monotonic() + 10  # uvicorn writes its access line after the response has gone out
        while f"GET {link}" not in Path(replicas[other].log.name).read_text():
            assert time.monotonic() < end, f"replica {other} never logged GET {link}"
            time.sleep(0.1)
