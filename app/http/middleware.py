"""Request guards and error mapping shared by every route (installed by `install(app, settings)`).

- `BodyGuardMiddleware` (app/http/body_guard.py): 413 for a body over `Limits.max_body_bytes` before parsing; 422 for
  JSON no route can take (NaN / infinity, lone surrogates, nesting deeper than `Limits.max_json_depth`).
- `SecurityHeadersMiddleware`: a strict Content-Security-Policy (scripts only from the app's own origin; no
  inline scripts, no eval; Plotly figures travel in `<script type="application/json">` data blocks, which CSP
  does not execute), nosniff, no framing, no referrer.
- Exception handlers and OpenAPI error responses (app/http/error_handlers.py): out of memory and an unavailable store
  -> 503 + Retry-After, non-finite results and text that cannot be encoded -> 422; every status documented.
  `ErrorLinesMiddleware` (there too): every JSON error answer carries its readable lines in X-Error-Lines.
"""
from __future__ import annotations

import logging

from fastapi import FastAPI

from app.http.asgi import HttpMiddleware
from app.http.body_guard import BodyGuardMiddleware
from app.http.error_handlers import ErrorLinesMiddleware, add_exception_handlers, document_error_responses

log = logging.getLogger("asn")

CSP = "; ".join([
    "default-src 'self'",
    "script-src 'self'",
    # Plotly and htmx set inline style attributes on the elements they draw; styles cannot run code.
    "style-src 'self' 'unsafe-inline'",
    "img-src 'self' data: blob:",
    "font-src 'self' data:",
    "connect-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
])
SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
    "permissions-policy": "camera=(), microphone=(), geolocation=()",
}


class SecurityHeadersMiddleware(HttpMiddleware):
    async def http(self, scope, receive, send):
        csp = CSP

        async def send_with_headers(msg):
            if msg["type"] == "http.response.start":
                raw = list(msg.get("headers") or [])
                present = {k.lower() for k, _ in raw}
                extra = {"content-security-policy": csp, **SECURITY_HEADERS}
                raw += [(k.encode(), v.encode()) for k, v in extra.items() if k.encode() not in present]
                msg = {**msg, "headers": raw}
            await send(msg)

        await self.app(scope, receive, send_with_headers)


def install(app: FastAPI, settings) -> None:
    """Middleware, exception handlers and OpenAPI error responses for the whole app."""
    limits = settings.limits
    app.add_middleware(BodyGuardMiddleware, max_body_bytes=limits.max_body_bytes,
                       max_json_depth=getattr(limits, "max_json_depth", 32))
    from app.http.auth import AuthMiddleware, OwnerCookieMiddleware, RateLimitMiddleware

    app.add_middleware(OwnerCookieMiddleware)  # which saved explorations this browser may list
    if settings.rate_limit_per_minute > 0:  # inside auth: strangers never use up a client's budget
        app.add_middleware(RateLimitMiddleware, per_minute=settings.rate_limit_per_minute,
                           burst=settings.rate_limit_burst, routes=settings.rate_limit_routes)
    if settings.auth_token is not None and settings.auth_token.get_secret_value():
        app.add_middleware(AuthMiddleware, token=settings.auth_token.get_secret_value())
    app.add_middleware(SecurityHeadersMiddleware)  # outer to the guard: its 413/422 get the headers too
    app.add_middleware(ErrorLinesMiddleware)  # added last = outermost: every JSON error answer gets its lines
    add_exception_handlers(app)
    document_error_responses(app)
