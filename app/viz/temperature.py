"""Temperature view: the same next-token logits re-softmaxed at several temperatures (grouped bars, one group
per token, one bar per temperature); tokens cut by top-k / top-p drawn hollow. Strings are HTML-escaped."""
from __future__ import annotations

from app.viz.lens import label

COLORS = ["#93c5fd", "#3b82f6", "#1d4ed8", "#1e3a8a", "#f59e0b", "#dc2626", "#16a34a", "#9333ea"]


def temperature_figure(result: dict, renormalised: bool = False) -> dict:
    """Bars of p(token) per temperature; `renormalised` plots the probabilities after the top-k/top-p cut."""
    toks = [label(t["token"]) for t in result["tokens"]]
    x = [f"{i + 1}. {t}" for i, t in enumerate(toks)]
    traces = []
    for j, v in enumerate(result["views"]):
        y = v["renormalised"] if renormalised else v["probs"]
        color = COLORS[j % len(COLORS)]
        traces.append({
            "type": "bar", "x": x, "y": list(y), "name": f"T={v['temperature']:g} · H={v['entropy_bits']:.2f} bits",
            "marker": {"color": [color if k else "rgba(0,0,0,0)" for k in v["kept"]],
                       "line": {"color": color, "width": 1.5}},
            "hovertemplate": f"T={v['temperature']:g}<br>%{{x}}<br>p = %{{y:.4f}}<extra></extra>",
        })
    layout = {
        "barmode": "group", "height": 360, "margin": {"l": 50, "r": 10, "t": 30, "b": 110},
        "title": {"text": ("after the top-k / top-p cut (renormalised)" if renormalised else "softmax(logits / T)"), "font": {"size": 12}},
        "yaxis": {"title": {"text": "probability"}, "rangemode": "tozero"},
        "xaxis": {"tickangle": -30},
        "legend": {"orientation": "h", "y": -0.35, "yanchor": "top"},
        "paper_bgcolor": "rgba(0,0,0,0)", "plot_bgcolor": "rgba(0,0,0,0)",
        "font": {"family": "system-ui, sans-serif", "size": 11},
    }
    return {"data": traces, "layout": layout, "config": {"displayModeBar": False}}
