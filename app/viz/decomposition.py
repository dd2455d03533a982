"""Discovery views as Plotly figure dicts, built from {inputs, result} only (saved snapshots render the same).

- graph: coarse features (left) -> fine features (right); link width = activation correlation, colour = cosine
- scatter: x = correlation, y = decoder cosine, coloured blue / orange / red / grey (app.engine.decomposition.classify)
- heatmap: decoder cosine, mapped coarse x selected fine features
- histogram: cosine of ALL fine features against one coarse feature, threshold line
Labels are feature ids (C-12, F-345): no model text goes into these figures.
"""
from __future__ import annotations

import html

from app.engine.decomposition import KIND_LABELS, classify, count_is_exact
from app.viz.names import feature_name

COLORS = {"blue": "#1f6fd1", "orange": "#f08c00", "red": "#d62728", "grey": "#9aa0a6"}
# cosine -> colour for graph links (same scale as the heatmap's positive half)
COS_SCALE = [(0.0, (200, 200, 200)), (0.15, (253, 174, 97)), (0.3, (244, 109, 67)), (0.5, (116, 169, 207)), (1.0, (8, 48, 107))]
MAX_HEAT_COLS = 40
MAX_GRAPH_FINE = 30


def cos_color(c: float) -> str:
    c = max(0.0, min(1.0, c))
    for (x0, a), (x1, b) in zip(COS_SCALE, COS_SCALE[1:]):
        if c <= x1:
            t = 0 if x1 == x0 else (c - x0) / (x1 - x0)
            r, g, bl = (round(a[i] + t * (b[i] - a[i])) for i in range(3))
            return f"rgb({r},{g},{bl})"
    return "rgb(8,48,107)"


def thresholds(inputs: dict) -> tuple[float, float, float]:
    return (float(inputs.get("cos_threshold", 0.3)), float(inputs.get("corr_threshold", 0.3)),
            float(inputs.get("cos_near_zero", 0.1)))


def pairs(inputs: dict, result: dict) -> list[dict]:
    """Every scored (coarse, fine) pair with its class under the inputs' thresholds, best cosine first."""
    m = result.get("mapping")
    if not m:
        return []
    ct, rt, nz = thresholds(inputs)
    out = []
    for i, c in enumerate(m["coarse"]):
        for j, f in enumerate(m["fine"]):
            corr, cos = m["corr"][i][j], m["cos"][i][j]
            out.append({"coarse": c, "fine": f, "corr": corr, "cos": cos, "kind": classify(corr, cos, ct, rt, nz),
                        "source": m["fine_info"][str(f)]["source"]})
    out.sort(key=lambda p: (-p["cos"], -p["corr"]))
    return out


def go_no_go(inputs: dict, result: dict) -> list[dict]:
    """The GO/NO-GO rows the result carries (chosen once, at the inputs' threshold: the JSON's `go_no_go`), each with
    the scan's best cosine and whether its count is exact (else a lower bound) for the table."""
    m = result.get("mapping")
    if not m:
        return []
    scan, at = m["scan"], {c: i for i, c in enumerate(m["coarse"])}
    out = []
    for g in result.get("go_no_go") or []:
        i = at[g["coarse"]]
        best = scan["max_cosine"][i] if scan.get("max_cosine") is not None and i < len(scan["max_cosine"]) else None
        out.append({**g, "max_cosine": best,
                    "exact": count_is_exact(scan["matches"][i], scan["floor"], thresholds(inputs)[0])})
    return out


def hist_coarse(inputs: dict, result: dict) -> int | None:
    m = result.get("mapping")
    if not m or not m["coarse"]:
        return None
    want = inputs.get("hist_coarse")
    return want if want in m["coarse"] else m["coarse"][0]


def card_links(sae: str, indices: list[int]) -> dict:
    """Trace fields that make each point open its feature card on click (static/figures.js: meta "links")."""
    return {"meta": "links", "customdata": [f"/features/{sae}/{i}" for i in indices]}


def graph_figure(inputs: dict, result: dict) -> dict:
    m = result["mapping"]
    ct, rt, _ = thresholds(inputs)
    ps = [p for p in pairs(inputs, result) if p["corr"] >= rt or p["cos"] >= ct]
    ps = [p for p in ps if p["corr"] > 0 or p["cos"] > 0]
    fine_order = []
    for p in sorted(ps, key=lambda p: (m["coarse"].index(p["coarse"]), -p["cos"])):
        if p["fine"] not in fine_order:
            fine_order.append(p["fine"])
    fine_order = fine_order[:MAX_GRAPH_FINE]
    ps = [p for p in ps if p["fine"] in fine_order]
    nc, nf = len(m["coarse"]), len(fine_order)
    yc = {c: (1 - (i + 0.5) / nc) for i, c in enumerate(m["coarse"])}
    yf = {f: (1 - (i + 0.5) / max(nf, 1)) for i, f in enumerate(fine_order)}
    traces = []
    for p in sorted(ps, key=lambda p: p["cos"]):
        w = 1 + 9 * max(0.0, p["corr"])
        traces.append({"type": "scatter", "mode": "lines", "x": [0, 1], "y": [yc[p["coarse"]], yf[p["fine"]]],
                       "line": {"width": round(w, 2), "color": cos_color(p["cos"])}, "opacity": 0.85,
                       "hoverinfo": "text", "showlegend": False,
                       "text": f"{feature_name('coarse', p['coarse'])} → {feature_name('fine', p['fine'])}<br>correlation {p['corr']:.3f}<br>cosine {p['cos']:.3f}"})
    traces.append({"type": "scatter", "mode": "markers+text", "x": [0] * nc, "y": [yc[c] for c in m["coarse"]],
                   "text": [feature_name("coarse", c) for c in m["coarse"]], "textposition": "middle left", "showlegend": False,
                   "marker": {"size": 16, "color": "#333"}, "hoverinfo": "text", "name": "coarse",
                   **card_links("coarse", m["coarse"])})
    traces.append({"type": "scatter", "mode": "markers+text", "x": [1] * nf, "y": [yf[f] for f in fine_order],
                   "text": [feature_name("fine", f) for f in fine_order], "textposition": "middle right", "showlegend": False,
                   "marker": {"size": 10, "color": "#777"}, "hoverinfo": "text", "name": "fine",
                   **card_links("fine", fine_order)})
    traces.append({"type": "scatter", "mode": "markers", "x": [None], "y": [None], "showlegend": False, "hoverinfo": "skip",
                   "marker": {"color": [0], "cmin": 0, "cmax": 1, "showscale": True,
                              "colorscale": [[x, f"rgb{c}"] for x, c in COS_SCALE],
                              "colorbar": {"title": {"text": "cosine"}, "len": 0.8}}})
    return {"data": traces, "layout": {
        "title": {"text": "Decomposition graph: width = correlation, colour = decoder cosine", "font": {"size": 14}},
        "height": max(360, 22 * max(nf, nc) + 120), "margin": {"l": 90, "r": 110, "t": 40, "b": 20},
        "xaxis": {"visible": False, "range": [-0.35, 1.35]}, "yaxis": {"visible": False, "range": [0, 1]},
        "hovermode": "closest", "plot_bgcolor": "white"}}


def scatter_figure(inputs: dict, result: dict) -> dict:
    ct, rt, nz = thresholds(inputs)
    ps = pairs(inputs, result)
    traces = []
    for kind in ("grey", "red", "orange", "blue"):
        sel = [p for p in ps if p["kind"] == kind]
        traces.append({"type": "scatter", "mode": "markers", "name": html.escape(KIND_LABELS[kind]),
                       "x": [p["corr"] for p in sel], "y": [p["cos"] for p in sel],
                       "marker": {"color": COLORS[kind], "size": 9 if kind != "grey" else 6, "opacity": 0.9 if kind != "grey" else 0.45},
                       "text": [f"{feature_name('coarse', p['coarse'])} → {feature_name('fine', p['fine'])}" for p in sel],
                       "hovertemplate": "%{text}<br>correlation %{x:.3f}<br>cosine %{y:.3f}<extra></extra>"})
    shapes = [
        {"type": "line", "x0": -1, "x1": 1, "y0": ct, "y1": ct, "line": {"color": "#1f6fd1", "dash": "dash", "width": 1}},
        {"type": "line", "x0": rt, "x1": rt, "y0": -1, "y1": 1, "line": {"color": "#555", "dash": "dash", "width": 1}},
        {"type": "rect", "x0": -1, "x1": 1, "y0": -nz, "y1": nz, "line": {"width": 0}, "fillcolor": "rgba(214,39,40,0.06)"},
    ]
    return {"data": traces, "layout": {
        "title": {"text": f"Correlation vs cosine (cosine ≥ {ct:g} and correlation ≥ {rt:g} = blue; |cosine| < {nz:g} = near 0)",
                  "font": {"size": 13}},
        "height": 420, "margin": {"l": 60, "r": 20, "t": 40, "b": 50}, "shapes": shapes,
        "xaxis": {"title": {"text": "activation correlation across prompts"}, "range": [-0.25, 1.02], "zeroline": True},
        "yaxis": {"title": {"text": "decoder cosine similarity"}, "range": [-0.25, 1.02]},
        "legend": {"orientation": "h", "y": -0.18}}}


def heatmap_figure(inputs: dict, result: dict) -> dict:
    m = result["mapping"]
    ct, rt, _ = thresholds(inputs)
    # columns: fine features that are aligned or correlated with some mapped coarse feature, best cosine first
    best = {}
    for p in pairs(inputs, result):
        if p["kind"] != "grey":
            best[p["fine"]] = max(best.get(p["fine"], -1.0), p["cos"])
    cols = sorted(best, key=lambda f: -best[f])[:MAX_HEAT_COLS] or m["fine"][:MAX_HEAT_COLS]
    j_of = {f: j for j, f in enumerate(m["fine"])}
    z = [[m["cos"][i][j_of[f]] for f in cols] for i in range(len(m["coarse"]))]
    text = [[f"{v:.2f}" for v in row] for row in z]
    return {"data": [{"type": "heatmap", "z": z, "x": [feature_name("fine", f) for f in cols], "y": [feature_name("coarse", c) for c in m["coarse"]],
                      "text": text, "texttemplate": "%{text}" if len(cols) <= 20 else None,
                      "colorscale": "RdBu", "reversescale": True, "zmin": -1, "zmax": 1, "zmid": 0,
                      "colorbar": {"title": {"text": "cosine"}},
                      "hovertemplate": "%{y} · %{x}<br>cosine %{z:.3f}<br>click: the fine feature's card<extra></extra>",
                      "meta": "links", "customdata": [[f"/features/fine/{f}" for f in cols] for _ in m["coarse"]]}],
            "layout": {"title": {"text": "Decoder cosine: mapped coarse × selected fine features", "font": {"size": 14}},
                       "height": 140 + 34 * len(m["coarse"]), "margin": {"l": 70, "r": 20, "t": 40, "b": 70},
                       "xaxis": {"type": "category", "tickangle": -45}, "yaxis": {"type": "category", "autorange": "reversed"}}}


def histogram_figure(inputs: dict, result: dict) -> dict:
    m = result["mapping"]
    c = hist_coarse(inputs, result)
    ct = thresholds(inputs)[0]
    i = m["coarse"].index(c)
    edges, counts = m["scan"]["bin_edges"], m["scan"]["counts"][i]
    centers = [(a + b) / 2 for a, b in zip(edges, edges[1:])]
    width = edges[1] - edges[0]
    n_above = sum(1 for _, v in m["scan"]["matches"][i] if v >= ct)
    colors = ["#1f6fd1" if x - width / 2 >= ct else "#9aa0a6" for x in centers]
    return {"data": [{"type": "bar", "x": centers, "y": [max(k, 0) for k in counts], "width": width,
                      "marker": {"color": colors}, "hovertemplate": "cosine %{x:.2f}: %{y} fine features<extra></extra>"}],
            "layout": {"title": {"text": f"Cosine of all {m['scan']['n_fine']:,} fine features against {feature_name('coarse', c)} "
                                         f"({n_above} at or above {ct:g})", "font": {"size": 14}},
                       "height": 340, "margin": {"l": 60, "r": 20, "t": 40, "b": 50}, "bargap": 0,
                       "xaxis": {"title": {"text": "decoder cosine similarity"}, "range": [-1, 1]},
                       "yaxis": {"title": {"text": "fine features (log scale)"}, "type": "log"},
                       "shapes": [{"type": "line", "x0": ct, "x1": ct, "yref": "paper", "y0": 0, "y1": 1,
                                   "line": {"color": "#d62728", "width": 2}}],
                       "annotations": [{"x": ct, "yref": "paper", "y": 1, "text": f"threshold {ct:g}", "showarrow": False,
                                        "xanchor": "left", "font": {"color": "#d62728"}}]}}


def discovery_view(inputs: dict, result: dict) -> dict:
    """Everything the discovery fragment shows beyond the raw tables, from {inputs, result} only."""
    if not result or not result.get("mapping") or not result["mapping"]["coarse"]:
        return {"pairs": [], "go_no_go": [], "figures": {}, "hist_coarse": None, "counts": {}}
    ps = pairs(inputs, result)
    counts = {k: sum(1 for p in ps if p["kind"] == k) for k in COLORS}
    return {"pairs": ps, "go_no_go": go_no_go(inputs, result), "hist_coarse": hist_coarse(inputs, result), "counts": counts,
            "figures": {"graph": graph_figure(inputs, result), "scatter": scatter_figure(inputs, result),
                        "heatmap": heatmap_figure(inputs, result), "histogram": histogram_figure(inputs, result)}}
