"""Two replicas (two uvicorn processes, tiny profile) on one PostgreSQL store: what one saves or starts, the other
opens, polls, cancels and reads; a replica SIGKILLed mid-job leaves the job failed, not "running" forever.

Marked `replicas` and run in `make test` (about a minute: two server starts + the jobs). Streams (generation)
stay on the replica that started them; only saved explorations and background jobs are shared.
"""
from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.server_process import ServerProcess

HEARTBEAT_S, LEASE_S = 0.5, 6.0  # a lease with room: on a loaded 2-core machine a live beat can lag seconds
SMALL = {"concept_prompts": [f"Paris is in France {i}" for i in range(6)],
         "contrast_prompts": [f"The weather today {i}" for i in range(5)],
         "concept_set": None, "contrast_set": None, "n_coarse": 3, "n_fine": 8, "top_k": 5, "min_fire_rate": 0.2}
# long enough on the tiny model (2 x 600 prompts of ~200 bytes) that it is still running when we act on it
BIG = {**SMALL, "concept_prompts": [f"{i} " + "Paris, Lyon and Marseille are French cities. " * 4 for i in range(600)],
       "contrast_prompts": [f"{i} " + "The weather was mild and the river ran slowly by. " * 4 for i in range(600)]}

pytestmark = [pytest.mark.replicas]


class Replica(ServerProcess):
    def __init__(self, name: str, store_url: str, log_dir: Path):
        super().__init__(name, store_url, log_dir, {"ASN_JOB_HEARTBEAT_S": str(HEARTBEAT_S), "ASN_JOB_LEASE_S": str(LEASE_S)})


@pytest.fixture()
def pair(pg_url, tmp_path):
    a, b = Replica("A", pg_url, tmp_path), Replica("B", pg_url, tmp_path)
    try:
        a.wait_ready()
        b.wait_ready()
        yield a, b
    finally:
        a.stop()
        b.stop()


def poll(client: httpx.Client, job_id: str, until, timeout: float = 120) -> dict:
    end = time.time() + timeout
    while time.time() < end:
        s = client.get(f"/api/discover/jobs/{job_id}")
        assert s.status_code == 200, s.text
        s = s.json()
        if until(s):
            return s
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} never reached the condition; last {s}")


def test_two_replicas_share_explorations_and_jobs(pair):
    a, b = pair
    # save through A, open through B
    inputs = {"prompt": "The capital of France is Paris"}
    result = a.http.post("/api/analyze", json=inputs)
    assert result.status_code == 200, result.text
    saved = a.http.post("/api/explorations", json={"kind": "analysis", "title": "shared", "note": "",
                                                   "inputs": inputs, "result": result.json()})
    assert saved.status_code == 201, saved.text
    eid = saved.json()["id"]
    assert b.http.get(f"/api/explorations/{eid}").json() == a.http.get(f"/api/explorations/{eid}").json()
    page = b.http.get(f"/e/{eid}")
    assert page.status_code == 200 and "shared" in page.text

    # a discovery job started on A is polled and read on B
    r = a.http.post("/api/discover/jobs", json=SMALL)
    assert r.status_code == 202, r.text
    jid = r.json()["job_id"]
    s = poll(b.http, jid, lambda s: s["state"] not in ("queued", "running"))
    assert s["state"] == "done" and s["done"] == s["total"] == 11
    res_b = b.http.get(f"/api/discover/jobs/{jid}/result")
    assert res_b.status_code == 200 and res_b.json() == a.http.get(f"/api/discover/jobs/{jid}/result").json()
    again = b.http.post("/api/discover/jobs", json=SMALL).json()  # same inputs on B: answered from the store
    assert again["cached"] and again["state"] == "done"

    # a long job on A, cancelled through B
    jid = a.http.post("/api/discover/jobs", json=BIG).json()["job_id"]
    poll(b.http, jid, lambda s: s["state"] == "running" and s["done"] > 0)
    assert b.http.post(f"/api/discover/jobs/{jid}/cancel").status_code == 200
    s = poll(b.http, jid, lambda s: s["state"] != "running", timeout=30)
    assert s["state"] == "cancelled" and s["done"] < s["total"] == 1200
    assert a.http.get(f"/api/discover/jobs/{jid}").json()["state"] == "cancelled"
    assert b.http.get(f"/api/discover/jobs/{jid}/result").status_code == 409

    # A is SIGKILLed during a job: B sees it settle as failed within the lease, never "running" forever
    big2 = {**BIG, "n_coarse": 4}
    jid = a.http.post("/api/discover/jobs", json=big2).json()["job_id"]
    poll(b.http, jid, lambda s: s["state"] == "running" and s["done"] > 0)
    a.proc.send_signal(signal.SIGKILL)
    a.proc.wait(timeout=10)
    t0 = time.time()
    s = poll(b.http, jid, lambda s: s["state"] != "running", timeout=LEASE_S * 10)
    settle = time.time() - t0
    assert s["state"] == "error" and "stopped responding" in s["error"], s
    assert settle < LEASE_S + 5, settle
    print(f"job of the killed replica settled on B after {settle:.2f} s (lease {LEASE_S} s)")
    # and the same inputs can run again, now on B
    fresh = b.http.post("/api/discover/jobs", json=big2).json()
    assert fresh["job_id"] != jid and fresh["state"] in ("queued", "running")
    b.http.post(f"/api/discover/jobs/{fresh['job_id']}/cancel")


def test_a_pasted_set_link_opens_on_the_other_replica(pair):
    """A Discover run on pasted sets through A pushes a `sha:` address; B (another process, same store) opens it with
    the pasted prompts in its form (they used to live in A's memory only: "not on this server any more")."""
    a, b = pair
    # too long to travel inline in the address: it goes by content hash
    concept = [f"Recipe {i}: whisk the eggs with the sugar, simmer the sauce and knead the dough until smooth." for i in range(50)]
    contrast = [f"Note {i}: the train leaves at noon, a spider has eight legs and the sky is blue today." for i in range(50)]
    r = a.http.post("/discover/run", data={"concept_set": "custom", "concept_text": "\n".join(concept),
                                           "contrast_set": "custom", "contrast_text": "\n".join(contrast)})
    assert r.status_code == 200, r.text
    link = r.headers["HX-Push-Url"]
    assert "concept_set=sha%3A" in link and "contrast_set=sha%3A" in link
    page = b.http.get(link)
    assert page.status_code == 200
    assert "not on this server" not in page.text and "no pasted set" not in page.text
    for p in concept + contrast:
        assert p in page.text
