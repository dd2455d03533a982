"""Access token and per-client rate limit for a shared address (pure ASGI middleware, installed by app.http.middleware).

- `AuthMiddleware` (only when `Settings.auth_token` / `--auth-token` is set): every request except `/health`
  and the sign-in page needs the token, either as `Authorization: Bearer <token>` (API clients) or as the
  `asn_session` cookie that `POST /signin` sets (browsers; HttpOnly, SameSite=Lax, Secure over https). The cookie
  holds an HMAC of the token, not the token. Both are compared with `hmac.compare_digest` (constant time). A
  wrong or missing token gets 401 with no detail (`{"detail": "unauthorized"}`; browsers asking for HTML get
  the sign-in form). Static assets, `/docs` and `/openapi.json` are behind it too.
- `RateLimitMiddleware` (only when `Settings.rate_limit_per_minute` > 0): a token bucket per client address
  (`scope["client"]`; behind a proxy run uvicorn with `--proxy-headers --forwarded-allow-ips` so that is the
  real client) for POSTs to the expensive routes (`Settings.rate_limit_routes`, a regex: generation, steering,
  discovery, experiments, atlas builds, re-runs). Over the limit -> 429 with Retry-After (whole seconds).
  Buckets live in each replica's memory: with N replicas a client gets up to N times the rate.
"""
from __future__ import annotations

import hashlib
import hmac
import html
import json
import math
import re
import secrets
import threading
import time
from typing import Callable
from urllib.parse import parse_qs, quote

from app.http.asgi import HttpMiddleware

COOKIE = "asn_session"
SIGNIN_PATH = "/signin"
SIGNOUT_PATH = "/signout"
OPEN_PATHS = frozenset({"/health", SIGNIN_PATH})
MAX_SIGNIN_BODY = 8192


def session_value(token: str) -> str:
    """What the sign-in cookie holds: an HMAC of the token (the token itself never travels in a cookie)."""
    return hmac.new(token.encode(), b"asn-session-v1", hashlib.sha256).hexdigest()


def _headers(scope) -> dict[bytes, bytes]:
    return {k.lower(): v for k, v in scope.get("headers") or []}


def _cookies(raw: bytes) -> dict[str, str]:
    out = {}
    for part in raw.decode("latin-1").split(";"):
        name, sep, value = part.strip().partition("=")
        if sep:
            out.setdefault(name, value)
    return out


def safe_next(value: str | None) -> str:
    """A local path to go to after signing in ('/' for anything that could leave the site)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value or "\n" in value:
        return "/"
    return value


async def _send(send, status: int, body: bytes, content_type: str, headers: list[tuple[bytes, bytes]] = ()) -> None:
    raw = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode()),
           (b"cache-control", b"no-store"), *headers]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def signin_page(next_path: str, failed: bool = False) -> bytes:
    msg = '<p role="alert" style="color:#b00">That token is not valid.</p>' if failed else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sign in - Activation Space Navigator</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body style="font-family:system-ui,sans-serif;max-width:28rem;margin:4rem auto;padding:0 1rem">
<h1 style="font-size:1.3rem">Activation Space Navigator</h1>
<p>This dashboard is shared; enter the access token you were given.</p>{msg}
<form method="post" action="{SIGNIN_PATH}">
<input type="hidden" name="next" value="{html.escape(next_path, quote=True)}">
<label>Access token <input type="password" name="token" autocomplete="current-password" required autofocus
 style="width:100%;margin:.4rem 0 1rem"></label>
<button type="submit">Sign in</button>
</form></body></html>""".encode()


class AuthMiddleware:
    """Every route but /health and /signin needs the token (bearer header or sign-in cookie); 401 otherwise."""

    def __init__(self, app, token: str):
        if not token:
            raise ValueError("auth token must not be empty")
        self.app = app
        self._token = token.encode()
        self._session = session_value(token).encode()

    def _authorized(self, headers: dict[bytes, bytes]) -> bool:
        auth = headers.get(b"authorization", b"")
        scheme, _, cred = auth.partition(b" ")
        ok = False
        if scheme.lower() == b"bearer" and cred:
            ok = hmac.compare_digest(cred.strip(), self._token)
        cookie = _cookies(headers.get(b"cookie", b"")).get(COOKIE)
        if cookie is not None:
            ok = hmac.compare_digest(cookie.encode("latin-1"), self._session) or ok
        return ok

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        headers = _headers(scope)
        if scope["type"] == "http" and path == SIGNIN_PATH:
            await self._signin(scope, receive, send, headers)
            return
        if scope["type"] == "http" and path == SIGNOUT_PATH:
            await _send(send, 303, b"", "text/plain", [(b"location", SIGNIN_PATH.encode()),
                                                       (b"set-cookie", self._cookie(scope, headers, "", 0))])
            return
        if path in OPEN_PATHS or self._authorized(headers):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        await self._deny(scope, send, headers)

    async def _deny(self, scope, send, headers) -> None:
        www = [(b"www-authenticate", b'Bearer realm="asn"')]
        wants_html = scope["method"] == "GET" and b"text/html" in headers.get(b"accept", b"")
        if wants_html:  # a browser: the sign-in form, coming back here afterwards
            query = scope.get("query_string", b"").decode("latin-1")
            target = scope.get("path", "/") + (f"?{query}" if query else "")
            await _send(send, 401, signin_page(safe_next(target)), "text/html; charset=utf-8", www)
        else:
            await _send(send, 401, json.dumps({"detail": "unauthorized"}).encode(), "application/json", www)

    def _cookie(self, scope, headers, value: str, max_age: int) -> bytes:
        secure = scope.get("scheme") == "https" or headers.get(b"x-forwarded-proto", b"") == b"https"
        return (f"{COOKIE}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}"
                + ("; Secure" if secure else "")).encode()

    async def _signin(self, scope, receive, send, headers) -> None:
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        if scope["method"] != "POST":
            await _send(send, 200, signin_page(safe_next((query.get("next") or ["/"])[0])), "text/html; charset=utf-8")
            return
        body, total = [], 0
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            chunk = msg.get("body", b"")
            total += len(chunk)
            if total > MAX_SIGNIN_BODY:
                await _send(send, 413, b'{"detail": "sign-in form too large"}', "application/json")
                return
            body.append(chunk)
            if not msg.get("more_body", False):
                break
        form = parse_qs(b"".join(body).decode("utf-8", "replace"))
        token = (form.get("token") or [""])[0].encode()
        next_path = safe_next((form.get("next") or ["/"])[0])
        if not hmac.compare_digest(token, self._token):
            await _send(send, 401, signin_page(next_path, failed=True), "text/html; charset=utf-8",
                        [(b"www-authenticate", b'Bearer realm="asn"')])
            return
        await _send(send, 303, b"", "text/plain", [(b"location", quote(next_path, safe="/?&=%#:;,+@!$'()*~.-_").encode()),
                                                   (b"set-cookie", self._cookie(scope, headers, self._session.decode(),
                                                                                30 * 24 * 3600))])


# --- rate limit ---------------------------------------------------------------------------------------------

DEFAULT_RATE_LIMIT_ROUTES = (
    r"^/api/(generate(/stream)?|steer|dose|temperature|system-shift|discover(/jobs)?|experiments?(/.*)?|atlas(/.*)?"
    r"|explorations/[^/]+/rerun)$"
    r"|^/(fragments/(generation|steering|dose|temperature|system_shift)|discover/run|experiments?(/.*)?|atlas(/.*)?"
    r"|e/[^/]+/rerun)$"
)


class TokenBuckets:
    """One token bucket per client: `burst` requests at once, refilled at `per_minute`/60 per second."""

    def __init__(self, per_minute: float, burst: int, clock: Callable[[], float] = time.monotonic,
                 max_clients: int = 10_000):
        self.rate = per_minute / 60.0
        self.burst = max(1, int(burst))
        self.clock = clock
        self.max_clients = max_clients
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, client: str) -> float:
        """0 if the request may go now (a token is taken), else the seconds until one is available."""
        now = self.clock()
        with self._lock:
            tokens, last = self._buckets.get(client, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate)
            if tokens >= 1.0:
                self._buckets[client] = (tokens - 1.0, now)
                wait = 0.0
            else:
                self._buckets[client] = (tokens, now)
                wait = (1.0 - tokens) / self.rate
            if len(self._buckets) > self.max_clients:  # forget full buckets (clients that went quiet)
                full = [c for c, (t, ts) in self._buckets.items() if t + (now - ts) * self.rate >= self.burst]
                for c in full:
                    self._buckets.pop(c, None)
        return wait


class RateLimitMiddleware:
    """429 + Retry-After for a client over its budget on the expensive routes (POST only)."""

    def __init__(self, app, per_minute: float, burst: int, routes: str = DEFAULT_RATE_LIMIT_ROUTES,
                 clock: Callable[[], float] = time.monotonic):
        self.app = app
        self.routes = re.compile(routes)
        self.buckets = TokenBuckets(per_minute, burst, clock)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") != "POST" or not self.routes.search(scope.get("path", "")):
            await self.app(scope, receive, send)
            return
        client = (scope.get("client") or ("unknown", 0))[0]
        wait = self.buckets.take(client)
        if wait <= 0:
            await self.app(scope, receive, send)
            return
        retry = max(1, math.ceil(wait))
        body = json.dumps({"detail": f"too many requests to expensive routes; retry in {retry} s "
                                     f"(rate_limit_per_minute={self.buckets.rate * 60:g}, "
                                     f"rate_limit_burst={self.buckets.burst})"}).encode()
        await _send(send, 429, body, "application/json", [(b"retry-after", str(retry).encode())])


# --- owner token: which saved explorations this browser may list ------------------------------------------

OWNER_COOKIE = "asn_owner"
OWNER_SCOPE_KEY = "asn.owner"
_OWNER_RE = re.compile(r"^[A-Za-z0-9_-]{32,64}$")


class OwnerCookieMiddleware(HttpMiddleware):
    """Gives every browser a random owner token (HttpOnly, SameSite=Lax cookie) and puts it in the scope.

    Saved explorations record a hash of it; /e and GET /api/explorations list only the caller's. Opening /e/<id>
    needs only the id. A request without a (valid) cookie gets a fresh token, set on its response."""

    async def http(self, scope, receive, send):
        headers = _headers(scope)
        token = _cookies(headers.get(b"cookie", b"")).get(OWNER_COOKIE)
        fresh = token is None or not _OWNER_RE.match(token)
        if fresh:
            token = secrets.token_urlsafe(32)
        scope[OWNER_SCOPE_KEY] = token
        if not fresh:
            await self.app(scope, receive, send)
            return
        secure = scope.get("scheme") == "https" or headers.get(b"x-forwarded-proto", b"") == b"https"
        cookie = (f"{OWNER_COOKIE}={token}; Path=/; HttpOnly; SameSite=Lax; Max-Age={10 * 365 * 24 * 3600}"
                  + ("; Secure" if secure else "")).encode()

        async def send_with_cookie(msg):
            if msg["type"] == "http.response.start":
                msg = {**msg, "headers": [*(msg.get("headers") or []), (b"set-cookie", cookie)]}
            await send(msg)

        await self.app(scope, receive, send_with_cookie)


def owner_of(request) -> str:
    """The caller's owner id as stored with its explorations: a SHA-256 of the owner token (never the token)."""
    token = request.scope.get(OWNER_SCOPE_KEY) or request.cookies.get(OWNER_COOKIE)
    if not token:  # no owner token at all: an owner nobody shares (its saves are listed to no one)
        return "none:" + secrets.token_hex(16)
    return owner_id(token)


def owner_id(token: str) -> str:
    """What the store records for an owner token (a hash: the store never holds the token itself)."""
    return hashlib.sha256(f"asn-owner:{token}".encode()).hexdigest()


def is_admin(request, settings) -> bool:
    """The operator: X-Admin-Token equal (constant time) to Settings.admin_token, when one is set."""
    configured = getattr(settings, "admin_token", None)
    if configured is None or not configured.get_secret_value():
        return False
    given = request.headers.get("x-admin-token", "")
    return hmac.compare_digest(given.encode(), configured.get_secret_value().encode())
