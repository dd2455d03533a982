"""Logit-lens heatmap (layer x token) as a Plotly figure dict; every model string is HTML-escaped."""
from __future__ import annotations

import html
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
    n = len(tokens)
    z = [[row[p][0] for p in range(n)] for row in tp]
    text = [[label(row[p][0]) for p in range(n)] for row in tt]
    hover = []
    for li, (trow, prow) in enumerate(zip(tt, tp)):
        hrow = []
        for p in range(n):
            head = f"layer {html.escape(layers[li], quote=False)} · pos {p} <b>{label(tokens[p])}</b>"
            lines = [f"{label(t)}  {q:.3f}" for t, q in zip(trow[p], prow[p])]
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
