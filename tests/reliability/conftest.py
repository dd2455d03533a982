"""Shared fixtures for the reliability suite: an app on the tiny engine with its own store, golden logits."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "reliability"
GOLDEN_PROMPT = "The capital of France is"


def report(name: str, figures: dict) -> None:
    """Write measured figures to test-artifacts/reliability/<name>.json (and print them for -s runs)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / f"{name}.json").write_text(json.dumps(figures, indent=2, sort_keys=True, default=str))
    print(f"\n[{name}] " + json.dumps(figures, sort_keys=True, default=str)[:2000])


def golden_logits(engine, prompt: str = GOLDEN_PROMPT) -> torch.Tensor:
    """Unsteered logits of a prompt, straight from the model (no app code in between)."""
    ids = engine.tokenizer(prompt, add_special_tokens=False)["input_ids"]
    with engine.session():
        return engine.model(torch.tensor([ids]), return_type="logits")[0].detach().clone()


def assert_clean(engine, golden: torch.Tensor | None = None) -> None:
    """No hook attached anywhere, the lock free, and (optionally) the golden prompt's logits bit-identical."""
    assert engine.attached_hooks() == 0, f"{engine.attached_hooks()} hooks leaked"
    assert not engine.busy, "the engine lock is still held"
    assert engine._waiting == 0, f"{engine._waiting} waiters still counted"
    if golden is not None:
        now = golden_logits(engine)
        assert torch.equal(now, golden), f"golden logits changed (max |diff| {(now - golden).abs().max().item()})"


def iter_api_routes(routes_or_app, prefix: str = ""):
    """Every APIRoute of the app with its full path (FastAPI >= 0.16x nests included routers)."""
    from fastapi.routing import APIRoute

    routes = getattr(routes_or_app, "routes", routes_or_app)
    for r in routes:
        if isinstance(r, APIRoute):
            yield prefix + r.path, r
        elif hasattr(r, "original_router"):
            ctx = getattr(r, "include_context", None)
            yield from iter_api_routes(r.original_router.routes, prefix + (getattr(ctx, "prefix", "") or ""))


def build_app(engine, tmp_path, **settings_kw):
    from app.core.settings import Settings
    from app.main import create_app

    kw = {"store_url": f"sqlite:///{tmp_path}/explorations.db", **settings_kw}
    return create_app(Settings(profile=engine.profile.name, **kw), engine_factory=lambda s: engine)


@pytest.fixture()
def rel_client(tiny_engine, tmp_path):
    from fastapi.testclient import TestClient

    with TestClient(build_app(tiny_engine, tmp_path), raise_server_exceptions=False) as c:
        yield c
    _cancel_jobs(c.app)


def _cancel_jobs(app) -> None:
    """Stop any background job a test started (discovery), so it does not hold the model for later tests."""
    runner = getattr(app.state, "jobs", None)
    if runner is not None:
        runner.shutdown()


@pytest.fixture(scope="session")
def golden(tiny_engine):
    return golden_logits(tiny_engine)


class LiveServer:
    """uvicorn serving an app in a thread of this process on 127.0.0.1 (so tests can inspect the engine)."""

    def __init__(self, app, port: int | None = None):
        import socket
        import threading

        import uvicorn

        if port is None:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                                    lifespan="on", timeout_keep_alive=30))
        self.thread = threading.Thread(target=self.server.run, name="live-uvicorn", daemon=True)

    def __enter__(self):
        import time

        self.thread.start()
        t0 = time.time()
        while not self.server.started:
            if time.time() - t0 > 120 or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=30)


@pytest.fixture()
def live_app(tiny_engine, tmp_path):
    app = build_app(tiny_engine, tmp_path)
    with LiveServer(app) as srv:
        yield srv, app
    _cancel_jobs(app)
