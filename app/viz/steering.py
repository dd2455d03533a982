"""Dose-response figure: next-token probability vs steering strength for the tokens that moved most across the
sweep (default) or the feature's top promoted tokens (a button on the chart). Every model string is HTML-escaped
before it goes into the figure."""
from __future__ import annotations

import html

from app.viz.lens import label

PALETTE = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#be185d", "#4d7c0f"]
TITLES = {"moved": "next-token probability of the tokens that moved most across the strengths",
          "promoted": "next-token probability of the feature's top promoted tokens (W_dec[f]·W_U)"}


def _traces(rows: list, xs: list, group: str, visible: bool) -> list[dict]:
    out = []
    for i, p in enumerate(rows):
        name = label(p["token"])
        out.append({
            "type": "scatter", "mode": "lines+markers", "x": xs, "y": list(p["probs"]), "name": name,
            "legendgroup": group, "visible": visible, "meta": group,
            "line": {"color": PALETTE[i % len(PALETTE)], "dash": "solid" if group == "moved" else "dot"},
            "hovertemplate": f"{name}<br>strength %{{x}}<br>p = %{{y:.4f}}<extra></extra>",
        })
    return out


def dose_figure(result: dict, inputs: dict | None = None) -> dict:
    """One line per token: x = strength, y = next-token probability at the end of the prompt. The tokens whose
    probability moved most (max - min over the strengths) are shown; a button switches to the promoted tokens
    (which can sit near zero at every strength). Snapshots saved before `moved` existed show the promoted ones."""
    xs = list(result["strengths"])
    moved, promoted = result.get("moved") or [], result.get("promoted") or []
    first = "moved" if moved else "promoted"
    traces = _traces(moved, xs, "moved", first == "moved") + _traces(promoted, xs, "promoted", first == "promoted")
    feat = (inputs or {}).get("feature") or {}
    mode = html.escape(str(feat.get("mode", "")), quote=False)
    xtitle = "strength c (add: x += c·W_dec[f])" if mode == "add" else "clamped activation v" if mode == "clamp" else "strength"
    layout = {
        "height": 320, "margin": {"l": 55, "r": 10, "t": 60, "b": 45},
        "title": {"text": TITLES[first], "font": {"size": 12}},
        "xaxis": {"title": {"text": xtitle}, "zeroline": True},
        "yaxis": {"title": {"text": "p(token)"}, "rangemode": "tozero"},
        "legend": {"orientation": "h", "y": -0.25},
        "paper_bgcolor": "rgba(0,0,0,0)", "plot_bgcolor": "rgba(0,0,0,0)",
        "font": {"family": "system-ui, sans-serif", "size": 11},
    }
    if moved and promoted:
        def button(group: str, text: str) -> dict:
            vis = [t["meta"] == group for t in traces]
            return {"label": text, "method": "update", "args": [{"visible": vis}, {"title.text": TITLES[group]}]}
        layout["updatemenus"] = [{"type": "buttons", "direction": "right", "x": 0, "xanchor": "left", "y": 1.22,
                                  "yanchor": "top", "showactive": True, "active": 0, "pad": {"r": 4, "t": 0},
                                  "buttons": [button("moved", "most moved"), button("promoted", "decoder-promoted")]}]
    return {"data": traces, "layout": layout, "config": {"displayModeBar": False}}
