"""Many users at once: the server on a profile (default: the embedded SmolLM2), 8 simulated users for 60 s, twice:
without and then with a discovery job running in the background.

    .venv/bin/python bench/serve.py [--profile smollm2-135m] [--users 8] [--seconds 60] [--json out.json]

Each user loops over what a person on the dashboard does: analyse a prompt never sent before and then ask for its logit lens,
open a feature card with the prompt's activations, or run a short steer (8 greedy tokens). In the second phase
one more client keeps a discovery job running (100 + 100 prompts, made unique per job so the collection cache
never answers) and polls it. Reported per phase and route: n, p50 / p95 latency (ms), errors; throughput
(requests/s); jobs finished; the ratio p95(analysis with a job) / p95(analysis without) (goal <= 2: interactive
requests are served between the job's batches); and the server's peak RSS (VmHWM) with the atlas status.
Standard library only (urllib + threads); the server is a subprocess on 127.0.0.1 with a throwaway store.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = [
    "The capital of France is Paris, and the Seine runs through it.",
    "Water boils at one hundred degrees Celsius at sea level.",
    "The Eiffel Tower was built for the 1889 World's Fair in Paris.",
    "My favourite breakfast is toast with butter and a cup of tea.",
    "Photosynthesis turns sunlight, water and carbon dioxide into sugar.",
    "Lyon and Marseille are large cities in the south of France.",
    "The train to Berlin leaves at seven o'clock from platform four.",
    "She wrote a long letter to her grandmother about the summer holidays.",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(base: str, method: str, path: str, body: dict | None = None, timeout: float = 300.0) -> tuple[int, object]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, e.read()[:200]


def vm_hwm_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class Recorder:
    def __init__(self):
        self.lock = threading.Lock()
        self.rows: list[tuple[str, float, int]] = []  # route, seconds, status

    def timed(self, route: str, base: str, method: str, path: str, body=None):
        t0 = time.perf_counter()
        try:
            status, out = call(base, method, path, body)
        except Exception as exc:  # connection errors count as errors
            status, out = 599, str(exc)
        with self.lock:
            self.rows.append((route, time.perf_counter() - t0, status))
        return status, out


def user_loop(base: str, rec: Recorder, stop: threading.Event, seed: int, widths: dict) -> None:
    rng = random.Random(seed)
    n = 0
    while not stop.is_set():
        n += 1  # a prompt not seen before (the server's residual cache would answer a repeated one without a forward)
        prompt = f"{rng.choice(PROMPTS)} ({seed}.{n})"
        r = rng.random()
        if r < 0.5:
            rec.timed("analyze", base, "POST", "/api/analyze", {"prompt": prompt})
            if not stop.is_set():
                rec.timed("lens", base, "POST", "/api/lens", {"prompt": prompt})
        elif r < 0.8:
            sae = rng.choice(sorted(widths))
            idx = rng.randrange(widths[sae])
            q = urllib.parse.urlencode({"prompt": prompt})
            rec.timed("feature card", base, "GET", f"/api/features/{sae}/{idx}?{q}")
        else:
            rec.timed("steer", base, "POST", "/api/steer", {
                "prompt": prompt, "max_new_tokens": 8,
                "steering": [{"sae": "coarse", "index": rng.randrange(widths["coarse"]), "value": 4.0}]})


def job_loop(base: str, rec: Recorder, stop: threading.Event, concept: list[str], contrast: list[str], out: dict) -> None:
    k = 0
    while not stop.is_set():
        k += 1
        body = {"concept_prompts": [f"{p} ({k})" for p in concept], "contrast_prompts": contrast}
        t0 = time.perf_counter()
        status, js = rec.timed("discovery job start", base, "POST", "/api/discover/jobs", body)
        if status not in (200, 202):
            out.setdefault("errors", []).append(str(js)[:200])
            time.sleep(1)
            continue
        jid = js.get("id") or js.get("job_id") or js.get("key")
        while not stop.is_set():
            time.sleep(0.5)
            st, js = call(base, "GET", f"/api/discover/jobs/{jid}")
            if st != 200 or js.get("state") in ("done", "error", "cancelled"):
                break
        if js and isinstance(js, dict) and js.get("state") == "done":
            out.setdefault("job_seconds", []).append(round(time.perf_counter() - t0, 2))
        elif stop.is_set():
            call(base, "POST", f"/api/discover/jobs/{jid}/cancel")
        else:
            out.setdefault("errors", []).append(str(js)[:200])


def summarize(rows: list, wall: float, job_out: dict) -> dict:
    """Per route n, p50 / p95 (ms), errors; throughput over the wall time."""
    routes = {}
    for route in sorted({r for r, _, _ in rows}):
        ts = sorted(s for r, s, st in rows if r == route)
        bad = [st for r, _, st in rows if r == route and not 200 <= st < 300]
        routes[route] = {"n": len(ts), "p50_ms": round(1000 * statistics.median(ts), 1),
                         "p95_ms": round(1000 * ts[min(len(ts) - 1, int(0.95 * len(ts)))], 1), "errors": len(bad),
                         "error_statuses": {str(st): bad.count(st) for st in sorted(set(bad))}}  # 503 = busy, 599 = no answer
    n = len(rows)
    return {"wall_s": round(wall, 1), "requests": n, "throughput_rps": round(n / wall, 2),
            "errors": sum(v["errors"] for v in routes.values()), "routes": routes, "job": job_out}


def phase(base: str, users: int, seconds: float, widths: dict, job: tuple | None, seed0: int = 0) -> tuple[list, float, dict]:
    """users (and the job client) for `seconds` -> (rows (route, seconds, status), wall seconds, job figures)."""
    rec, stop, job_out = Recorder(), threading.Event(), {}
    threads = [threading.Thread(target=user_loop, args=(base, rec, stop, seed0 + u, widths), daemon=True) for u in range(users)]
    if job is not None:
        threads.append(threading.Thread(target=job_loop, args=(base, rec, stop, *job, job_out), daemon=True))
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join(timeout=600)
    return rec.rows, time.perf_counter() - t0, job_out


def start_server(root: Path, profile: str, tmp: str, name: str, timeout: float):
    """`python -m app serve` from checkout `root` on a free port, throwaway store -> (process, base, health, start s)."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = dict(os.environ, ASN_STORE_URL=f"sqlite:///{tmp}/{name}.db", PYTHONPATH=str(root))
    server = subprocess.Popen([sys.executable, "-m", "app", "serve", "--profile", profile, "--host", "127.0.0.1",
                               "--port", str(port)], cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if server.poll() is not None:
            raise SystemExit(f"{name} server exited: {server.stderr.read().decode()[-2000:]}")
        try:
            st, health = call(base, "GET", "/health", timeout=5)
            if st == 200:
                call(base, "POST", "/api/analyze", {"prompt": PROMPTS[0]})  # warm-up: one of each route
                call(base, "POST", "/api/lens", {"prompt": PROMPTS[0]})
                call(base, "POST", "/api/steer", {"prompt": PROMPTS[0], "max_new_tokens": 8,
                                                  "steering": [{"sae": "coarse", "index": 1, "value": 4.0}]})
                return server, base, health, time.perf_counter() - t0
        except OSError:
            pass
        time.sleep(1)
    server.kill()
    raise SystemExit(f"{name} server did not start in time")


def stop_server(server) -> None:
    server.terminate()
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="smollm2-135m")
    ap.add_argument("--users", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--job-prompts", type=int, default=100, help="concept and contrast prompts per discovery job")
    ap.add_argument("--start-timeout", type=float, default=900.0)
    ap.add_argument("--baseline-root", type=Path, help="a checkout of the code before (data/models linked): its server "
                    "serves the same users without a job, in turns with ours")
    ap.add_argument("--rounds", type=int, default=2, help="turns per server with a baseline (who goes first alternates)")
    ap.add_argument("--no-job", action="store_true", help="skip the phase with a discovery job")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)
    sys.path.insert(0, str(ROOT))
    from app.engine import discovery as disc
    from app.engine.profiles import DATA_DIR

    tmp = tempfile.mkdtemp(prefix="asn-bench-serve-")
    servers: dict = {}
    try:
        for who, root in (("ours", ROOT), ("before", a.baseline_root)):
            if root is not None:
                print(f"starting the server ({who}: {root}, {a.profile}) ...")
                servers[who] = start_server(Path(root).resolve(), a.profile, tmp, who, a.start_timeout)
        _, base, health, start_s = servers["ours"]
        widths = {k: int(v) for k, v in (health.get("saes") or {}).items()} or {"coarse": 2048, "fine": 16384}
        fr = disc.parse_prompt_lines((DATA_DIR / "prompts" / "france.txt").read_text())[: a.job_prompts]
        ne = disc.parse_prompt_lines((DATA_DIR / "prompts" / "neutral.txt").read_text())[: a.job_prompts]
        rounds = a.rounds if len(servers) > 1 else 1
        each = a.seconds / rounds
        print(f"servers up ({', '.join(servers)}); {a.users} users x {a.seconds:.0f} s per server ({rounds} turns)"
              + ("" if a.no_job else ", then ours again with a discovery job"))
        load_before = os.getloadavg()
        raw: dict = {who: ([], 0.0) for who in servers}
        for r in range(rounds):
            for who in (list(servers) if r % 2 == 0 else list(servers)[::-1]):
                rows, wall, _ = phase(servers[who][1], a.users, each, widths, None, seed0=1000 * r)
                raw[who] = (raw[who][0] + rows, raw[who][1] + wall)
        quiet_by = {who: summarize(rows, wall, {}) for who, (rows, wall) in raw.items()}
        quiet = quiet_by["ours"]
        busy = None if a.no_job else summarize(*phase(base, a.users, a.seconds, widths, (fr, ne)))
        load_after = os.getloadavg()
        rss = vm_hwm_mb(servers["ours"][0].pid)
    finally:
        for server, *_ in servers.values():
            stop_server(server)
    an_q, an_b = quiet["routes"].get("analyze", {}), (busy or {"routes": {}})["routes"].get("analyze", {})
    ratio = an_b["p95_ms"] / an_q["p95_ms"] if an_q.get("p95_ms") and an_b.get("p95_ms") else None
    res = {"profile": a.profile, "users": a.users, "seconds": a.seconds, "server_start_s": round(start_s, 1),
           "atlas": (health or {}).get("atlas") or (health or {}).get("atlas_status"),
           "without_job": quiet, "with_job": busy, "analysis_p95_ratio_job_vs_none": ratio, "server_peak_rss_mb": rss,
           "load_average_before": load_before, "load_average_after": load_after}
    phases = [("ours, without job", quiet)] + ([("ours, with discovery job", busy)] if busy else [])
    if "before" in quiet_by:
        before = quiet_by["before"]
        res["before"] = {"root": str(a.baseline_root), "without_job": before}
        res["throughput_ratio_vs_before"] = round(quiet["throughput_rps"] / before["throughput_rps"], 3)
        res["p95_ratio_vs_before"] = {rt: round(r["p95_ms"] / before["routes"][rt]["p95_ms"], 3)
                                      for rt, r in quiet["routes"].items() if rt in before["routes"]}
        phases.append(("before, without job", before))
    for name, ph in phases:
        print(f"-- {name}: {ph['requests']} requests in {ph['wall_s']} s = {ph['throughput_rps']} req/s, {ph['errors']} errors")
        print(f"   {'route':22s} {'n':>5} {'p50 ms':>9} {'p95 ms':>9} {'errors':>6}")
        for route, r in ph["routes"].items():
            why = " (" + ", ".join(f"{n} x HTTP {st}" for st, n in r["error_statuses"].items()) + ")" if r["errors"] else ""
            print(f"   {route:22s} {r['n']:>5} {r['p50_ms']:>9.1f} {r['p95_ms']:>9.1f} {r['errors']:>6}{why}")
        if ph["job"]:
            print(f"   discovery jobs finished: {len(ph['job'].get('job_seconds', []))} {ph['job'].get('job_seconds', [])}"
                  f"{'; errors: ' + str(ph['job']['errors']) if ph['job'].get('errors') else ''}")
    if "before" in res:
        print(f"throughput ours / before: {res['throughput_ratio_vs_before']} (goal >= 2); p95 ours / before: "
              f"{res['p95_ratio_vs_before']} (goal <= 1)")
    print(f"analysis p95 with a job / without: {ratio if ratio is None else round(ratio, 2)} (goal <= 2)")
    print(f"load average before {load_before}, after {load_after}")
    print(f"server peak RSS (VmHWM): {rss:.0f} MB on {a.profile} (goal <= 2500); atlas: {res['atlas']}" if rss else "RSS n/a")
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    import urllib.parse  # noqa: F401  (urlencode in user_loop)

    raise SystemExit(main())
