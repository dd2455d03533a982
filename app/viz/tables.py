"""A saved view's tables as CSV (the csv module): per-token features, discovery selectivity, next-token shift and
dose-response; each reads only the stored result dict, so an export is exactly what the snapshot shows."""
from __future__ import annotations

import csv
import io
from typing import Callable, Iterable

Rows = tuple[list[str], Iterable[list]]
# a text cell starting with one of these is read as a formula by spreadsheets (a token "=HYPERLINK(...)" in an
# imported view would run in whoever opens the CSV): such cells get a leading apostrophe, the usual escape
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def cell(v):
    """One CSV cell: None -> "", text that a spreadsheet would run as a formula -> "'" + text, else v."""
    if v is None:
        return ""
    if isinstance(v, str) and v.startswith(FORMULA_START):
        return "'" + v
    return v


def write_csv(header, rows: Iterable[Iterable]) -> str:
    """CSV text (the csv module's quoting, \\n line ends) of a header and rows, each cell through `cell`."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows([cell(v) for v in row] for row in rows)
    return buf.getvalue()


def _features(result: dict) -> Rows:
    """One row per (position, SAE, rank): the features listed for each token."""
    header = ["position", "token", "sink", "sae", "rank", "feature", "activation", "rel_error", "cosine", "l0"]
    rows = ([t["position"], t["token"], t["sink"], sae, rank, i, v, s["rel_error"], s["cosine"], s["l0"]]
            for t in result["tokens"] for sae, s in t["saes"].items()
            for rank, (i, v) in enumerate(zip(s["indices"], s["values"]), start=1))
    return header, rows


def _discovery(result: dict) -> Rows:
    """One row per (SAE, feature) of the selectivity tables."""
    cols = ["index", "selectivity", "mean_concept", "mean_contrast", "fire_concept", "fire_contrast", "noisy", "top_prompt"]
    rows = ([sae] + [r.get(c) for c in cols] for sae, table in result["tables"].items() for r in table)
    return ["sae"] + cols, rows


def _shift(result: dict) -> Rows:
    """Next-token probabilities a (unsteered / without system prompt) vs b, one row per token."""
    cols = ["token_id", "token", "p_a", "p_b", "delta", "rank_a", "rank_b"]
    return cols, ([r[c] for c in cols] for r in result.get("shift", result.get("rows", [])))


def _dose(result: dict) -> Rows:
    """Next-token probability at each strength of every token the chart can plot: the tokens that moved most (its
    default; spread = max - min) and the decoder-promoted ones (logit_weight), one row each, `set` saying which."""
    header = ["set", "token_id", "token", "spread", "logit_weight"] + [f"p@{s:g}" for s in result["strengths"]]
    moved = (["moved", r["token_id"], r["token"], r["spread"], None, *r["probs"]] for r in result.get("moved", []))
    promoted = (["promoted", r["token_id"], r["token"], None, r["logit_weight"], *r["probs"]] for r in result["promoted"])
    return header, (row for rows in (moved, promoted) for row in rows)


def _patching_grid(result: dict) -> Rows:
    """One row per (layer, position) of the patching grids: exact and (when run) attribution normalised LD."""
    att = result.get("attribution_grid") or []
    header = ["site", "layer", "position", "token", "exact", "attribution"]
    rows = ([result["site"], layer, p, tok, result["grid"][i][p], att[i][p] if att else None]
            for i, layer in enumerate(result["layers"]) for p, tok in enumerate(result["tokens"]))
    return header, rows


def _heads(result: dict) -> Rows:
    """One row per head: its four scores."""
    names = list(result["scores"])
    return ["layer", "head", *names], ([layer, h, *(result["scores"][k][layer][h] for k in names)]
                                       for layer in range(result["n_layers"]) for h in range(result["n_heads"]))


# table name -> (the kinds that have it, how to read it)
TABLES: dict[str, tuple[tuple[str, ...], Callable[[dict], Rows]]] = {
    "features": (("analysis",), _features),
    "discovery": (("discovery",), _discovery),
    "shift": (("steering", "system_shift"), _shift),
    "dose": (("dose",), _dose),
    "patching_grid": (("patching",), _patching_grid),
    "heads": (("heads",), _heads),
}


def tables_of(kind: str) -> list[str]:
    """The CSV tables a saved view of this kind offers."""
    return [name for name, (kinds, _) in TABLES.items() if kind in kinds]


def table_csv(kind: str, result: dict, table: str) -> str | None:
    """The table as CSV text; None when this kind has no such table."""
    if table not in tables_of(kind):
        return None
    header, rows = TABLES[table][1](result)
    return write_csv(header, rows)
