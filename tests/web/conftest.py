"""Browser fixtures (tests/web/browser.py holds the constants and page helpers they use): Debian's chromium, plain or
with WebGL through SwiftShader, and live uvicorn servers on the tiny profile. All module-scoped: one browser and one
server per test module, as each module had them before."""
from __future__ import annotations

import pytest

from tests.atlas_fixtures import tiny_atlas, with_atlas
from tests.conftest import serve_engine
from tests.web.browser import KINDS, LAUNCH_ARGS, LAUNCH_ARGS_WEBGL, VIEWS, launched, launched_persistent


@pytest.fixture(scope="module")
def browser():
    """Chromium without a GPU (LAUNCH_ARGS)."""
    with launched(LAUNCH_ARGS) as b:
        yield b


@pytest.fixture(scope="module")
def webgl_browser():
    """Chromium with WebGL through SwiftShader (LAUNCH_ARGS_WEBGL): the map draws with scattergl."""
    with launched(LAUNCH_ARGS_WEBGL) as b:
        yield b


@pytest.fixture(scope="module")
def cached_webgl_context(tmp_path_factory):
    """One Chromium context with WebGL and a profile on disk: pages loaded in it share the HTTP cache and compiled
    scripts (plotly.js is compiled once per module, not once per page), as a returning visitor's browser does. For
    modules whose pages only load and check (a module uses it or a browser fixture, not both)."""
    with launched_persistent(tmp_path_factory.mktemp("chromium-profile"), LAUNCH_ARGS_WEBGL) as ctx:
        yield ctx


@pytest.fixture(scope="module")
def live_server(tiny_engine):
    """uvicorn on 127.0.0.1 serving the tiny engine (the module's own store: tests/conftest.py _module_store)."""
    with serve_engine(tiny_engine) as url:
        yield url


@pytest.fixture(scope="module")
def atlas_server(tiny_engine):
    """uvicorn serving the tiny engine with an atlas (hover lines and cards carry atlas examples) and its map, built
    in memory before the browser waits for it."""
    from app.api.map import service

    with with_atlas(tiny_engine, tiny_atlas(tiny_engine)):
        assert service.layout_status(tiny_engine)[0] is not None
        with serve_engine(tiny_engine) as url:
            yield url


@pytest.fixture(scope="module")
def snapshots(atlas_server, tiny_engine):
    """One saved exploration of every registered kind (its example, computed by the live service): kind -> its URL."""
    import httpx

    from app.core.settings import Settings
    from app.explorations.registry import snapshot_context

    settings = Settings(profile="tiny")
    out = {}
    for kind in KINDS:
        spec = VIEWS.get(kind)
        req = spec.request_model.model_validate(spec.example)
        ctx = snapshot_context(kind, req, spec.run_fn(tiny_engine, settings, req))
        r = httpx.post(atlas_server + "/api/explorations", json={"kind": kind, "title": f"{kind} snapshot",
                                                                "inputs": ctx["inputs"], "result": ctx["result"]},
                       timeout=120)
        assert r.status_code == 201, r.text
        out[kind] = r.json()["url"]
    return out
