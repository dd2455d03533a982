"""A stop request does not wait out work in flight (issue 30, item 3): a real uvicorn process (tiny profile, its own
SQLite store) gets SIGTERM while a synchronous experiment and a discovery job run; it exits within 10 s, the
synchronous request is answered 503 + Retry-After, and both runs are recorded in the store as interrupted, so the
same inputs start afresh on another server (here an app on the same store)."""
from __future__ import annotations

import signal
import sqlite3
import threading
import time

import httpx

from tests.conftest import make_client, until
from tests.server_process import ServerProcess

# minutes of work on the tiny model: 64 prompts x 67 conditions x 128 tokens (the token limit raised for it)
EXPERIMENT = {"anchor": 0, "eval_prompts": [f"Prompt number {i} about the weather" for i in range(64)], "n_prompts": 64,
              "strengths": [1, 2, 3, 4, 5, 6], "modes": ["add", "clamp"], "max_new_tokens": 128}
DISCOVERY = {"concept_prompts": [f"{i} " + "Paris, Lyon and Marseille are French cities. " * 4 for i in range(600)],
             "contrast_prompts": [f"{i} " + "The weather was mild and the river ran slowly by. " * 4 for i in range(600)],
             "concept_set": None, "contrast_set": None, "n_coarse": 3, "n_fine": 8, "top_k": 5, "min_fire_rate": 0.2}


def jobs_in(db) -> dict[str, dict]:
    """kind -> the newest job row of that kind, read straight from the SQLite file."""
    with sqlite3.connect(db, timeout=30) as conn:
        conn.row_factory = sqlite3.Row
        rows = conn.execute("SELECT id, kind, state, done, total, error FROM jobs ORDER BY created").fetchall()
    return {r["kind"]: dict(r) for r in rows}


def test_sigterm_interrupts_a_synchronous_experiment_and_a_discovery_job(tmp_path, tiny_engine):
    db = tmp_path / "store.db"
    url = f"sqlite:///{db}"
    server = ServerProcess("stop", url, tmp_path, {"ASN_LIMIT_MAX_EXPERIMENT_TOKENS": "100000000"})
    answer: dict = {}
    try:
        server.wait_ready()

        def synchronous():
            try:
                answer["response"] = server.http.post("/api/experiment", json=EXPERIMENT, timeout=600)
            except httpx.HTTPError as exc:
                answer["error"] = exc

        caller = threading.Thread(target=synchronous, daemon=True)
        caller.start()
        # the synchronous run is a job of its request's thread: it shows in the store while it runs
        until(lambda: (j := jobs_in(db).get("experiment")) and j["state"] == "running" and j["done"] > 0, 300,
              "the synchronous experiment making progress")
        r = server.http.post("/api/discover/jobs", json=DISCOVERY)
        assert r.status_code == 202, r.text
        jid = r.json()["job_id"]
        until(lambda: (s := server.http.get(f"/api/discover/jobs/{jid}").json())["state"] == "running"
              and s["done"] > 0, 300, "the discovery job making progress")

        t0 = time.time()
        server.proc.send_signal(signal.SIGTERM)
        try:
            server.proc.wait(timeout=60)
        finally:
            took = time.time() - t0
            print(f"exited {took:.2f} s after SIGTERM")
        assert took < 10, f"{took:.1f} s to exit after SIGTERM:\n{server.log_text()[-3000:]}"
    finally:
        server.stop()
        caller_alive = "caller" in locals() and caller.is_alive()

    assert not caller_alive
    # the synchronous request was answered, not dropped: 503 + Retry-After (retry on another replica)
    assert "response" in answer, answer
    resp = answer["response"]
    assert resp.status_code == 503 and int(resp.headers["retry-after"]) > 0, resp.text
    assert "shutting down" in resp.json()["detail"]

    jobs = jobs_in(db)
    for kind in ("experiment", "discovery"):
        job = jobs[kind]
        assert job["state"] == "interrupted", job
        assert "stopped before it finished" in job["error"] and 0 < job["done"] < job["total"], job
    assert jobs["discovery"]["id"] == jid

    # another server on the same store reads the interrupted job, and the same inputs run afresh there
    with make_client(tiny_engine, store_url=url) as other:
        seen = other.get(f"/api/discover/jobs/{jid}").json()
        assert seen["state"] == "interrupted" and seen["error"] == jobs["discovery"]["error"]
        again = other.post("/api/discover/jobs", json=DISCOVERY).json()
        assert again["job_id"] != jid and again["state"] in ("queued", "running") and not again["cached"]
        other.post(f"/api/discover/jobs/{again['job_id']}/cancel")
