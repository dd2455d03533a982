"""Per-point values the map colours by (map order: the layout's rows), from an engine's SAEs or a discovery result."""
from __future__ import annotations

from typing import Mapping

import numpy as np

from app.engine.layout.base import Layout
from app.engine.layout.neighbours import cosine_to


def decoder_cosines(lay: Layout, saes: Mapping, sae: str, index: int) -> np.ndarray | None:
    """[N] cosine of every mapped feature's decoder direction to feature `index` of SAE `sae`; None when there is no
    such feature."""
    if sae not in saes or not 0 <= index < int(saes[sae].W_dec.shape[0]):
        return None
    decs = {n: saes[n].W_dec.detach().float().cpu().numpy() for n in lay.sae_names}
    return cosine_to(decs, sae, index)


def selectivity_vector(lay: Layout, tables: Mapping[str, list]) -> np.ndarray:
    """[N] a discovery's selectivity per mapped feature (its `tables`: sae -> rows with index and selectivity);
    NaN for features it did not score."""
    v = np.full(lay.n, np.nan)
    for sae, rows in tables.items():
        if sae not in lay.sae_names:
            continue
        off, width = lay.offset(sae), lay.widths[lay.sae_names.index(sae)]
        for r in rows:
            if 0 <= int(r["index"]) < width:
                v[off + int(r["index"])] = float(r["selectivity"])
    return v
