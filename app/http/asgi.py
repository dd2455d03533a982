"""A base for the app's raw ASGI middlewares that act on HTTP requests only."""
from __future__ import annotations


class HttpMiddleware:
    """Other scopes (lifespan, websocket) pass straight through; HTTP requests go to `http`."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self.http(scope, receive, send)

    async def http(self, scope, receive, send):  # pragma: no cover - abstract
        raise NotImplementedError
