"""Logit-lens heatmap (layer x token) as a Plotly figure dict; every model string is HTML-escaped."""
from __future__ import annotations

import html
import math
import re

WS = {" ": "·", "\n": "↵", "\t": "⇥", "\r": "␍"}
MAX_CELL_TEXT_POSITIONS = 48  # beyond this, cells are too narrow for text; the hover still has it


def visible(token: str) -> str:
    """Whitespace made visible (· ↵ ⇥), empty shown as ∅; not escaped."""
    if token == "":
        return "∅"
    return "".join(WS.get(ch, ch) for ch in token)


def label(token: str) -> str:
    """Safe text for a Plotly label or hover (Plotly renders a subset of HTML: escape everything)."""
    return html.escape(visible(token), quote=False)  # Plotly decodes &lt; &gt; &amp; only; quotes are inert there


def sae_row(layers: list[str], hook_name: str | None) -> int | None:
    """The lens row that reads the residual the SAEs see (resid_pre of block N is resid_post of N-1 / embed)."""
    m = re.fullmatch(r"blocks\.(\d+)\.hook_resid_(pre|post)", hook_name or "")
    if not m:
        return None
    n = int(m.group(1)) - (m.group(2) == "pre")
    name = "embed" if n < 0 else str(n)
    return layers.index(name) if name in layers else None


def lens_figure(lens: dict, hook_name: str | None = None, height_per_layer: int = 18) -> dict:
    """Heatmap of the top-1 token's probability at each [layer][position]; text = top-1 token; hover = top 5;
    the row the SAEs read (at `hook_name`) is outlined and its tick says "SAE".

    `lens` is a LensResponse as a dict (layers, tokens, top_tokens, top_probs).
    """
    layers, tokens = list(lens["layers"]), list(lens["tokens"])
    tt, tp = lens["top_tokens"], lens["top_probs"]
    kl = lens.get("kl") or None
    n = len(tokens)
    z = [[row[p][0] for p in range(n)] for row in tp]
    text = [[label(row[p][0]) for p in range(n)] for row in tt]
    hover = []
    for li, (trow, prow) in enumerate(zip(tt, tp)):
        hrow = []
        for p in range(n):
            head = f"layer {html.escape(layers[li], quote=False)} · pos {p} <b>{label(tokens[p])}</b>"
            lines = [f"{label(t)}  {q:.3f}" for t, q in zip(trow[p], prow[p])]
            if kl is not None:
                lines.append(f"KL to the output {kl[li][p]:.3f} nats")
            hrow.append("<br>".join([head] + lines))
        hover.append(hrow)
    trace = {
        "type": "heatmap", "z": z, "x": list(range(n)), "y": list(range(len(layers))),
        "customdata": hover, "hovertemplate": "%{customdata}<extra></extra>",
        "colorscale": [[0.0, "#f4f8fd"], [0.25, "#c6dbef"], [0.5, "#6baed6"], [0.75, "#2171b5"], [1.0, "#08306b"]], "zmin": 0.0, "zmax": 1.0, "xgap": 1, "ygap": 1,
        "colorbar": {"title": {"text": "p(top-1)"}, "thickness": 12},
    }
    if n <= MAX_CELL_TEXT_POSITIONS:
        trace.update(text=text, texttemplate="%{text}", textfont={"size": 10})
    step = max(1, -(-n // 60))  # at most ~60 tick labels
    layout = {
        "margin": {"l": 60, "r": 20, "t": 10, "b": 70},
        "height": max(220, 90 + height_per_layer * len(layers)),
        "xaxis": {"tickmode": "array", "tickvals": list(range(0, n, step)), "ticktext": [label(t) for t in tokens[::step]],
                  "tickangle": -45 if n > 12 else 0, "title": {"text": "token"}},
        "yaxis": {"tickmode": "array", "tickvals": list(range(len(layers))), "ticktext": [html.escape(name, quote=False) for name in layers],
                  "title": {"text": "layer"}},
        "paper_bgcolor": "rgba(0,0,0,0)", "plot_bgcolor": "rgba(0,0,0,0)",
        "font": {"family": "system-ui, sans-serif", "size": 11},
    }
    row = sae_row(layers, hook_name)
    if row is not None:
        layout["yaxis"]["ticktext"][row] = f"SAE ▸ {layout['yaxis']['ticktext'][row]}"
        layout["margin"]["l"] = 80
        layout["shapes"] = [{"type": "rect", "xref": "x", "yref": "y", "x0": -0.5, "x1": n - 0.5, "y0": row - 0.5,
                             "y1": row + 0.5, "line": {"color": "#ea580c", "width": 2}, "fillcolor": "rgba(0,0,0,0)"}]
    return {"data": [trace], "layout": layout, "config": {"displayModeBar": False}}


def lens_kl_figure(lens: dict) -> dict | None:
    """The per-layer KL strip: one cell per layer, mean KL(model's output || the layer's readout) over the prompt's
    non-sink positions, in nats (log colour scale: early layers sit at ~10, late ones near 0). None without KL."""
    means = lens.get("kl_mean")
    if not means:
        return None
    layers = list(lens["layers"])
    kind = html.escape(str(lens.get("lens_kind", "logit")), quote=False)
    hover = [f"layer {html.escape(name, quote=False)} · {kind} lens<br>mean KL {v:.3f} nats" for name, v in zip(layers, means)]
    trace = {
        # Plotly has no log colour axis for heatmaps: the colour is log10(KL), the text the value
        "type": "heatmap", "z": [[math.log10(max(v, 1e-3)) for v in means]], "x": list(range(len(layers))), "y": [0],
        "text": [[f"{v:.2f}" if v < 9.995 else f"{v:.1f}" for v in means]], "texttemplate": "%{text}",
        "textfont": {"size": 9}, "customdata": [hover], "hovertemplate": "%{customdata}<extra></extra>",
        "colorscale": [[0.0, "#f7fcf5"], [0.35, "#fdd49e"], [0.7, "#ef6548"], [1.0, "#7f0000"]],
        "zmin": -3.0, "zmax": math.log10(12.0), "xgap": 1, "showscale": False,
    }
    layout = {
        "margin": {"l": 60, "r": 20, "t": 4, "b": 30}, "height": 74,
        "xaxis": {"tickmode": "array", "tickvals": list(range(len(layers))),
                  "ticktext": [html.escape(name, quote=False) for name in layers], "tickfont": {"size": 9}},
        "yaxis": {"tickmode": "array", "tickvals": [0], "ticktext": ["KL"], "fixedrange": True},
        "paper_bgcolor": "rgba(0,0,0,0)", "plot_bgcolor": "rgba(0,0,0,0)",
        "font": {"family": "system-ui, sans-serif", "size": 11},
    }
    return {"data": [trace], "layout": layout, "config": {"displayModeBar": False}}
