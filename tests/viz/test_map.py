"""The map figure: level of detail for very wide SAEs, colourings, escaping (no model, no UMAP)."""
from __future__ import annotations

import numpy as np

from app.engine.layout import Layout, Region
from app.viz.map import map_figure, path_traces, visible_rows


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
    sent = {(t["customdata"][i][0], t["customdata"][i][1]) for t in fig["data"] for i in range(len(t["x"]))}
    assert len(sent) == len(want)
    fine = visible_rows(lay, table(lay, density), "fine", max_points=1000)
    assert fine.tolist() == list(range(20, 100))


def test_colours_and_escaping():
    lay = stand_in()
    tab = table(lay, np.full(lay.n, 0.01))
    fig = map_figure(lay, tab, "cluster", "both")
    colours = fig["data"][0]["marker"]["color"] + fig["data"][1]["marker"]["color"]
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
