"""The attribution figure (app/viz/attribution.py): each dot is numbered with its table row, the name in the hover
(issue 25 item 8: names printed beside close dots overlapped, e.g. "GDP···Military")."""
from __future__ import annotations

from app.viz.attribution import ablation_figure


def feature(i, label, actual):
    return {"sae": "fine" if i % 2 else "coarse", "index": 11991 + i, "label": label, "attribution": 1.0 - i / 10,
            "estimate": -(1.0 - i / 10), "actual": actual}


def test_dots_are_numbered_as_the_table_and_named_in_the_hover():
    feats = [feature(0, "GDP · Military · Python", -0.9), feature(1, "<b>x</b> · Military", None),
             feature(2, "GDP · Military", -0.85), feature(3, "", 0.1)]
    fig = ablation_figure({"features": feats, "correlation": 0.5})
    dots = fig["data"][1]
    # the table's # column is the 1-based place in result.features; unvalidated rows have no dot
    assert dots["text"] == ["1", "3", "4"]
    assert dots["x"] == [f["estimate"] for f in feats if f["actual"] is not None]
    assert dots["textposition"] == "middle center" and dots["marker"]["size"] >= 2 * dots["textfont"]["size"] - 2
    assert dots["customdata"] == ["#1 · C-11991 GDP · Military · Python", "#3 · C-11993 GDP · Military",
                                  "#4 · F-11994"]
    assert "%{customdata}" in dots["hovertemplate"]
    names = ablation_figure({"features": [feature(1, "<b>x</b>", 0.2)], "correlation": None})["data"][1]["customdata"]
    assert names == ["#1 · F-11992 &lt;b&gt;x&lt;/b&gt;"]  # escaped: Plotly renders a subset of HTML
