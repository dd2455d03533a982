"""App factory: the Engine is built in the lifespan (nothing heavy at import time) and lives on app.state."""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Callable

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

from app.engine.engine import Engine, EngineBusy
from app.settings import Settings, get_settings

ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger("asn")


def create_app(settings: Settings | None = None, engine_factory: Callable[[Settings], Engine] | None = None) -> FastAPI:
    """Build the app; engine_factory lets tests inject a tiny engine."""
    settings = settings or get_settings()

    def default_factory(s: Settings) -> Engine:
        return Engine.build(s.profile, s.device, max_waiting=s.max_waiting, wait_timeout_s=s.wait_timeout_s,
                            atlas_root=s.atlas_root)

    factory = engine_factory or default_factory

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.settings = settings
        app.state.engine = factory(settings)
        log.info("engine ready: %s in %.1fs", app.state.engine.profile.name, app.state.engine.load_seconds)
        from app.store import open_store

        app.state.store = open_store(settings.store_url)
        try:
            yield
        finally:
            app.state.store.close()

    app = FastAPI(title="Activation Space Navigator", version="0.1.0", lifespan=lifespan,
                  description="Residual-stream features, logit lens, steering and concept discovery over a transformer and two SAEs.")
    app.mount("/static", StaticFiles(directory=ROOT / "static"), name="static")

    from app.middleware import install as install_guards

    install_guards(app, settings)  # body limit (413), CSP, OOM -> 503, non-finite JSON -> 422, OpenAPI errors

    @app.exception_handler(EngineBusy)
    async def busy_handler(request: Request, exc: EngineBusy):
        return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": str(exc.retry_after)})

    from app.api import analysis, discover, explorations, generate, health
    from app.web import analysis_pages, discover_pages, exploration_pages, generate_pages, pages

    for module in (health, analysis, generate, discover, explorations,
                   pages, analysis_pages, generate_pages, discover_pages, exploration_pages):
        app.include_router(module.router)
    return app
