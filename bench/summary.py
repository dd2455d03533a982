"""One summary table of the benchmarks' JSON outputs (workload, ours, baseline, ratio, goal, met?), printed and
written to bench/results/<UTC time>-<commit>.json so figures can be compared across commits.

    .venv/bin/python bench/summary.py [RAW_DIR=bench/results/raw] [--label quiet|load] [--out bench/results]

Reads what is there (analyze.json, pages.json, discover.json, batching.json, serve.json from bench/analyze.py,
bench/pages.py, bench/discover.py, bench/batching.py and bench/serve.py); a missing file just leaves its rows out. Lines time a prompt, feature or page
not seen before unless their name says "cached"; both kinds are reported. Other benchmarks' JSON files in RAW_DIR are copied
into the result as they are.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _load(raw: Path, name: str):
    p = raw / f"{name}.json"
    return json.loads(p.read_text()) if p.exists() else None


def rows_of(raw: Path) -> list[dict]:
    rows = []

    def add(workload, ours, baseline, ratio, goal, met, unit=""):
        rows.append({"workload": workload, "ours": ours, "baseline": baseline, "ratio": ratio, "goal": goal,
                     "met": met, "unit": unit})

    a = _load(raw, "analyze")
    if a and "features (cached)" in a["runs"]:  # fresh prompts per round (bench/analyze.py since issue 29)
        r, nb = a["runs"], a["runs"]["notebook"]["p50_ms"]
        la = round(a.get("load_average_before", [0])[0], 1)
        f = r["features"]
        add(f"analysis features, fresh {a['tokens']}-token prompt (p50; load {la})", round(f["p50_ms"], 1), round(nb, 1),
            round(f["ratio_p50"], 3), "<= 0.12x notebook", f["ratio_p50"] <= 0.12, "ms")
        v = r["view+lens"]
        add("view + logit lens complete, fresh prompt (p50)", round(v["p50_ms"], 1), round(nb, 1), round(v["ratio_p50"], 3),
            "<= 0.5x notebook", v["ratio_p50"] <= 0.5, "ms")
        for name in ("view+lens, before (TL forward, fp32 lens)", "features (cached)", "lens (cached)"):
            if name in r:
                add(f"  {name}", round(r[name]["p50_ms"], 1), round(nb, 1), round(r[name]["ratio_p50"], 3), "-", None, "ms")
        add(f"lens top-1 agreement with the fp32 notebook ({a.get('lens_kernel')}, {a.get('lens_cells')} cells)",
            round(a["lens_top1_agreement"], 5), 1.0, None, ">= 0.999", a["lens_top1_agreement"] >= 0.999)
        add("lens max |p - p_notebook| (top 5 shown)", a["lens_max_abs_prob_diff"], 0.0, None, "<= 1e-3",
            a["lens_max_abs_prob_diff"] <= 1e-3)
        if "lens_kl_max_abs_diff" in a:
            add("lens KL to the output: max |KL - KL_notebook| (nats)", a["lens_kl_max_abs_diff"], 0.0, None, "<= 2e-3",
                a["lens_kl_max_abs_diff"] <= 2e-3)
    elif a:  # an older analyze.json (one prompt, cached lens)
        r, nb = a["runs"], a["runs"]["notebook"]["p50_ms"]
        add("analysis features (old bench: residuals cached after the warm-up)", round(r["features"]["p50_ms"], 1), round(nb, 1),
            round(r["features"]["ratio_p50"], 3), "-", None, "ms")
        add("view + logit lens (old bench: lens cached)", round(r["view+lens"]["p50_ms"], 1), round(nb, 1),
            round(r["view+lens"]["ratio_p50"], 3), "-", None, "ms")
    pg = _load(raw, "pages")
    if pg:
        r = pg["runs"]
        la = round(pg.get("load_average_before", [0])[0], 1)
        an_, mp = r["analyze, ours"], r["map, ours"]
        add(f"Analyze (/) cold load, to the load event (load {la})", an_["p50_s"], r["analyze, before"]["p50_s"],
            an_["ratio_s"], "<= 1 s", an_["p50_s"] <= 1.0, "s")
        add("Analyze (/) cold load, bytes transferred", an_["p50_bytes"], r["analyze, before"]["p50_bytes"],
            an_["ratio_bytes"], "<= 1.5 MB", an_["p50_bytes"] <= 1_500_000, "B")
        add("/map cold load, first paint (map drawn)", mp["p50_s"], r["map, before"]["p50_s"], mp["ratio_s"],
            "no worse than before", mp["ratio_s"] <= 1.0, "s")
        add("/map cold load, bytes transferred", mp["p50_bytes"], r["map, before"]["p50_bytes"], mp["ratio_bytes"],
            "no worse than before", mp["ratio_bytes"] <= 1.0, "B")
        for name in ("analyze (cached)", "map (cached)"):
            o, b = r[f"{name}, ours"], r[f"{name}, before"]
            add(f"  {name}: s / bytes", f"{o['p50_s']} / {o['p50_bytes']}", f"{b['p50_s']} / {b['p50_bytes']}",
                o["ratio_s"], "-", None, "")
    pm = _load(raw, "pages-map")  # a second /map-only run (bench/pages.py --pages /map)
    if pm:
        r, la = pm["runs"], round(pm.get("load_average_before", [0])[0], 1)
        for name in ("map", "map (cached)"):
            o, b = r[f"{name}, ours"], r[f"{name}, before"]
            add(f"{name} load, 2nd run (load {la}): first paint", o["p50_s"], b["p50_s"], o["ratio_s"],
                "no worse than before" if name == "map" else "-", o["ratio_s"] <= 1.0 if name == "map" else None, "s")
            add(f"{name} load, 2nd run: bytes transferred", o["p50_bytes"], b["p50_bytes"], o["ratio_bytes"],
                "no worse than before" if name == "map" else "-", o["ratio_bytes"] <= 1.0 if name == "map" else None, "B")
    if pg:
        add("server peak RSS with the atlas (pages bench: pages, 3 analyses with the lens, a feature, search)",
            round(pg["server_peak_rss_mb"]), round(pg["server_peak_rss_mb_before"]), None, "<= 2500 MB",
            pg["server_peak_rss_mb"] <= 2500, "MB")
    d = _load(raw, "discover")
    if d:
        for n, s in d["sizes"].items():
            e, fp = s["runs"]["end to end"], s["runs"]["forward, padded"]
            add(f"discovery {n} prompts end to end", e["tokens_per_s"], fp["tokens_per_s"], e["ratio_to_forward_padded"],
                ">= 1000 tok/s, <= 1.1x forward", e["tokens_per_s"] >= 1000 and e["ratio_to_forward_padded"] <= 1.1, "tok/s")
            if "end to end, padded" in s["runs"]:
                ep = s["runs"]["end to end, padded"]
                add("  (before: padded batches of 16)", ep["tokens_per_s"], fp["tokens_per_s"], ep["ratio_to_forward_padded"],
                    "-", None, "tok/s")
            if "forward, packed" in s["runs"]:
                pk = s["runs"]["forward, packed"]
                add("  forward alone, packed", pk["tokens_per_s"], fp["tokens_per_s"], pk["ratio_to_forward_padded"], "-", None, "tok/s")
            add(f"discovery {n} prompts: tables equal to the padded path", s["tables_equal_padded"], True, None, "equal",
                bool(s["tables_equal_padded"]))
    bt = _load(raw, "batching")  # bench/batching.py: steer requests of N users, batcher on vs one row at a time
    if bt:
        b, o = bt["runs"]["batched"], bt["runs"]["one at a time (before)"]
        la = round(bt.get("load_average_before", [0])[0], 1)
        add(f"generation, {bt['users']} users' steer requests: batched vs one at a time (in process, load {la})",
            round(b["requests_per_s"], 3), round(o["requests_per_s"], 3), round(bt["throughput_ratio"], 3), ">= 2x",
            bt["throughput_ratio"] >= 2, "req/s")
        add("  steer p95 batched vs one at a time", round(b["p95_s"], 2), round(o["p95_s"], 2), round(bt["p95_ratio"], 3),
            "no worse", bt["p95_ratio"] <= 1.0, "s")
        add("  greedy outputs batched = one at a time", bt["greedy_outputs_equal"], True, None, "equal", bool(bt["greedy_outputs_equal"]))
    sv = _load(raw, "serve")
    if sv:
        q, b = sv["without_job"], sv.get("with_job") or {"routes": {}, "errors": 0}
        before = (sv.get("before") or {}).get("without_job")
        if before:  # the old server in turns with ours, same users and mix, fresh prompts
            la = round(sv.get("load_average_before", [0])[0], 1)
            add(f"serve, {sv['users']} users: throughput vs the server before (load {la})", q["throughput_rps"],
                before["throughput_rps"], sv["throughput_ratio_vs_before"], ">= 2x", sv["throughput_ratio_vs_before"] >= 2, "req/s")
            for route, r in sorted(q["routes"].items()):
                rb = before["routes"].get(route)
                if rb:
                    ratio = sv["p95_ratio_vs_before"].get(route)
                    add(f"  {route} p95 vs before (p50 {r['p50_ms']} / {rb['p50_ms']})", r["p95_ms"], rb["p95_ms"], ratio,
                        "no worse", ratio is not None and ratio <= 1.0, "ms")
        if b["routes"]:
            qa, ba = q["routes"].get("analyze", {}), b["routes"].get("analyze", {})
            add(f"serve, {sv['users']} users: analysis p95 with a discovery job", ba.get("p95_ms"), qa.get("p95_ms"),
                sv["analysis_p95_ratio_job_vs_none"], "<= 2x without",
                sv["analysis_p95_ratio_job_vs_none"] is not None and sv["analysis_p95_ratio_job_vs_none"] <= 2, "ms")
            for route in sorted(set(q["routes"]) | set(b["routes"])):
                rq, rb = q["routes"].get(route, {}), b["routes"].get(route, {})
                add(f"  {route} p50 / p95 (with job)", f"{rb.get('p50_ms')} / {rb.get('p95_ms')}",
                    f"{rq.get('p50_ms')} / {rq.get('p95_ms')}", None, "-", None, "ms")
            add("serve throughput (with job / without)", b["throughput_rps"], q["throughput_rps"], None, "-", None, "req/s")
        add("serve errors", q["errors"] + b["errors"], 0, None, "0", q["errors"] + b["errors"] == 0)
        if sv.get("server_peak_rss_mb"):
            add(f"server peak RSS, {sv['profile']} (atlas: {str(sv.get('atlas'))[:20]})", round(sv["server_peak_rss_mb"]),
                None, None, "<= 2500 MB", sv["server_peak_rss_mb"] <= 2500, "MB")
    return rows


def fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "NO"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1e-2 and v != 0 else f"{v:,.3f}".rstrip("0").rstrip(".")
    return str(v)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("raw", nargs="?", type=Path, default=ROOT / "bench" / "results" / "raw")
    ap.add_argument("--label", default=os.environ.get("BENCH_LABEL", ""))
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    a = ap.parse_args(argv)
    rows = rows_of(a.raw)
    head = ("workload", "ours", "baseline", "ratio", "goal", "met?")
    table = [head] + [(r["workload"], f"{fmt(r['ours'])} {r['unit']}".strip(), fmt(r["baseline"]), fmt(r["ratio"]), r["goal"],
                       "" if r["met"] is None else fmt(r["met"])) for r in rows]
    w = [max(len(str(t[i])) for t in table) for i in range(len(head))]
    for t in table:
        print("  ".join(str(c).ljust(w[i]) for i, c in enumerate(t)))
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    except OSError:
        sha = ""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    extra = {p.stem: json.loads(p.read_text()) for p in sorted(a.raw.glob("*.json"))} if a.raw.exists() else {}
    doc = {"commit": sha, "utc": stamp, "label": a.label, "load_average": os.getloadavg(), "rows": rows, "raw": extra}
    a.out.mkdir(parents=True, exist_ok=True)
    path = a.out / f"{stamp}-{sha or 'nogit'}{'-' + a.label if a.label else ''}.json"
    path.write_text(json.dumps(doc, indent=2))
    print(f"written {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
