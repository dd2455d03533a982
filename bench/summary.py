"""One summary table of the benchmarks' JSON outputs (workload, ours, baseline, ratio, goal, met?), printed and
written to bench/results/<UTC time>-<commit>.json so figures can be compared across commits.

    .venv/bin/python bench/summary.py [RAW_DIR=bench/results/raw] [--label quiet|load] [--out bench/results]

Reads what is there (analyze.json, discover.json, serve.json from bench/analyze.py, bench/discover.py and
bench/serve.py); a missing file just leaves its rows out. Other benchmarks' JSON files in RAW_DIR are copied
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
    if a:
        r, nb = a["runs"], a["runs"]["notebook"]["p50_ms"]
        f = r["features"]
        add(f"analysis features, {a['tokens']} tokens (p50)", round(f["p50_ms"], 1), round(nb, 1), round(f["ratio_p50"], 3),
            "p50 <= 150 ms", f["p50_ms"] <= 150, "ms")
        v = r["view+lens"]
        add("view + logit lens complete (p50)", round(v["p50_ms"], 1), round(nb, 1), round(v["ratio_p50"], 3),
            "<= 0.5x notebook", v["ratio_p50"] <= 0.5, "ms")
        if "view+lens, 2 forwards" in r:
            w = r["view+lens, 2 forwards"]
            add("  (before: the lens with its own forward)", round(w["p50_ms"], 1), round(nb, 1), round(w["ratio_p50"], 3), "-", None, "ms")
        if "lens, logsumexp" in r:
            c, u = r["lens (cached)"], r["lens, logsumexp"]
            add("  lens from cached residuals: fused vs logsumexp", round(c["p50_ms"], 1), round(u["p50_ms"], 1),
                round(c["p50_ms"] / u["p50_ms"], 3), "-", None, "ms")
        if "unembed matmul alone" in r:
            fl = r["unembed matmul alone"]
            add("  floor: ln_final + the fp32 unembed matmul alone", round(fl["p50_ms"], 1), round(nb, 1),
                round(fl["ratio_p50"], 3), "-", None, "ms")
        add("lens top-1 agreement with the notebook", a["lens_top1_agreement"], 1.0, None, "1.0",
            a["lens_top1_agreement"] == 1.0)
        if "lens_max_abs_prob_diff" in a:
            add("lens max |p - p_notebook| (top 5)", a["lens_max_abs_prob_diff"], 0.0, None, "<= 1e-5",
                a["lens_max_abs_prob_diff"] <= 1e-5)
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
    sv = _load(raw, "serve")
    if sv:
        q, b = sv["without_job"], sv["with_job"]
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
