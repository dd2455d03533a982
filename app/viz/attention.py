"""The attention panel of the analysis view: every head's pattern as a small multiple, drawn on canvases by
static/attention.js (30 x 9 plotly heatmaps take seconds to draw; a canvas each takes microseconds), and each head's
direct logit attribution (DLA) as a colour under its pattern.

Patterns travel as bytes: round(p · 255) per weight (|error| <= 1/510), [layer][head][query][key] row-major, base64.
"""
from __future__ import annotations

import base64

import numpy as np

LEVELS = 255
POS, NEG = (178, 24, 43), (33, 102, 172)  # raises / lowers the target's logit (RdBu ends)


def quantise(patterns) -> bytes:
    """[layer, head, query, key] probabilities -> uint8 bytes of round(p · 255), row-major."""
    return np.clip(np.rint(np.asarray(patterns, dtype=np.float64) * LEVELS), 0, LEVELS).astype(np.uint8).tobytes()


def dla_colour(value: float, scale: float) -> str:
    """A diverging colour for one head's DLA: white at 0, POS / NEG at +-scale."""
    t = 0.0 if not scale else max(-1.0, min(1.0, value / scale))
    end = POS if t > 0 else NEG
    rgb = (round(255 + (c - 255) * abs(t)) for c in end)
    return "#" + "".join(f"{c:02x}" for c in rgb)


def attention_panel(inputs: dict, result: dict) -> dict:
    """What attention.js draws: {tokens, layers, heads, size, patterns (base64), scale} and per head its DLA, colour."""
    dla = np.asarray(result["dla"], dtype=np.float64)
    scale = float(np.abs(dla).max()) if dla.size else 0.0
    cells = [[{"dla": float(v), "colour": dla_colour(float(v), scale)} for v in row] for row in dla]
    return {"tokens": list(result["tokens"]), "layers": int(result["n_layers"]), "heads": int(result["n_heads"]),
            "size": len(result["tokens"]), "patterns": base64.b64encode(quantise(result["patterns"])).decode("ascii"),
            "scale": scale, "cells": cells}


def top_dla(result: dict, n: int = 5) -> dict:
    """The n heads raising the target's logit most and the n lowering it most: {"up": [...], "down": [...]} of
    {layer, head, dla}."""
    dla = np.asarray(result["dla"], dtype=np.float64)
    order = np.argsort(-dla, axis=None, kind="stable")
    heads = dla.shape[1] if dla.ndim == 2 else 1
    row = lambda i: {"layer": int(i // heads), "head": int(i % heads), "dla": float(dla.flat[i])}  # noqa: E731
    return {"up": [row(i) for i in order[:n] if dla.flat[i] > 0],
            "down": [row(i) for i in order[::-1][:n] if dla.flat[i] < 0]}
