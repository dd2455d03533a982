"""The map figure: level of detail for very wide SAEs, colourings, escaping (no model, no UMAP)."""
from __future__ import annotations

import numpy as np

from app.engine.layout import Layout, Region
from app.viz.map import map_figure, path_traces, visible_rows


def expanded(fig: dict) -> list[dict]:
    """The traces as static/map.js `expand` hands them to Plotly: customdata = [sae, index, density, example], colours."""
    out = []
    for t in fig["data"]:
        c = t.get("columns")
        if c is None:
            out.append(t)
            continue
        n = len(t["x"])
        idx = [c["index"] + i for i in range(n)] if isinstance(c["index"], int) else c["index"]
        u = {k: v for k, v in t.items() if k != "columns"} | {"customdata": [[c["sae"], idx[i], c["density"][i], ""] for i in range(n)]}
        if "colors" in c:
            u["marker"] = t["marker"] | {"color": [c["palette"][k] for k in c["colors"]]}
        out.append(u)
    return out


def stand_in(n_coarse=20, n_fine=80, seed=0):
    rng = np.random.default_rng(seed)
    n = n_coarse + n_fine
    cl = rng.integers(-1, 3, n).astype(np.int32)
    regs = tuple(Region(i, f"<b>r{i}</b>", int((cl == i).sum()), 0, (0.0, 0.0), ((0, 0), (1, 0), (0, 1), (0, 0))) for i in range(3))
    return Layout(("coarse", "fine"), (n_coarse, n_fine), rng.uniform(0, 1, (n, 2)).astype(np.float32), cl, regs, 0.1)


def table(lay, density):
    return {"sae": [lay.sae_names[s] for s in lay.sae_of_row()], "index": np.concatenate([np.arange(w) for w in lay.widths]),
            "density": density, "label": ["<i>x</i>"] * lay.n, "example": [""] * lay.n}


def test_level_of_detail_keeps_the_densest_and_the_prompts_features():
    lay = stand_in()
    density = np.random.default_rng(1).uniform(0, 1, lay.n)
    rows = visible_rows(lay, table(lay, density), "both", extra_rows=[0, 5], max_points=10)
    want = set(np.argsort(-density)[:10].tolist()) | {0, 5}
    assert set(rows.tolist()) == want
    fig = map_figure(lay, table(lay, density), "density", "both", None, extra_rows=[0, 5], max_points=10)
    sent = {(t["customdata"][i][0], t["customdata"][i][1]) for t in expanded(fig) for i in range(len(t["x"]))}
    assert len(sent) == len(want)
    fine = visible_rows(lay, table(lay, density), "fine", max_points=1000)
    assert fine.tolist() == list(range(20, 100))


def test_colours_and_escaping():
    lay = stand_in()
    tab = table(lay, np.full(lay.n, 0.01))
    fig = map_figure(lay, tab, "cluster", "both")
    traces = expanded(fig)
    colours = traces[0]["marker"]["color"] + traces[1]["marker"]["color"]
    noise = [c for c, k in zip(colours, lay.cluster) if k < 0]
    assert noise and set(noise) == {"#c7ccd4"}
    same = {}
    for c, k in zip(colours, lay.cluster):
        if k >= 0:
            same.setdefault(int(k), set()).add(c)
    assert all(len(v) == 1 for v in same.values()) and len({next(iter(v)) for v in same.values()}) == 3
    values = np.linspace(-1, 1, lay.n)
    cos = map_figure(lay, tab, "cosine", "both", values)
    assert cos["data"][0]["marker"]["color"] + cos["data"][1]["marker"]["color"] == np.round(values, 3).tolist()
    assert all("<b>" not in a["text"] for a in fig["layout"]["annotations"])  # region labels escaped
    res = {"paths": [{"name": "prompt", "points": [{"position": 1, "token": "<script>", "x": 0.5, "y": 0.5, "sink": False,
                                                     "top": [{"sae": "fine", "index": 3, "activation": 1.0, "label": "<b>"}]},
                                                    {"position": 0, "token": "a", "x": None, "y": None, "sink": True, "top": []}]}]}
    tr = path_traces(res)
    assert tr[0]["x"] == [0.5] and "<script>" not in tr[0]["text"][0] and "&lt;b&gt;" in tr[0]["hovertext"][0]


def test_points_travel_in_columns_with_three_decimals():
    """Per-point fields in columns (one sae and a start index per trace, densities, palette codes), coordinates as
    3-decimal floats: float32 coordinates printed 2.197999954223633 and one small array per point doubled the page."""
    lay = stand_in()
    density = np.r_[np.nan, np.linspace(1e-4, 0.5, lay.n - 1)]
    fig = map_figure(lay, table(lay, density), "cluster", "both")
    fine = fig["data"][1]
    assert "customdata" not in fine and fine["columns"]["sae"] == "fine" and fine["columns"]["index"] == 0
    assert len(fine["columns"]["palette"]) <= 4 and max(fine["columns"]["colors"]) < len(fine["columns"]["palette"])
    assert all(len(repr(v).partition(".")[2]) <= 3 for t in fig["data"] for v in t["x"] + t["y"])
    assert fine["x"] == np.round(lay.xy[20:, 0].astype(np.float64), 3).tolist()
    cd = expanded(fig)[0]["customdata"]
    assert cd[0] == ["coarse", 0, "—", ""] and cd[1] == ["coarse", 1, f"{100 * density[1]:.3g}%", ""]
    some = visible_rows(lay, table(lay, density), "both", extra_rows=[3, 25], max_points=10)
    lod = map_figure(lay, table(lay, density), "density", "both", None, extra_rows=[3, 25], max_points=10)
    assert any(isinstance(t["columns"]["index"], list) for t in lod["data"])  # rows with gaps: every index sent
    assert [row[1] for t in expanded(lod) for row in t["customdata"]] == [int(r) - (20 if r >= 20 else 0) for r in some]
