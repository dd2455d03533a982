"""Steering experiment figures: concept score against fluency, one curve per arm across strengths (Plotly dicts)."""
from __future__ import annotations

ARM_COLORS = {"coarse": "#2563eb", "fine": "#16a34a", "coarse+fine": "#9333ea", "random": "#6b7280", "none": "#111827"}


def _err(ci, v):
    if v is None or not ci or ci[0] is None or ci[1] is None:
        return 0.0, 0.0
    return max(ci[1] - v, 0.0), max(v - ci[0], 0.0)


def curves_figure(result: dict, mode: str, scale: str) -> dict:
    """x = concept score (probe probability), y = mean log-prob per generated token under the unsteered model;
    one line per arm through its strengths (starting at no steering), bootstrap 95 % intervals as error bars."""
    table = result["table"]
    none = table[0]
    traces = []
    for arm in ("coarse", "fine", "coarse+fine", "random"):
        pts = [r for r in table if r["arm"] == arm and r["mode"] == mode and r["scale"] == scale]
        if not pts:
            continue
        pts = [none] + pts
        ex = [_err(p["concept_ci"], p["concept"]) for p in pts]
        ey = [_err(p["logprob_ci"], p["logprob"]) for p in pts]
        traces.append({
            "type": "scatter", "mode": "lines+markers", "name": arm,
            "x": [p["concept"] for p in pts], "y": [p["logprob"] for p in pts],
            "text": ["none" if p["arm"] == "none" else f"{p['strength']:g}" for p in pts],
            "error_x": {"type": "data", "symmetric": False, "array": [e[0] for e in ex], "arrayminus": [e[1] for e in ex], "thickness": 1},
            "error_y": {"type": "data", "symmetric": False, "array": [e[0] for e in ey], "arrayminus": [e[1] for e in ey], "thickness": 1},
            "line": {"color": ARM_COLORS[arm], "dash": "dot" if arm == "random" else "solid"},
            "hovertemplate": arm + " %{text}<br>concept %{x:.3f}<br>log-prob %{y:.3f}<extra></extra>",
        })
    unit = "matched vector norm (x coarse arm)" if scale == "norm" else "strength x typical activation"
    layout = {
        "height": 340, "margin": {"l": 60, "r": 10, "t": 34, "b": 50},
        "title": {"text": f"{mode}, {unit}: concept score vs fluency", "font": {"size": 12}},
        "xaxis": {"title": {"text": "concept score (probe, unsteered re-read)"}, "range": [-0.02, 1.02]},
        "yaxis": {"title": {"text": "mean log-prob per token (nats)"}},
        "legend": {"orientation": "h", "y": -0.25},
        "paper_bgcolor": "rgba(0,0,0,0)", "plot_bgcolor": "rgba(0,0,0,0)",
        "font": {"family": "system-ui, sans-serif", "size": 11},
    }
    return {"data": traces, "layout": layout, "config": {"displayModeBar": False}}


def experiment_view(inputs: dict, result: dict) -> dict:
    """Figures per verdict family and the generations grouped for browsing (condition -> records)."""
    figs = [{"id": f"exp-{v['mode']}-{v['scale']}", "label": v["label"], "figure": curves_figure(result, v["mode"], v["scale"])}
            for v in result["verdicts"]]
    by_cond: dict[str, list] = {}
    for g in result["generations"]:
        by_cond.setdefault(g["condition"], []).append(g)
    return {"figures": figs, "by_condition": by_cond}
