"""The Content-Security-Policy and the other security headers every response gets."""
from __future__ import annotations

from app.asgi import HttpMiddleware

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
# FastAPI's own /docs and /redoc pages load swagger-ui from a CDN with an inline bootstrap script; they show no
# model text. They get a policy that allows exactly that, everything else gets CSP above.
DOCS_PATHS = ("/docs", "/redoc")
DOCS_CSP = ("default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
            "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; img-src 'self' data: https://fastapi.tiangolo.com; "
            "object-src 'none'; base-uri 'none'; frame-ancestors 'none'")
SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
    "permissions-policy": "camera=(), microphone=(), geolocation=()",
}


class SecurityHeadersMiddleware(HttpMiddleware):
    async def http(self, scope, receive, send):
        path = scope.get("path", "")
        csp = DOCS_CSP if path.startswith(DOCS_PATHS) else CSP

        async def send_with_headers(msg):
            if msg["type"] == "http.response.start":
                raw = list(msg.get("headers") or [])
                present = {k.lower() for k, _ in raw}
                extra = {"content-security-policy": csp, **SECURITY_HEADERS}
                raw += [(k.encode(), v.encode()) for k, v in extra.items() if k.encode() not in present]
                msg = {**msg, "headers": raw}
            await send(msg)

        await self.app(scope, receive, send_with_headers)
