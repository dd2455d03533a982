"""A uvicorn server process (`python -m app serve --profile tiny`) on a free port with its own store, for tests
that need a real process: replicas sharing a store, a stop signal."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[1]


class ServerProcess:
    def __init__(self, name: str, store_url: str, log_dir: Path, env: dict | None = None):
        self.name, self.port = name, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "ASN_STORE_URL": store_url, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
               **(env or {})}
        self.log = open(log_dir / f"replica-{name}.log", "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "app", "serve", "--profile", "tiny", "--port", str(self.port)],
                                     cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self.http = httpx.Client(base_url=self.url, timeout=60)

    def log_text(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text()

    def wait_ready(self, timeout: float = 900) -> None:  # generous: a loaded 2-core machine imports torch slowly
        end = time.time() + timeout
        while time.time() < end:
            assert self.proc.poll() is None, f"replica {self.name} exited: {self.log_text()[-3000:]}"
            try:
                if self.http.get("/health").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"replica {self.name} did not start")

    def stop(self) -> None:
        self.http.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.log.close()
