"""Plotly figures built in Python and shipped as JSON dicts (drawn by static/figures.js)."""
from app.viz.lens import lens_figure, visible

__all__ = ["lens_figure", "visible"]
