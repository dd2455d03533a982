"""Split map figures (Plotly dicts built from a SplitMapResponse dict; every model string is HTML-escaped)."""
from __future__ import annotations

from app.viz.lens import label
from app.viz.names import feature_name

LAYOUT = {"paper_bgcolor": "rgba(0,0,0,0)", "plot_bgcolor": "rgba(0,0,0,0)",
          "font": {"family": "system-ui, sans-serif", "size": 11}}


def max_cosine_histogram(result: dict) -> dict:
    """Every fine feature's max decoder cosine to the coarse dictionary: bars below the threshold (novel) grey,
    at or above it (splits / copies) blue; the threshold as a dashed line."""
    d = result["dictionary"]
    edges, counts, thr = d["bin_edges"], d["counts"], d["threshold"]
    mids = [(a + b) / 2 for a, b in zip(edges[:-1], edges[1:])]
    colors = ["#3b82f6" if lo >= thr - 1e-9 else "#9ca3af" for lo in edges[:-1]]
    trace = {"type": "bar", "x": mids, "y": list(counts), "width": [b - a for a, b in zip(edges[:-1], edges[1:])],
             "marker": {"color": colors}, "hovertemplate": "max cos %{x:.2f}: %{y} fine features<extra></extra>"}
    layout = {**LAYOUT, "height": 260, "margin": {"l": 50, "r": 10, "t": 30, "b": 40}, "bargap": 0.05,
              "title": {"text": f"fine features: {d['n_reconstruction']} splits/copies (≥ {thr:g}) · {d['n_novel']} novel",
                        "font": {"size": 12}},
              "xaxis": {"title": {"text": "max decoder cosine to the coarse dictionary"}, "range": [0, 1]},
              "yaxis": {"title": {"text": "fine features"}, "rangemode": "tozero"},
              "shapes": [{"type": "line", "x0": thr, "x1": thr, "y0": 0, "y1": 1, "yref": "paper",
                          "line": {"dash": "dash", "color": "#dc2626", "width": 1.5}}]}
    return {"data": [trace], "layout": layout, "config": {"displayModeBar": False}}


def children_figure(result: dict) -> dict:
    """Fine features around the coarse one: decoder cosine (x) vs P(fine fires | coarse fires) (y), marker size
    by P(coarse | fine); children (cosine ≥ child_cos) blue."""
    seen, pts = set(), []
    for m in result["children"] + result["by_cosine"] + result["by_cofiring"]:
        if m["fine"] not in seen:
            seen.add(m["fine"])
            pts.append(m)
    text = [feature_name("fine", m["fine"]) + (f" {label(m['label'])}" if m.get("label") else "") for m in pts]
    trace = {"type": "scatter", "mode": "markers", "x": [m["cosine"] for m in pts],
             "y": [m["p_fine_given_coarse"] for m in pts], "text": text,
             "customdata": [[m["p_coarse_given_fine"], m["n_both"]] for m in pts],
             "marker": {"size": [6 + 14 * m["p_coarse_given_fine"] for m in pts],
                        "color": ["#2563eb" if m["child"] else "#9ca3af" for m in pts], "opacity": 0.8},
             "hovertemplate": "%{text}<br>cos %{x:.3f}<br>P(fine|coarse) %{y:.3f}<br>P(coarse|fine) %{customdata[0]:.3f}"
                              "<br>both fire on %{customdata[1]} tokens<extra></extra>"}
    layout = {**LAYOUT, "height": 300, "margin": {"l": 50, "r": 10, "t": 30, "b": 40},
              "title": {"text": "fine features: geometry vs co-firing", "font": {"size": 12}},
              "xaxis": {"title": {"text": "decoder cosine to this coarse feature"}},
              "yaxis": {"title": {"text": "P(fine fires | coarse fires)"}, "range": [-0.05, 1.05]},
              "shapes": [{"type": "line", "x0": result["child_cos"], "x1": result["child_cos"], "y0": 0, "y1": 1,
                          "yref": "paper", "line": {"dash": "dot", "color": "#2563eb", "width": 1}}]}
    return {"data": [trace], "layout": layout, "config": {"displayModeBar": False}}
