"""Load profile for the dashboard (tiny profile on 127.0.0.1; see tests/reliability/test_load.py and `make load`).

Users mix plain analysis, steered generation and health checks; a 503 with Retry-After is the documented
"busy" answer and counts as success here (the load test counts it separately), anything else is a failure.
    locust -f bench/load/locustfile.py --headless -u 8 -r 8 -t 120s --host http://127.0.0.1:8765 --csv out
"""
from __future__ import annotations

import random

from locust import HttpUser, between, task

PROMPTS = ["The capital of France is", "Once upon a time", "def add(a, b):", "Le chat est sur la table"]


class DashboardUser(HttpUser):
    wait_time = between(0.05, 0.3)

    def _post(self, path, body, name):
        with self.client.post(path, json=body, name=name, catch_response=True, timeout=30) as r:
            if r.status_code == 200 or (r.status_code == 503 and r.headers.get("Retry-After")):
                r.success()
            else:
                r.failure(f"{r.status_code}: {r.text[:120]}")

    @task(5)
    def analyze(self):
        self._post("/api/analyze", {"prompt": random.choice(PROMPTS), "top_k": 5}, "analyze")

    @task(3)
    def steer(self):
        self._post("/api/steer", {"prompt": random.choice(PROMPTS), "max_new_tokens": 6,
                                  "steering": [{"sae": "coarse", "index": random.randrange(16), "value": 8.0}]}, "steer")

    @task(1)
    def health(self):
        self.client.get("/health", name="health")
