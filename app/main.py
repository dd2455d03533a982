"""App factory: the Engine, store, job runner and stream registry are built in the lifespan (nothing heavy at
import time) and live on app.state; routers, views and templates are registered in app.core.registration."""
from __future__ import annotations

import contextlib
import logging
from typing import Callable

from fastapi import FastAPI, Request
from starlette.middleware.gzip import GZipMiddleware

from app.api.errors import busy_response
from app.api.streams import Streams
from app.core.registration import register_all
from app.core.settings import ROOT, Settings, get_settings
from app.engine.engine import Engine, EngineBusy
from app.http.middleware import install as install_guards
from app.http.static_assets import StaticAssets
from app.jobs import runner_for
from app.jobs.stop_signal import on_stop_signal
from app.store import open_store

__all__ = ["create_app", "ROOT"]
log = logging.getLogger("asn")
STOP_GRACE_S = 3.0  # at the lifespan's end, how long running jobs get to reach a checkpoint before the store closes


def create_app(settings: Settings | None = None, engine_factory: Callable[[Settings], Engine] | None = None) -> FastAPI:
    """Build the app; `settings` is the one source of limits (the environment only when none are given);
    engine_factory lets tests inject a tiny engine."""
    settings = settings or get_settings()

    def default_factory(s: Settings) -> Engine:
        return Engine.build(s.profile, s.device, max_waiting=s.max_waiting, wait_timeout_s=s.wait_timeout_s,
                            atlas_root=s.atlas_root)

    factory = engine_factory or default_factory

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.engine = factory(settings)
        log.info("engine ready: %s in %.1fs", app.state.engine.profile.name, app.state.engine.load_seconds)
        app.state.store = open_store(settings.store_url)
        app.state.jobs = runner_for(settings, app.state.store)  # job state in the store: replicas share it
        app.state.streams = Streams()

        def stop_now() -> None:  # SIGTERM: stop taking work, cancel what runs (jobs recorded interrupted)
            log.info("stop requested: no new work; running jobs and streams cancelled")
            app.state.engine.stop()
            app.state.jobs.interrupt()
            app.state.streams.cancel_all()

        restore_signals = on_stop_signal(stop_now)
        try:
            yield
        finally:
            restore_signals()
            app.state.streams.cancel_all()
            app.state.jobs.shutdown(grace_s=STOP_GRACE_S)
            app.state.store.close()

    app = FastAPI(title="Activation Space Navigator", version="0.1.0", lifespan=lifespan,
                  docs_url=None, redoc_url=None,  # /docs is our page (app/web/docs_pages.py): Swagger UI from static/
                  description="Residual-stream features, logit lens, steering and concept discovery over a transformer and two SAEs.")
    app.state.settings = settings
    app.state.assets = StaticAssets(ROOT / "static")  # gzip kept in memory, hashed addresses cached for a year
    app.mount("/static", app.state.assets, name="static")
    # pages and JSON gzipped on the fly (level 6: /map's 1.2 MB of figure JSON in ~20 ms); streams and /static's
    # already-compressed bytes pass through untouched
    app.add_middleware(GZipMiddleware, minimum_size=1024, compresslevel=6)
    install_guards(app, settings)  # body limit (413), CSP, OOM -> 503, non-finite JSON -> 422, OpenAPI errors

    @app.exception_handler(EngineBusy)
    async def busy_handler(request: Request, exc: EngineBusy):
        return busy_response(str(exc), exc.retry_after)

    register_all(app)
    return app
