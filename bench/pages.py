"""Cold page loads in Debian chromium, this checkout against another (the code before), both serving the embedded
profile with its atlas at once, loads interleaved; and this server's peak RSS.

    .venv/bin/python bench/pages.py --baseline-root DIR [--reps 5] [--json out.json]

DIR: a checkout of the code to compare with (e.g. `git worktree add /tmp/base main`, with data/models linked).
Every load is cold (a new browser context: empty cache) unless its name says "cached" (the same page again in that
context). Per page and server: time to the load event (Analyze, `/`: goal <= 1 s) or to the map drawn (`/map`:
map.js's data-readyAt, first paint), and the bytes that crossed the wire (each response's encoded body + headers,
as chromium counts them; goal for Analyze <= 1.5 MB). Then a few analyses with the lens, /map and a feature page on
this server, and its peak RSS (VmHWM; goal <= 2.5 GB with the atlas loaded). Load average recorded before/after.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conftest import free_port  # noqa: E402

PAGES = {"/": "analyze", "/map": "map"}
PROMPTS = ["The capital of France is Paris, and the Eiffel Tower stands on the Seine.",
           "Water boils at 100 degrees Celsius at sea level, and freezes at zero.",
           "def add(a, b):\n    return a + b\n\nprint(add(2, 3))"]


def start(root: Path, tmp: Path, name: str):
    """`python -m app serve` from checkout `root` on a free port with a throwaway store -> (process, base URL)."""
    import httpx

    port = free_port()
    env = {**os.environ, "ASN_STORE_URL": f"sqlite:///{tmp / (name + '.db')}", "PYTHONPATH": str(root)}
    proc = subprocess.Popen([sys.executable, "-m", "app", "serve", "--profile", "smollm2-135m", "--host", "127.0.0.1",
                             "--port", str(port)], cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 600
    while time.time() < deadline:
        try:
            if httpx.get(base + "/health", timeout=5).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise SystemExit(f"{name} server exited ({proc.returncode})")
        time.sleep(1)
    raise SystemExit(f"{name} server did not start")


def vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def load(browser, base: str, path: str) -> dict:
    """One cold load (new context), then the same page again in that context ("cached")."""
    out = {}
    ctx = browser.new_context(viewport={"width": 1440, "height": 900})
    page = ctx.new_page()
    for label in ("cold", "cached"):
        sizes: list[int] = []

        def on_finished(req, sizes=sizes):
            s = req.sizes()
            sizes.append(s["responseBodySize"] + s["responseHeadersSize"])

        page.on("requestfinished", on_finished)
        if path == "/map":
            page.goto(base + path, wait_until="commit")
            page.wait_for_selector('#map-main[data-ready="1"]', timeout=300_000)
            t = float(page.evaluate("document.getElementById('map-main').dataset.readyAt")) / 1000
            page.wait_for_load_state("load")
        else:
            page.goto(base + path, wait_until="load")
            t = page.evaluate("performance.getEntriesByType('navigation')[0].loadEventEnd") / 1000
        page.wait_for_timeout(300)  # late requests (a lazily fetched script) are counted too
        page.remove_listener("requestfinished", on_finished)
        out[label] = {"s": t, "bytes": sum(sizes), "requests": len(sizes)}
    ctx.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline-root", type=Path, required=True)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--pages", default=",".join(PAGES), help="comma-separated, of: " + ", ".join(PAGES))
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    pages = {p: PAGES[p] for p in args.pages.split(",")}
    import httpx
    from playwright.sync_api import sync_playwright

    tmp = Path(tempfile.mkdtemp(prefix="asn-pages-bench-"))
    servers = {}
    try:
        servers["ours"] = start(ROOT, tmp, "ours")
        servers["before"] = start(args.baseline_root.resolve(), tmp, "before")
        for _, base in servers.values():  # server-side warm-up (figure caches, first-request imports): not the browser's
            for path in pages:
                httpx.get(base + path, timeout=300)
        load_before = os.getloadavg()
        runs: dict = {}
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=[
                "--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
                "--disable-background-networking", "--disable-component-update", "--disable-sync"])
            for rep in range(args.reps):
                for path, label in pages.items():
                    order = list(servers.items())
                    for who, (_, base) in (order if rep % 2 == 0 else order[::-1]):  # alternate who goes first
                        got = load(browser, base, path)
                        for kind, g in got.items():
                            name = f"{label}{' (cached)' if kind == 'cached' else ''}, {who}"
                            runs.setdefault(name, []).append(g)
            browser.close()
        load_after = os.getloadavg()
        proc, base = servers["ours"]
        with httpx.Client(base_url=base, timeout=300) as c:  # exercise the server before reading its peak RSS
            for prompt in PROMPTS:
                assert c.post("/api/analyze", json={"prompt": prompt, "lens": True}).status_code == 200
            c.get("/map"), c.get("/features/fine/1"), c.get("/search?q=Paris")
        rss = {who: vm_hwm_mb(pr.pid) for who, (pr, _) in servers.items()}
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(timeout=60)
    res = {"runs": {}, "load_average_before": load_before, "load_average_after": load_after,
           "server_peak_rss_mb": rss["ours"], "server_peak_rss_mb_before": rss["before"],
           "atlas": "data/atlas/smollm2-135m", "reps": args.reps}
    for name, rs in runs.items():
        res["runs"][name] = {"p50_s": round(statistics.median(r["s"] for r in rs), 3),
                             "p50_bytes": int(statistics.median(r["bytes"] for r in rs)),
                             "requests": rs[0]["requests"], "runs_s": [round(r["s"], 3) for r in rs]}
    for label in pages.values():
        for kind in ("", " (cached)"):
            o, b = res["runs"][f"{label}{kind}, ours"], res["runs"][f"{label}{kind}, before"]
            res["runs"][f"{label}{kind}, ours"].update(ratio_s=round(o["p50_s"] / b["p50_s"], 3),
                                                       ratio_bytes=round(o["p50_bytes"] / max(b["p50_bytes"], 1), 3))
    for name, r in res["runs"].items():
        extra = f"  x{r['ratio_s']:.2f} time, x{r['ratio_bytes']:.3f} bytes of before" if "ratio_s" in r else ""
        print(f"{name:28s} p50 {r['p50_s']:6.3f} s  {r['p50_bytes'] / 1e6:7.3f} MB  {r['requests']:3d} requests{extra}")
    print(f"server peak RSS: ours {rss['ours']:.0f} MB, before {rss['before']:.0f} MB; load {load_before} -> {load_after}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
