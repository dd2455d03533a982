"""Attribution figures (Plotly dicts from an AttributionResponse dict; strings HTML-escaped)."""
from __future__ import annotations

import html

from app.viz.names import feature_name


def ablation_figure(result: dict) -> dict:
    """Linear estimate (−attribution) vs the measured logit change when each top feature is clamped to 0."""
    # each point is numbered with its row's # in the table (a dot's label, not its name: names beside close dots
    # overlapped, e.g. "GDP···Military" over its neighbour); the name is in the hover
    ranked = [(rank, f) for rank, f in enumerate(result["features"], 1) if f.get("actual") is not None]
    pts = [f for _, f in ranked]
    xs = [f["estimate"] for f in pts]
    ys = [f["actual"] for f in pts]
    lo = min(xs + ys + [0.0])
    hi = max(xs + ys + [0.0])
    # an atlas label is words, not a token: spaces stay spaces (label() would show them as "·"), HTML escaped
    names = [f"#{rank} · {feature_name(f['sae'], f['index'])}" + (f" {html.escape(f['label'], quote=False)}" if f.get("label") else "")
             for rank, f in ranked]
    corr = result.get("correlation")
    traces = [
        {"type": "scatter", "mode": "lines", "x": [lo, hi], "y": [lo, hi], "line": {"dash": "dot", "color": "#9ca3af"},
         "hoverinfo": "skip", "showlegend": False},
        {"type": "scatter", "mode": "markers+text", "x": xs, "y": ys, "text": [str(rank) for rank, _ in ranked],
         "customdata": names, "textposition": "middle center", "textfont": {"size": 9, "color": "#fff"},
         "marker": {"size": 16, "color": ["#dc2626" if f["sae"] == "coarse" else "#2563eb" for f in pts]},
         "hovertemplate": "%{customdata}<br>estimate %{x:.3f}<br>actual %{y:.3f}<extra></extra>", "showlegend": False},
    ]
    title = "clamp to 0: estimate vs actual logit change (dots numbered as the table's #; red coarse, blue fine)"
    if corr is not None:
        title += f" · r = {corr:.3f}"
    layout = {"height": 320, "margin": {"l": 55, "r": 10, "t": 30, "b": 45}, "title": {"text": title, "font": {"size": 12}},
              "xaxis": {"title": {"text": "linear estimate (−attribution)"}, "zeroline": True},
              "yaxis": {"title": {"text": "actual change"}, "zeroline": True},
              "paper_bgcolor": "rgba(0,0,0,0)", "plot_bgcolor": "rgba(0,0,0,0)",
              "font": {"family": "system-ui, sans-serif", "size": 11}}
    return {"data": traces, "layout": layout, "config": {"displayModeBar": False}}
