"""app/http/auth.py: the access token (bearer header or sign-in cookie) and the per-client rate limit on expensive routes."""
from __future__ import annotations

import asyncio
import hmac

import httpx
import pytest

from app.http import auth
from app.http.auth import COOKIE, RateLimitMiddleware, TokenBuckets, safe_next, session_value
from tests.conftest import FakeClock, make_client

TOKEN = "s3cret-token-42"

PROTECTED = ["/", "/e", "/api/explorations", "/static/figures.js", "/docs", "/openapi.json", "/discover",
             "/api/discover/prompt-sets"]


@pytest.fixture()
def locked(tiny_engine):
    with make_client(tiny_engine, auth_token=TOKEN) as c:
        yield c


def test_without_a_token_setting_nothing_changes(tiny_client):
    for path in ("/", "/static/figures.js", "/docs", "/health"):
        r = tiny_client.get(path)
        assert r.status_code == 200, path
        # only the unlisted-links owner cookie may be set; no sign-in cookie, no auth challenge
        cookies = [c.split("=", 1)[0] for c in r.headers.get_list("set-cookie")]
        assert set(cookies) <= {"asn_owner"} and "www-authenticate" not in r.headers, (path, cookies)
    assert tiny_client.get("/signin").status_code == 404  # no sign-in page without a token


def test_everything_but_health_needs_the_token(locked):
    assert locked.get("/health").status_code == 200
    for path in PROTECTED:
        r = locked.get(path)
        assert r.status_code == 401, path
        assert r.json() == {"detail": "unauthorized"}  # no detail on why
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert "content-security-policy" in r.headers  # still gets the security headers
    r = locked.post("/api/analyze", json={"prompt": "hi"})
    assert r.status_code == 401 and r.json() == {"detail": "unauthorized"}
    for bad in ("Bearer wrong", f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", f"Basic {TOKEN}", "Bearer ", TOKEN):
        assert locked.get("/api/explorations", headers={"Authorization": bad}).status_code == 401, bad
    ok = {"Authorization": f"Bearer {TOKEN}"}
    for path in PROTECTED:
        assert locked.get(path, headers=ok).status_code == 200, path
    assert locked.post("/api/analyze", json={"prompt": "hi"}, headers=ok).status_code == 200


def test_browser_sign_in_sets_an_httponly_lax_cookie(locked):
    page = locked.get("/e?kind=analysis", headers={"Accept": "text/html"})
    assert page.status_code == 401 and '<form method="post" action="/signin">' in page.text
    assert 'name="next" value="/e?kind=analysis"' in page.text
    wrong = locked.post("/signin", data={"token": "nope", "next": "/e"}, follow_redirects=False)
    assert wrong.status_code == 401 and "not valid" in wrong.text and "set-cookie" not in wrong.headers
    r = locked.post("/signin", data={"token": TOKEN, "next": "/e?kind=analysis"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/e?kind=analysis"
    cookie = r.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}={session_value(TOKEN)};")
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/" in cookie
    assert TOKEN not in cookie  # the cookie carries an HMAC of the token, not the token
    assert locked.get("/e").status_code == 200  # the client kept the cookie
    assert locked.get("/static/figures.js").status_code == 200
    locked.cookies.clear()
    locked.cookies.set(COOKIE, session_value("another token"))
    assert locked.get("/e").status_code == 401
    out = locked.get("/signout", follow_redirects=False)
    assert out.status_code == 303 and "Max-Age=0" in out.headers["set-cookie"]


def test_sign_in_never_redirects_off_site(locked):
    for nxt in ("//evil.example/x", "https://evil.example", "\\\\evil", "javascript:alert(1)", ""):
        r = locked.post("/signin", data={"token": TOKEN, "next": nxt}, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/", nxt
    assert safe_next("/generate?prompt=a%20b") == "/generate?prompt=a%20b"


def test_token_comparison_is_constant_time(locked, monkeypatch):
    calls = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    locked.get("/api/explorations", headers={"Authorization": "Bearer guess"})
    locked.post("/signin", data={"token": "guess2"}, follow_redirects=False)
    assert (b"guess", TOKEN.encode()) in calls and (b"guess2", TOKEN.encode()) in calls


def test_cli_flag_sets_the_token(monkeypatch):
    from app.core.settings import Settings

    monkeypatch.setenv("ASN_AUTH_TOKEN", "from-env")
    assert Settings().auth_token.get_secret_value() == "from-env"
    assert "from-env" not in repr(Settings())  # a secret: never printed with the settings


# --- rate limit ---------------------------------------------------------------------------------------------

def test_token_bucket_arithmetic():
    clock = FakeClock(1000.0)
    b = TokenBuckets(per_minute=30, burst=3, clock=clock)  # one token every 2 s
    assert [b.take("a") for _ in range(3)] == [0, 0, 0]
    assert b.take("a") == pytest.approx(2.0)
    clock.t += 1.0
    assert b.take("a") == pytest.approx(1.0)  # half a token back: 1 s more
    clock.t += 1.0
    assert b.take("a") == 0  # one whole token
    assert b.take("b") == 0  # another client has its own bucket
    clock.t += 3600
    assert [b.take("a") for _ in range(4)][:3] == [0, 0, 0]  # refilled to the burst, not beyond


async def _ok_app(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def _post(app, path, client_ip):
    async def go():
        transport = httpx.ASGITransport(app=app, client=(client_ip, 1234))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            return await c.post(path)
    return asyncio.run(go())


def test_rate_limit_per_client_on_expensive_routes_only():
    clock = FakeClock(1000.0)
    app = RateLimitMiddleware(_ok_app, per_minute=6, burst=2, clock=clock)  # one every 10 s
    for path in ("/api/generate", "/api/generate/stream", "/api/steer", "/api/discover/jobs", "/fragments/steering",
                 "/discover/run", "/api/explorations/abc/rerun", "/api/experiments/run", "/api/atlas/build"):
        clock.t += 1000
        codes = [_post(app, path, "10.0.0.1").status_code for _ in range(3)]
        assert codes == [200, 200, 429], path
    r = _post(app, "/api/generate", "10.0.0.1")
    assert r.status_code == 429 and r.headers["retry-after"] == "10" and "rate_limit_per_minute=6" in r.text
    assert _post(app, "/api/generate", "10.0.0.2").status_code == 200  # per client
    for cheap in ("/api/analyze", "/api/explorations", "/e/save", "/api/discover/jobs/x/cancel"):
        assert all(_post(app, cheap, "10.0.0.1").status_code == 200 for _ in range(5)), cheap
    clock.t += 10
    assert _post(app, "/api/generate", "10.0.0.1").status_code == 200


def test_rate_limit_in_the_app(tiny_engine):
    with make_client(tiny_engine, rate_limit_per_minute=1, rate_limit_burst=2) as c:
        body = {"prompt": "Hi", "max_new_tokens": 1}
        codes = [c.post("/api/generate", json=body).status_code for _ in range(3)]
        assert codes[:2] == [200, 200] and codes[2] == 429
        r = c.post("/api/generate", json=body)
        assert 1 <= int(r.headers["retry-after"]) <= 60
        assert c.post("/api/analyze", json={"prompt": "Hi"}).status_code == 200  # not an expensive route
