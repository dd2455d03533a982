"""Attribution figures (Plotly dicts from an AttributionResponse dict; strings HTML-escaped)."""
from __future__ import annotations

from app.viz.lens import label
from app.viz.names import feature_name


def ablation_figure(result: dict) -> dict:
    """Linear estimate (−attribution) vs the measured logit change when each top feature is clamped to 0."""
    pts = [f for f in result["features"] if f.get("actual") is not None]
    xs = [f["estimate"] for f in pts]
    ys = [f["actual"] for f in pts]
    lo = min(xs + ys + [0.0])
    hi = max(xs + ys + [0.0])
    text = [feature_name(f['sae'], f['index']) + (f" {label(f['label'])}" if f.get("label") else "") for f in pts]
    corr = result.get("correlation")
    traces = [
        {"type": "scatter", "mode": "lines", "x": [lo, hi], "y": [lo, hi], "line": {"dash": "dot", "color": "#9ca3af"},
         "hoverinfo": "skip", "showlegend": False},
        {"type": "scatter", "mode": "markers+text", "x": xs, "y": ys, "text": text, "textposition": "top center",
         "textfont": {"size": 9}, "marker": {"size": 9, "color": ["#dc2626" if f["sae"] == "coarse" else "#2563eb" for f in pts]},
         "hovertemplate": "%{text}<br>estimate %{x:.3f}<br>actual %{y:.3f}<extra></extra>", "showlegend": False},
    ]
    title = "clamp to 0: estimate vs actual logit change"
    if corr is not None:
        title += f" · r = {corr:.3f}"
    layout = {"height": 320, "margin": {"l": 55, "r": 10, "t": 30, "b": 45}, "title": {"text": title, "font": {"size": 12}},
              "xaxis": {"title": {"text": "linear estimate (−attribution)"}, "zeroline": True},
              "yaxis": {"title": {"text": "actual change"}, "zeroline": True},
              "paper_bgcolor": "rgba(0,0,0,0)", "plot_bgcolor": "rgba(0,0,0,0)",
              "font": {"family": "system-ui, sans-serif", "size": 11}}
    return {"data": traces, "layout": layout, "config": {"displayModeBar": False}}
