"""Isolation: 8 concurrent clients mixing steered and plain requests against a live server (tiny profile);
every plain result equals its single-client baseline, and nothing is left attached afterwards.
Figures: test-artifacts/reliability/isolation_<n>.json."""
from __future__ import annotations

import collections
import concurrent.futures as cf
import random
import time

import httpx
import pytest

from tests.reliability.conftest import iter_api_routes, report

PLAIN = [("/api/analyze", {"prompt": f"plain prompt number {i}", "top_k": 4}) for i in range(5)] + \
        [("/api/generate", {"prompt": f"tell me {i}", "max_new_tokens": 6}) for i in range(3)]
STEERED = [("/api/steer", {"prompt": f"tell me {i}", "max_new_tokens": 6,
                           "steering": [{"sae": "coarse", "index": i, "value": 40.0}]}) for i in range(3)]


def _comparable(path, js):
    if path == "/api/generate":
        g = js["generation"]
        return [t["id"] for t in g["tokens"]] if "tokens" in g else g
    return js


def run_isolation(srv, app, clients: int, total: int, seed: int = 0) -> dict:
    paths = {p for p, _ in iter_api_routes(app)}
    plain = [(p, b) for p, b in PLAIN if p in paths]
    steered = [(p, b) for p, b in STEERED if p in paths] or [("/api/analyze", {"prompt": "x" * 40, "top_k": 50})]
    with httpx.Client(base_url=srv.url, timeout=120) as c:
        baseline = {}
        for p, b in plain:
            r = c.post(p, json=b)
            assert r.status_code == 200, r.text
            baseline[(p, str(b))] = _comparable(p, r.json())
    rng = random.Random(seed)
    jobs = [rng.choice(plain) if rng.random() < 0.5 else rng.choice(steered) for _ in range(total)]
    statuses, mismatches = collections.Counter(), []

    def worker(k):
        out = []
        with httpx.Client(base_url=srv.url, timeout=120) as c:
            for j in range(k, len(jobs), clients):
                p, b = jobs[j]
                r = c.post(p, json=b)
                out.append((p, b, r.status_code, r.json() if r.status_code == 200 else r.text))
        return out

    t0 = time.perf_counter()
    with cf.ThreadPoolExecutor(clients) as ex:
        results = [x for f in [ex.submit(worker, k) for k in range(clients)] for x in f.result()]
    for p, b, code, js in results:
        statuses[code] += 1
        if code == 200 and (p, str(b)) in baseline and _comparable(p, js) != baseline[(p, str(b))]:
            mismatches.append(f"{p} {b['prompt']}")
    return {"clients": clients, "requests": len(results), "statuses": dict(statuses),
            "plain": sum(1 for p, b, *_ in results if (p, str(b)) in baseline),
            "plain_mismatches": len(mismatches), "examples": mismatches[:5], "seconds": round(time.perf_counter() - t0, 1)}


@pytest.mark.parametrize("total", [pytest.param(80, id="80"), pytest.param(400, id="400", marks=pytest.mark.slow)])
def test_concurrent_plain_results_equal_single_client_baseline(live_app, tiny_engine, total):
    srv, app = live_app
    fig = run_isolation(srv, app, clients=8, total=total)
    report(f"isolation_{total}", fig)
    assert fig["requests"] == total
    assert set(fig["statuses"]) <= {200, 503}, fig["statuses"]
    assert fig["statuses"].get(200, 0) >= 0.9 * total  # 8 clients never overflow the queue of 8
    assert fig["plain_mismatches"] == 0, fig["examples"]
    assert tiny_engine.attached_hooks() == 0 and not tiny_engine.busy
