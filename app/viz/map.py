"""The activation-space map as Plotly dicts: every feature a WebGL point, regions as soft shapes with labels, a
prompt's paths on top. Model strings are HTML-escaped before they go into a figure."""
from __future__ import annotations

import html
import math

import numpy as np

from app.viz.names import feature_name

PALETTE = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#be185d", "#4d7c0f", "#b45309",
           "#4338ca", "#0f766e", "#a21caf", "#65a30d", "#c2410c", "#1d4ed8", "#15803d"]
NOISE = "#c7ccd4"
PATH_COLOURS = {"prompt": "#111827", "without system prompt": "#f59e0b", "unsteered": "#6b7280", "steered": "#dc2626"}
SAE_STYLE = {"coarse": {"symbol": "diamond", "size": 6}, "fine": {"symbol": "circle", "size": 3}}
MAX_POINTS = 60_000  # above this many features, send the top-N by density plus what the prompt activates
REGION_LABELS = 40  # the largest regions get their label on the map; the rest on hover


def _hover_line(t: dict) -> str:
    """One feature on a token's hover: name, label, raw activation beside its ratio to the typical one, dense mark."""
    ratio = f", ×{t['ratio']:.1f} typical" if t.get("ratio") is not None else ""
    dense = " · dense" if t.get("dense") else ""
    return f"{esc(feature_name(t['sae'], t['index']))} {esc(t.get('label') or '')} ({t['activation']:.2f}{ratio}){dense}"


def esc(s) -> str:
    return html.escape(str(s), quote=False)


def snippet(atlas, sae: str, index: int, before: int = 6) -> str:
    """The feature's strongest atlas example as text, the firing token in [brackets] (empty without an atlas)."""
    try:
        rows = atlas.summaries[sae]["top_rows"][index]
        r = int(rows[0])
        if r < 0:
            return ""
        w0 = (r // atlas.ctx) * atlas.ctx
        ids = atlas.tokens[max(w0, r - before): r + 1]
        parts = [atlas.tok(int(i)) for i in ids]
        text = "".join(parts[:-1]) + "[" + parts[-1] + "]"
        return text.replace("\n", "⏎")[-60:]
    except Exception:
        return ""


def point_table(lay, atlas=None) -> dict:
    """Per row of the layout: sae, index, label and density (nan without atlas); hover examples are fetched per point
    (`snippet`), not sent with the map. Built once per layout and atlas, then cached by the caller."""
    sae_row = lay.sae_of_row()
    names = [lay.sae_names[s] for s in sae_row]
    index = np.concatenate([np.arange(w) for w in lay.widths])
    density = np.full(lay.n, np.nan)
    labels = [""] * lay.n
    if atlas is not None:
        for name in lay.sae_names:
            rows = lay.rows(name)
            try:
                density[rows] = np.asarray(atlas.density[name], dtype=np.float64)[: rows.stop - rows.start]
            except Exception:
                pass
        for r in range(lay.n):
            labels[r] = esc(atlas.label(names[r], int(index[r])))
    return {"sae": names, "index": index, "density": density, "label": labels}


def visible_rows(lay, table: dict, show: str, extra_rows=(), max_points: int = MAX_POINTS) -> np.ndarray:
    """Rows to send: the chosen SAE(s); above max_points, the densest features plus `extra_rows` (level of detail)."""
    rows = np.arange(lay.n)
    if show != "both":
        r = lay.rows(show)
        rows = rows[r]
    if len(rows) > max_points:
        d = table["density"][rows]
        order = np.argsort(-np.nan_to_num(d, nan=-1.0), kind="stable")[:max_points]
        rows = np.union1d(rows[order], np.asarray(list(extra_rows), dtype=np.int64))
    return rows


def colours(lay, table: dict, rows: np.ndarray, color_by: str, values: np.ndarray | None) -> tuple[list | None, dict]:
    """(per-point colour for categorical colourings or None, marker fields for numeric ones)."""
    if color_by == "cluster":
        cl = lay.cluster[rows]
        return [PALETTE[c % len(PALETTE)] if c >= 0 else NOISE for c in cl.tolist()], {}
    if color_by == "sae":
        return [PALETTE[0] if s == "coarse" else PALETTE[2] for s in (table["sae"][r] for r in rows)], {}
    if color_by == "density":
        d = table["density"][rows]
        v = np.log10(np.clip(np.nan_to_num(d, nan=1e-7), 1e-7, 1.0))
        return None, {"color": np.round(v, 3).tolist(), "colorscale": "Viridis", "cmin": -6, "cmax": 0,
                      "colorbar": {"title": {"text": "log10 density"}, "thickness": 10}}
    if values is None:
        return [NOISE] * len(rows), {}
    v = values[rows]
    if color_by == "cosine":
        return None, {"color": np.round(np.nan_to_num(v), 3).tolist(), "colorscale": "RdBu", "reversescale": True,
                      "cmin": -1, "cmax": 1, "colorbar": {"title": {"text": "cosine"}, "thickness": 10}}
    # selectivity: only the features a discovery scored have a value
    finite = np.isfinite(v)
    hi = float(np.nanmax(np.abs(v))) if finite.any() else 1.0
    return None, {"color": np.round(np.where(finite, v, 0.0), 3).tolist(), "colorscale": "Reds", "cmin": 0, "cmax": hi,
                  "colorbar": {"title": {"text": "selectivity"}, "thickness": 10}}


def region_shapes(regions) -> tuple[list, list]:
    """Soft filled hulls and the labels of the largest regions."""
    shapes, notes = [], []
    for r in regions:
        hull = r["hull"] if isinstance(r, dict) else r.hull
        rid = r["id"] if isinstance(r, dict) else r.id
        if len(hull) >= 3:
            path = "M " + " L ".join(f"{x},{y}" for x, y in hull) + " Z"
            c = PALETTE[rid % len(PALETTE)]
            shapes.append({"type": "path", "path": path, "fillcolor": c, "opacity": 0.07, "line": {"width": 0.6, "color": c},
                           "layer": "below"})
    for r in list(regions)[:REGION_LABELS]:
        get = (lambda k, r=r: r[k]) if isinstance(r, dict) else (lambda k, r=r: getattr(r, k))
        cx, cy = get("centroid")
        notes.append({"x": cx, "y": cy, "text": esc(get("label")), "showarrow": False,
                      "font": {"size": 10, "color": "#374151"}, "bgcolor": "rgba(255,255,255,0.6)"})
    return shapes, notes


def base_layout(height: int = 640) -> dict:
    return {"height": height, "margin": {"l": 10, "r": 10, "t": 10, "b": 10}, "dragmode": "pan", "hovermode": "closest",
            "xaxis": {"visible": False}, "yaxis": {"visible": False, "scaleanchor": "x"},
            "showlegend": True, "legend": {"orientation": "h", "y": 0, "x": 0, "bgcolor": "rgba(255,255,255,0.7)"},
            "paper_bgcolor": "rgba(0,0,0,0)", "plot_bgcolor": "rgba(0,0,0,0)", "uirevision": "map",
            "font": {"family": "system-ui, sans-serif", "size": 11}}


def columns(name: str, index: np.ndarray, dens: np.ndarray, colours: list | None) -> dict:
    """A trace's per-point fields in columns (static/map.js `expand` turns them into Plotly's customdata = [sae, index,
    density text, example] and marker colours): half the bytes and parse time of one small array per point."""
    idx = index.tolist()
    out: dict = {"sae": name, "index": idx[0] if idx == list(range(idx[0], idx[0] + len(idx))) else idx,
                 "density": ["—" if math.isnan(d) else f"{100 * d:.3g}%" for d in dens.tolist()]}
    if colours is not None:  # a few distinct colours: a palette and one small int per point
        palette, codes = np.unique(np.asarray(colours), return_inverse=True)
        out.update(palette=palette.tolist(), colors=codes.tolist())
    return out


def map_figure(lay, table: dict, color_by: str = "cluster", show: str = "both", values: np.ndarray | None = None,
               extra_rows=(), max_points: int = MAX_POINTS) -> dict:
    """Every (visible) feature as a scattergl point, its per-point fields in `columns` (see there); text = the atlas
    label (hover and the zoom labels)."""
    rows = visible_rows(lay, table, show, extra_rows, max_points)
    cat, numeric = colours(lay, table, rows, color_by, values)
    traces = []
    for name in lay.sae_names:
        r0 = lay.rows(name)
        mask = (rows >= r0.start) & (rows < r0.stop)
        sel = rows[mask]
        if not len(sel):
            continue
        marker = {"size": SAE_STYLE.get(name, {}).get("size", 4), "symbol": SAE_STYLE.get(name, {}).get("symbol", "circle"),
                  "opacity": 0.75}
        if cat is None:
            marker.update({k: ([c for c, m in zip(v, mask) if m] if k == "color" else v) for k, v in numeric.items()})
            if name != lay.sae_names[0]:
                marker.pop("colorbar", None)
                marker["showscale"] = False
        cols = columns(name, table["index"][sel], table["density"][sel],
                       None if cat is None else [c for c, m in zip(cat, mask) if m])
        # float64 before rounding: float32 values print as 2.197999954223633
        xy = np.round(lay.xy[sel].astype(np.float64), 3)
        traces.append({"type": "scattergl", "mode": "markers", "name": f"{name} ({len(sel)})",
                       "x": xy[:, 0].tolist(), "y": xy[:, 1].tolist(),
                       "text": [table["label"][r] for r in sel.tolist()], "columns": cols, "marker": marker,
                       "hovertemplate": "<b>%{customdata[0]} %{customdata[1]}</b> %{text}<br>density %{customdata[2]}"
                                        "<br>%{customdata[3]}<extra></extra>"})
    shapes, notes = region_shapes(lay.regions)
    layout = base_layout()
    layout.update({"shapes": shapes, "annotations": notes})
    return {"data": traces, "layout": layout, "config": {"scrollZoom": True, "displaylogo": False}}


def path_traces(result: dict) -> list:
    """A line through each path's placed tokens in order (sinks skipped), steered features as stars."""
    traces = []
    for p in result.get("paths", []):
        pts = [q for q in p["points"] if q["x"] is not None]
        if not pts:
            continue
        colour = PATH_COLOURS.get(p["name"], "#111827")
        hover = []
        for q in pts:
            tops = "<br>".join(_hover_line(t) for t in q["top"])
            hover.append(f"<b>{q['position']}: {esc(repr(q['token']))}</b><br>{tops}")
        traces.append({"type": "scatter", "mode": "lines+markers+text", "name": esc(p["name"]),
                       "x": [q["x"] for q in pts], "y": [q["y"] for q in pts],
                       "text": [esc(q["token"].strip()[:12]) for q in pts], "textposition": "top center",
                       "textfont": {"size": 9, "color": colour}, "hovertext": hover, "hoverinfo": "text",
                       "line": {"color": colour, "width": 1.5}, "marker": {"size": 7, "color": colour},
                       "meta": "path"})
    st = result.get("steer")
    if st and st.get("marked"):
        traces.append({"type": "scatter", "mode": "markers", "name": "steered features", "meta": "path",
                       "x": [m["x"] for m in st["marked"]], "y": [m["y"] for m in st["marked"]],
                       "hovertext": [f"{esc(feature_name(m['sae'], m['index']))} {esc(m['label'])}" for m in st["marked"]],
                       "hoverinfo": "text", "marker": {"symbol": "star", "size": 16, "color": "#dc2626",
                                                       "line": {"width": 1, "color": "#111"}}})
    return traces


def paths_figure(inputs: dict, result: dict) -> dict:
    """The fragment's own figure (readable in a saved snapshot without the page): regions + paths."""
    shapes, notes = region_shapes(result.get("regions", []))
    layout = base_layout(460)
    layout.update({"shapes": shapes, "annotations": notes[:15]})
    return {"data": path_traces(result), "layout": layout, "config": {"scrollZoom": True, "displaylogo": False}}


def drift_figure(inputs: dict, result: dict) -> dict:
    """Size of the system prompt's shift at the last token against filler turns k."""
    d = result.get("drift") or []
    traces = [
        {"type": "scatter", "mode": "lines+markers", "name": "features: 1 − cos", "x": [p["k"] for p in d],
         "y": [p["feature_shift"] for p in d], "line": {"color": PALETTE[1]}},
        {"type": "scatter", "mode": "lines+markers", "name": "residual: 1 − cos", "x": [p["k"] for p in d],
         "y": [p["resid_shift"] for p in d], "line": {"color": PALETTE[0]}},
    ]
    layout = {"height": 260, "margin": {"l": 55, "r": 10, "t": 30, "b": 45},
              "title": {"text": "system prompt's shift at the last token vs filler turns", "font": {"size": 12}},
              "xaxis": {"title": {"text": "k filler turn pairs"}, "dtick": 1}, "yaxis": {"title": {"text": "1 − cosine"},
                                                                               "rangemode": "tozero"},
              "legend": {"orientation": "h", "y": -0.3}, "paper_bgcolor": "rgba(0,0,0,0)", "plot_bgcolor": "rgba(0,0,0,0)",
              "font": {"family": "system-ui, sans-serif", "size": 11}}
    return {"data": traces, "layout": layout, "config": {"displayModeBar": False}}
