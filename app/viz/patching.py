"""Patching and head figures (Plotly dicts from PatchingResponse / HeadsResponse dicts; strings HTML-escaped)."""
from __future__ import annotations

import html
from typing import Callable

from app.viz.lens import label

SCORE_NAMES = {"previous_token": "previous token", "induction": "induction", "duplicate_token": "duplicate token",
               "first_position": "first position"}
_LAYOUT = {"paper_bgcolor": "rgba(0,0,0,0)", "plot_bgcolor": "rgba(0,0,0,0)",
           "font": {"family": "system-ui, sans-serif", "size": 11}}


def _tok(s: str) -> str:
    return label(s.replace(" ", "·").replace("\n", "↵")) or "∅"


def _ticks(tokens: list[str]) -> list[str]:
    """Unique x labels (Plotly merges equal category names): position and token."""
    return [f"{i} {_tok(t)}" for i, t in enumerate(tokens)]


def cell_inputs(inputs: dict, result: dict, pos: int) -> dict:
    """Analyze's inputs for a cell: the clean prompt, with the card of the patched SAE feature that moves most at
    `pos` (if any)."""
    q = {"prompt": inputs.get("clean", ""), "system_prompt": inputs.get("system_prompt") or None,
         "chat": inputs.get("chat")}
    best = max(result.get("features") or [], key=lambda f: abs(f["delta"][pos]) if pos < len(f["delta"]) else 0.0,
               default=None)
    if best is not None and pos < len(best["delta"]) and best["delta"][pos] != 0:
        q["feature"] = f"{best['sae']}:{best['index']}"
    return q


def grid_figure(inputs: dict, result: dict, which: str = "grid",
                link: Callable[[dict], str | None] = lambda q: None) -> dict:
    """Heatmap of grid[layer][position] (diverging, 0 white; 1 = as clean). Cells on the SAE's row open Analyze at
    link(its inputs) (the analysis view's codec, given at registration)."""
    z = result.get(which) or []
    x = _ticks(result["tokens"])
    y = [f"L{layer}" for layer in result["layers"]]
    sae_row = result.get("sae_layer")
    links = [[(link(cell_inputs(inputs, result, p)) or "") if (sae_row is not None and layer == sae_row) else ""
              for p in range(len(x))] for layer in result["layers"]]
    title = "exact patching" if which == "grid" else "attribution patching (linear estimate)"
    trace = {"type": "heatmap", "z": z, "x": x, "y": y, "zmid": 0, "colorscale": "RdBu", "reversescale": True,
             "customdata": links, "meta": "links", "xgap": 1, "ygap": 1,
             "colorbar": {"title": {"text": "norm. LD"}, "thickness": 10},
             "hovertemplate": "%{y} · %{x}<br>normalised LD %{z:.3f}<extra></extra>"}
    shapes = []
    if sae_row is not None and sae_row in result["layers"]:
        i = result["layers"].index(sae_row)
        shapes.append({"type": "rect", "xref": "paper", "x0": 0, "x1": 1, "yref": "y", "y0": i - 0.5, "y1": i + 0.5,
                       "line": {"color": "#111827", "width": 2}})
    height = max(260, 16 * len(y) + 110)
    layout = {**_LAYOUT, "height": height, "margin": {"l": 45, "r": 10, "t": 30, "b": 90},
              "title": {"text": f"{title} · {html.escape(str(result['site']), quote=False)}", "font": {"size": 12}},
              "xaxis": {"tickangle": -45, "automargin": True}, "yaxis": {"autorange": "reversed"}, "shapes": shapes}
    return {"data": [trace], "layout": layout, "config": {"displayModeBar": False, "responsive": True}}


def attribution_scatter(result: dict) -> dict:
    """Attribution estimate vs exact normalised LD, one point per cell."""
    xs, ys, text = [], [], []
    for layer, row_e, row_a in zip(result["layers"], result["grid"], result.get("attribution_grid") or []):
        for p, (e, a) in enumerate(zip(row_e, row_a)):
            if e is not None and a is not None:
                xs.append(a)
                ys.append(e)
                text.append(f"L{layer} · {p} {_tok(result['tokens'][p])}")
    r = result.get("correlation")
    trace = {"type": "scatter", "mode": "markers", "x": xs, "y": ys, "text": text, "marker": {"size": 5, "color": "#2563eb"},
             "hovertemplate": "%{text}<br>attribution %{x:.3f}<br>exact %{y:.3f}<extra></extra>"}
    layout = {**_LAYOUT, "height": 300, "margin": {"l": 50, "r": 10, "t": 30, "b": 45},
              "title": {"text": "attribution vs exact" + (f" · r = {r:.3f}" if r is not None else ""), "font": {"size": 12}},
              "xaxis": {"title": {"text": "attribution patching"}}, "yaxis": {"title": {"text": "exact patching"}}}
    return {"data": [trace], "layout": layout, "config": {"displayModeBar": False, "responsive": True}}


def score_figure(result: dict, name: str) -> dict:
    """Heatmap of one head score, layers × heads."""
    z = result["scores"][name]
    trace = {"type": "heatmap", "z": z, "x": [f"H{h}" for h in range(result["n_heads"])],
             "y": [f"L{layer}" for layer in range(result["n_layers"])], "colorscale": "Viridis", "zmin": 0, "zmax": 1,
             "xgap": 1, "ygap": 1, "colorbar": {"thickness": 8},
             "hovertemplate": "%{y} %{x}<br>" + SCORE_NAMES[name] + " %{z:.3f}<extra></extra>"}
    layout = {**_LAYOUT, "height": max(220, 12 * result["n_layers"] + 80), "margin": {"l": 40, "r": 5, "t": 28, "b": 30},
              "title": {"text": SCORE_NAMES[name], "font": {"size": 12}}, "yaxis": {"autorange": "reversed"}}
    return {"data": [trace], "layout": layout, "config": {"displayModeBar": False, "responsive": True}}


def pattern_figure(result: dict, example: dict) -> dict:
    """One head's attention pattern (query rows, key columns) on the first random sequence."""
    ticks = _ticks(result["tokens"])
    n = len(example["pattern"])
    trace = {"type": "heatmap", "z": example["pattern"], "x": ticks[-n:] if len(ticks) >= n else list(range(n)),
             "y": ticks[-n:] if len(ticks) >= n else list(range(n)), "colorscale": "Blues", "reversescale": True, "zmin": 0, "zmax": 1,
             "showscale": False, "hovertemplate": "query %{y}<br>key %{x}<br>%{z:.3f}<extra></extra>"}
    layout = {**_LAYOUT, "height": 300, "margin": {"l": 10, "r": 5, "t": 28, "b": 10},
              "title": {"text": f"{SCORE_NAMES[example['score']]}: L{example['layer']} H{example['head']}", "font": {"size": 12}},
              "xaxis": {"showticklabels": False}, "yaxis": {"autorange": "reversed", "showticklabels": False}}
    return {"data": [trace], "layout": layout, "config": {"displayModeBar": False, "responsive": True}}


def head_rows(result: dict) -> list[dict]:
    """Every head with its four scores (the sortable table)."""
    return [{"layer": layer, "head": h, **{k: result["scores"][k][layer][h] for k in SCORE_NAMES}}
            for layer in range(result["n_layers"]) for h in range(result["n_heads"])]


def top_deltas(delta: list[float], n: int = 3) -> list[tuple[int, float]]:
    """The positions where a feature's clean − corrupt activation is largest in size, (position, delta)."""
    order = sorted(range(len(delta)), key=lambda p: -abs(delta[p]))
    return [(p, delta[p]) for p in order[:n] if delta[p] != 0]
