"""Dose-response figure: probability of a feature's top promoted tokens vs steering strength (Plotly dict).
Every model string is HTML-escaped before it goes into the figure."""
from __future__ import annotations

import html

from app.viz.lens import label

PALETTE = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#be185d", "#4d7c0f"]


def dose_figure(result: dict, inputs: dict | None = None) -> dict:
    """One line per promoted token: x = strength, y = next-token probability at the end of the prompt."""
    xs = list(result["strengths"])
    traces = []
    for i, p in enumerate(result["promoted"]):
        name = label(p["token"])
        traces.append({
            "type": "scatter", "mode": "lines+markers", "x": xs, "y": list(p["probs"]), "name": name,
            "line": {"color": PALETTE[i % len(PALETTE)]},
            "hovertemplate": f"{name}<br>strength %{{x}}<br>p = %{{y:.4f}}<extra></extra>",
        })
    feat = (inputs or {}).get("feature") or {}
    mode = html.escape(str(feat.get("mode", "")), quote=False)
    xtitle = "strength c (add: x += c·W_dec[f])" if mode == "add" else "clamped activation v" if mode == "clamp" else "strength"
    layout = {
        "height": 300, "margin": {"l": 55, "r": 10, "t": 30, "b": 45},
        "title": {"text": "next-token probability of the feature's top promoted tokens", "font": {"size": 12}},
        "xaxis": {"title": {"text": xtitle}, "zeroline": True},
        "yaxis": {"title": {"text": "p(token)"}, "rangemode": "tozero"},
        "legend": {"orientation": "h", "y": -0.25},
        "paper_bgcolor": "rgba(0,0,0,0)", "plot_bgcolor": "rgba(0,0,0,0)",
        "font": {"family": "system-ui, sans-serif", "size": 11},
    }
    return {"data": traces, "layout": layout, "config": {"displayModeBar": False}}
