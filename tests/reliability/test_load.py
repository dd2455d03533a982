"""Load against a live uvicorn server on 127.0.0.1 (tiny profile), with a discovery job running.

Phase 1: N users for T s -> 0 failures (a failure is anything but 200 or 503 + Retry-After; 503s are counted
separately), p50/p99 reported. Phase 2: 5x the users -> only 200 or 503 + Retry-After, no timeouts; then the
server answers 200 again within 10 s. The default run is short (8 users x 4 s, 40 x 3 s); `make load` runs the
full one (8 users x 120 s, 40 x 60 s; marked `load`). bench/load/locustfile.py is the same mix for locust.
Figures: test-artifacts/reliability/load_<name>.json.
"""
from __future__ import annotations

import collections
import random
import threading
import time

import httpx
import pytest

from tests.reliability.conftest import iter_api_routes, report

PROMPTS = ["The capital of France is", "Once upon a time", "def add(a, b):", "Le chat est sur la table"]


def mix(paths, rng):
    r = rng.random()
    if r < 0.1:
        return "GET", "/health", None
    if r < 0.45 and "/api/steer" in paths:
        return "POST", "/api/steer", {"prompt": rng.choice(PROMPTS), "max_new_tokens": 6,
                                      "steering": [{"sae": "coarse", "index": rng.randrange(16), "value": 8.0}]}
    return "POST", "/api/analyze", {"prompt": rng.choice(PROMPTS), "top_k": 5}


def run_load(url, paths, users: int, seconds: float, timeout_s: float = 30.0) -> dict:
    lock = threading.Lock()
    lat, statuses, failures = [], collections.Counter(), []
    clients = [httpx.Client(base_url=url, timeout=timeout_s) for _ in range(users)]  # built before the clock starts
    ready = threading.Barrier(users + 1)
    stop = [0.0]

    def user(k):
        rng = random.Random(k)
        ready.wait()
        with clients[k] as c:
            while time.monotonic() < stop[0]:
                method, path, body = mix(paths, rng)
                t0 = time.perf_counter()
                try:
                    r = c.request(method, path, json=body)
                    code, ra = r.status_code, r.headers.get("retry-after")
                except httpx.TimeoutException:
                    code, ra = "timeout", None
                except httpx.HTTPError as exc:
                    code, ra = type(exc).__name__, None
                dt = time.perf_counter() - t0
                with lock:
                    statuses[code] += 1
                    if code == 200:
                        lat.append(dt)
                    elif not (code == 503 and ra):
                        failures.append(f"{method} {path} -> {code}")
                if code == 503:
                    time.sleep(min(float(ra or 1), 1.0) * rng.random())  # a polite client backs off a little

    threads = [threading.Thread(target=user, args=(k,)) for k in range(users)]
    for t in threads:
        t.start()
    stop[0] = time.monotonic() + seconds
    ready.wait()
    for t in threads:
        t.join()
    lat.sort()

    def pct(p):
        return round(lat[min(len(lat) - 1, int(p * len(lat)))] * 1000, 1) if lat else None

    return {"users": users, "seconds": seconds, "requests": sum(statuses.values()),
            "statuses": {str(k): v for k, v in statuses.items()}, "failures": len(failures), "examples": failures[:5],
            "p50_ms": pct(0.50), "p99_ms": pct(0.99), "rps": round(sum(statuses.values()) / seconds, 1)}


def recovery_seconds(url, limit_s: float = 10.0) -> float | None:
    t0 = time.perf_counter()
    with httpx.Client(base_url=url, timeout=limit_s) as c:
        while time.perf_counter() - t0 < limit_s:
            try:
                if c.post("/api/analyze", json={"prompt": "are you back?"}).status_code == 200:
                    return round(time.perf_counter() - t0, 2)
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
    return None


def start_discovery(url, paths) -> str | None:
    if "/api/discover/jobs" not in paths:
        return None
    r = httpx.post(url + "/api/discover/jobs", json={}, timeout=30)
    assert r.status_code in (200, 202), r.text
    return r.json().get("id") or r.json().get("job_id")


def run_scenario(live_app, name, users, seconds, burst_users, burst_seconds) -> dict:
    srv, app = live_app
    paths = {p for p, _ in iter_api_routes(app)}
    job = start_discovery(srv.url, paths)
    steady = run_load(srv.url, paths, users, seconds)
    job_state = httpx.get(f"{srv.url}/api/discover/jobs/{job}", timeout=10).json().get("state") if job else None
    burst = run_load(srv.url, paths, burst_users, burst_seconds)
    rec = recovery_seconds(srv.url)
    if job:
        httpx.post(f"{srv.url}/api/discover/jobs/{job}/cancel", timeout=10)
    fig = {"steady": steady, "burst": burst, "recovery_s": rec, "discovery_job": job, "job_state_after_steady": job_state}
    report(f"load_{name}", fig)
    return fig


def check(fig):
    s, b = fig["steady"], fig["burst"]
    assert s["failures"] == 0, s["examples"]
    assert s["statuses"].get("200", 0) > 0
    assert b["failures"] == 0, b["examples"]  # only 200 or 503 + Retry-After; no timeouts, no errors
    assert set(b["statuses"]) <= {"200", "503"}, b["statuses"]
    assert fig["recovery_s"] is not None and fig["recovery_s"] <= 10.0


def test_load_short(live_app, tiny_engine):
    fig = run_scenario(live_app, "short", users=8, seconds=4, burst_users=40, burst_seconds=3)
    check(fig)
    assert tiny_engine.attached_hooks() == 0


@pytest.mark.load
def test_load_full(live_app, tiny_engine):
    fig = run_scenario(live_app, "full", users=8, seconds=120, burst_users=40, burst_seconds=60)
    check(fig)
    assert tiny_engine.attached_hooks() == 0
