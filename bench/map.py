"""The activation-space map on the embedded profile, in one process: layout build, page payload and first paint,
prompt path latency.

    .venv/bin/python bench/map.py layout [--baseline] [--json out.json]    # build time for 2,048 + 16,384 points
    .venv/bin/python bench/map.py page --layout DIR [--reps 5] [--json out.json]
    .venv/bin/python bench/map.py path --layout DIR [--reps 15] [--json out.json]
    .venv/bin/python bench/map.py web [--layout DIR]        # page + path, one server (default DIR: data/atlas)

layout: our build (exact cosine kNN by blocked matmul -> UMAP on that graph -> HDBSCAN regions -> neighbour
preservation@10) on the shipped SAEs' decoders (random decoders of the same shapes when they are missing);
--baseline also runs the notebook way, umap.UMAP(metric="cosine", random_state=0).fit_transform(W) with its own
approximate neighbour search, in the same process (ratio = ours / baseline). Writes layout.npz to --out (a tmp dir).
page: the app with the embedded engine and the layout in DIR (DIR/<profile>/layout.npz), served by uvicorn on
127.0.0.1; /map's HTML payload (bytes, gzip bytes) and Debian chromium's time to the map drawn (Plotly's first
afterplot of 18k WebGL points; SwiftShader, no GPU; the renderer and any CSP refusals are reported), against the
Analyze page (/) loaded the same way in the same browser (baseline).
path: POST /api/map/path p50 (a prompt placed on the map) against POST /api/analyze on the same prompt (baseline),
interleaved.
"""
from __future__ import annotations

import argparse
import gzip
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import interleave, peak_rss_mb, summary  # noqa: E402

PROMPT = "The capital of France is Paris, and the Eiffel Tower stands on the banks of the Seine in the heart of the city."
PROFILE = "smollm2-135m"


def decoders():
    from app.cli.map import load_decoders
    from app.engine.loading import ProfileUnavailable

    try:
        decs, fp, profile = load_decoders(PROFILE)
        return decs, fp, "shipped SAEs"
    except ProfileUnavailable:
        rng = np.random.default_rng(0)
        return {"coarse": rng.standard_normal((2048, 576)), "fine": rng.standard_normal((16384, 576))}, "", "random (SAEs missing)"


def bench_layout(args) -> dict:
    from app.cli.map import map_fingerprint
    from app.engine.layout import build_layout, save_layout
    from app.engine.profiles import get_profile

    decs, fp, kind = decoders()
    n = sum(d.shape[0] for d in decs.values())
    t0 = time.perf_counter()
    lay = build_layout(decs, seed=0, fingerprint=map_fingerprint(get_profile(PROFILE), fp) if fp else "")
    ours = time.perf_counter() - t0
    out = {"points": n, "decoders": kind, "ours_s": round(ours, 1), "preservation": lay.preservation,
           "regions": len(lay.regions), "clustered": float((lay.cluster >= 0).mean()), "params": lay.params}
    if args.out:
        save_layout(Path(args.out) / PROFILE, lay)
        out["written"] = str(Path(args.out) / PROFILE / "layout.npz")
    if args.baseline:
        import warnings

        import umap

        from app.engine.layout import cosine_knn, neighbour_preservation, planar_knn, unit_rows

        X = np.vstack([unit_rows(d) for d in decs.values()])
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            Y = umap.UMAP(metric="cosine", random_state=0).fit_transform(X)
        base = time.perf_counter() - t0
        knn = cosine_knn(X, 10)[0]
        out.update(baseline_s=round(base, 1), ratio=round(ours / base, 3),
                   baseline_preservation=neighbour_preservation(knn, planar_knn(Y, 10)))
    out["peak_rss_mb"] = round(peak_rss_mb())
    return out


def serve(layout_root: Path):
    """The app on the embedded engine with its atlas root at layout_root (context manager -> base URL)."""
    from app.core.settings import Settings
    from app.engine.engine import Engine
    from app.main import create_app
    from tests.conftest import serve_app

    engine = Engine.build(PROFILE, "cpu", atlas_root=layout_root)
    settings = Settings(profile=PROFILE, atlas_root=layout_root, store_url=f"sqlite:///{layout_root / 'bench.db'}")
    return engine, serve_app(create_app(settings, engine_factory=lambda s: engine), start_timeout_s=300)


def bench_page(args, engine, base) -> dict:
    import httpx
    from playwright.sync_api import sync_playwright

    out: dict = {}
    html = httpx.get(base + "/map", timeout=120).content
    assert b'id="map-main"' in html, html[:400]
    out["map_html_bytes"] = len(html)
    out["map_html_gzip_bytes"] = len(gzip.compress(html, 6))
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=[
            "--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        page = browser.new_page(viewport={"width": 1440, "height": 900})
        # CSP refusals (an eval in a script: WebGL's shader compiler in a non-strict Plotly) would mean an SVG map
        page.add_init_script("window.__csp = []; document.addEventListener('securitypolicyviolation', "
                             "e => window.__csp.push(e.violatedDirective + ' ' + e.sourceFile));")
        # the same browser page throughout: plotly.js and the assets come from its cache (bench/pages.py: cold loads)
        times: dict[str, list] = {"map (cached)": [], "analyze (cached)": []}
        seen = {"renderer": set(), "csp": set()}

        def load_map():
            page.goto(base + "/map", wait_until="commit")
            page.wait_for_selector('#map-main[data-ready="1"]', timeout=120_000)
            # map.js stamps the moment the map and the paths are drawn (ms since navigation start)
            got = page.evaluate("(() => { const el = document.getElementById('map-main'); "
                                "return [el.dataset.readyAt, el.dataset.renderer, window.__csp]; })()")
            seen["renderer"].add(got[1])
            seen["csp"].update(got[2])
            return float(got[0]) / 1000

        def load_analyze():
            page.goto(base + "/", wait_until="load")
            return page.evaluate("performance.now()") / 1000

        load_map()  # warm: server-side figure cache, browser cache of plotly.min.js
        for _ in range(args.reps):
            times["map (cached)"].append(load_map())
            times["analyze (cached)"].append(load_analyze())
        browser.close()
    out.update({k: {"p50_s": round(statistics.median(v), 3), "runs_s": [round(x, 3) for x in v]} for k, v in times.items()})
    out["ratio_p50"] = round(out["map (cached)"]["p50_s"] / out["analyze (cached)"]["p50_s"], 2)
    out["renderer"] = sorted(seen["renderer"])  # ["webgl"]: the scattergl map really drew with WebGL
    out["csp_violations"] = sorted(seen["csp"])
    out["points"] = sum(int(s.W_dec.shape[0]) for s in engine.saes.values())
    return out


def bench_path(args, engine, base) -> dict:
    import httpx

    with httpx.Client(base_url=base, timeout=120) as c:
        n_tok = len(engine.tokenizer.encode(PROMPT, add_special_tokens=False))

        seen = [0]

        def fresh() -> str:  # a prompt not seen before: no residual cache answers it
            seen[0] += 1
            return f"{PROMPT} ({seen[0]})"

        def path():
            r = c.post("/api/map/path", json={"prompt": fresh()})
            assert r.status_code == 200, r.text[:300]

        def analyze():
            r = c.post("/api/analyze", json={"prompt": fresh(), "top_k": 5})
            assert r.status_code == 200, r.text[:300]

        path(), analyze()
        res = summary(interleave({"analyze": analyze, "map_path": path}, args.reps), "analyze")
    res["tokens"] = n_tok
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("part", choices=["layout", "page", "path", "web"], help="web = page + path with one server")
    ap.add_argument("--baseline", action="store_true", help="layout: also time plain umap-learn (minutes)")
    ap.add_argument("--out", default=None, help="layout: folder to write <profile>/layout.npz into")
    ap.add_argument("--layout", default=str(ROOT / "data" / "atlas"),
                    help="page/path: folder holding <profile>/layout.npz (default: the shipped atlas, whose other files "
                         "come along so the map shows its labels)")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    if args.part == "layout":
        res = bench_layout(args)
    else:
        root = Path(tempfile.mkdtemp(prefix="asn-map-bench-"))
        (root / PROFILE).mkdir()
        src = Path(args.layout) / PROFILE
        for f in src.iterdir():  # the atlas beside the layout (labels, density), linked, not copied
            if f.is_file() and f.name != "layout.npz":
                (root / PROFILE / f.name).symlink_to(f.resolve())
        shutil.copy(src / "layout.npz", root / PROFILE / "layout.npz")
        engine, server = serve(root)
        res = {}
        with server as base:
            if args.part in ("page", "web"):
                res["page"] = bench_page(args, engine, base)
            if args.part in ("path", "web"):
                res["path"] = bench_path(args, engine, base)
        shutil.rmtree(root, ignore_errors=True)
    text = json.dumps(res, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text)


if __name__ == "__main__":
    main()
