"""The map of activation space: one 2D layout of both SAEs' decoder directions, its regions and its honesty figure.

Pure computation (numpy / scipy / scikit-learn / umap-learn; no FastAPI, no model). Built once per SAE pair
(`build_layout`), stored beside the atlas as `layout.npz` (`save_layout` / `load_layout`), read at request time
without UMAP: placing a prompt's tokens (`token_positions`) is a weighted mean of stored coordinates.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from app.engine.layout.base import Layout, Region
from app.engine.layout.neighbours import cosine_knn, cosine_to, neighbour_preservation, planar_knn, unit_rows
from app.engine.layout.regions import (
    FUNCTION_WORDS,
    LABEL_MARKUP_RE,
    WORD_RE,
    clusters,
    content_word,
    label_words,
    region_of,
    regions,
    telling_words,
)

__all__ = ["LAYOUT_FILE", "LAYOUT_VERSION", "NEIGHBOURS", "Layout", "Region", "cosine_knn", "cosine_to",
           "neighbour_preservation", "planar_knn", "unit_rows", "FUNCTION_WORDS", "content_word", "LABEL_MARKUP_RE", "WORD_RE", "clusters", "label_words",
           "region_of", "regions", "telling_words", "rename_regions", "umap_xy", "build_layout", "save_layout", "load_layout",
           "token_positions", "sparse_token_positions"]

LAYOUT_FILE = "layout.npz"
LAYOUT_VERSION = 1
NEIGHBOURS = 10  # the honesty figure: share of each point's 10 nearest cosine neighbours that are 2D neighbours


# --- layout -----------------------------------------------------------------------------------------------

def umap_xy(X: np.ndarray, seed: int, n_neighbors: int = 15, min_dist: float = 0.1, n_epochs: int | None = None,
            knn: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """UMAP (cosine metric) of the rows of X -> [N, 2] float32; deterministic for a seed (single-threaded).

    `knn` (indices, cosine distances) from `cosine_knn` replaces UMAP's approximate neighbour search with the
    exact neighbours (faster at 18k points, and the same neighbours the honesty figure uses).
    """
    import warnings

    import umap

    kw = {}
    if knn is not None:
        ii, dd = knn
        self_col = np.arange(len(X))[:, None]
        kw["precomputed_knn"] = (np.hstack([self_col, ii[:, : n_neighbors - 1]]),
                                 np.hstack([np.zeros_like(self_col, dtype=np.float32), dd[:, : n_neighbors - 1]]), None)
    reducer = umap.UMAP(n_components=2, metric="cosine", n_neighbors=n_neighbors, min_dist=min_dist,
                        n_epochs=n_epochs, random_state=seed, transform_seed=seed, n_jobs=1, low_memory=True, verbose=False, **kw)
    with warnings.catch_warnings():  # "n_jobs overridden by random_state" and "no transform index": both intended
        warnings.simplefilter("ignore", UserWarning)
        Y = reducer.fit_transform(unit_rows(X))
    return np.asarray(Y, dtype=np.float32)


def build_layout(decoders: Mapping[str, np.ndarray], *, seed: int = 0, n_neighbors: int = 15, min_dist: float = 0.1,
                 n_epochs: int | None = None, min_cluster_size: int | None = None,
                 label_fn: Callable[[str, int], str] | None = None, fingerprint: str = "") -> Layout:
    """Layout of every decoder row of every SAE (one shared map): UMAP(cosine), HDBSCAN regions, preservation@10.

    decoders: {sae name -> W_dec [d_sae, d_model]} in map order (coarse first). label_fn(sae, index) -> atlas
    label (None: regions are named "cluster N"). min_cluster_size defaults to max(5, N // 300).
    """
    t0 = time.perf_counter()
    names = tuple(decoders)
    mats = [np.asarray(decoders[n], dtype=np.float32) for n in names]
    widths = tuple(int(m.shape[0]) for m in mats)
    X = np.vstack(mats)
    N = X.shape[0]
    knn = cosine_knn(X, max(NEIGHBOURS, n_neighbors))
    xy = umap_xy(X, seed, n_neighbors=n_neighbors, min_dist=min_dist, n_epochs=n_epochs, knn=knn)
    pres = neighbour_preservation(knn[0][:, :NEIGHBOURS], planar_knn(xy, NEIGHBOURS))
    mcs = min_cluster_size or max(5, N // 300)
    cl = clusters(xy, mcs)
    sae_row = np.repeat(np.arange(len(widths)), widths)
    offsets = np.concatenate([[0], np.cumsum(widths)[:-1]])
    row_label = None
    if label_fn is not None:
        def row_label(r: int) -> str:
            s = int(sae_row[r])
            return label_fn(names[s], r - int(offsets[s]))
    regs = regions(cl, xy, sae_row, row_label)
    params = {"seed": seed, "n_neighbors": n_neighbors, "min_dist": min_dist, "n_epochs": n_epochs,
              "min_cluster_size": mcs, "min_samples": max(2, mcs // 4), "max_cluster_size": N // 4,
              "metric": "cosine", "k": NEIGHBOURS}
    return Layout(names, widths, xy, cl, regs, pres, params, fingerprint, time.perf_counter() - t0)


def rename_regions(layout: Layout, label_fn: Callable[[str, int], str]) -> Layout:
    """The same layout (positions, clusters, hulls) with its regions named again from label_fn(sae, index): what
    `python -m app map --names-only` writes when only the naming rule changed (no UMAP, the map keeps its shape)."""
    names = layout.sae_names
    sae_row = layout.sae_of_row()
    offsets = [layout.offset(n) for n in names]

    def row_label(r: int) -> str:
        s = int(sae_row[r])
        return label_fn(names[s], r - offsets[s])

    regs = regions(layout.cluster, layout.xy, sae_row, row_label)
    return Layout(layout.sae_names, layout.widths, layout.xy, layout.cluster, regs, layout.preservation, layout.params,
                  layout.fingerprint, layout.seconds)


# --- storage ----------------------------------------------------------------------------------------------

def save_layout(folder: str | Path, layout: Layout) -> Path:
    """Write folder/layout.npz (coordinates, clusters, and the rest as one JSON string; no pickle)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    meta = {"version": LAYOUT_VERSION, "sae_names": list(layout.sae_names), "widths": list(layout.widths),
            "preservation": layout.preservation, "params": layout.params, "fingerprint": layout.fingerprint,
            "seconds": layout.seconds,
            "regions": [{"id": r.id, "label": r.label, "size": r.size, "n_coarse": r.n_coarse,
                         "centroid": list(r.centroid), "hull": [list(p) for p in r.hull],
                         "words": [list(w) for w in r.words]} for r in layout.regions]}
    path = folder / LAYOUT_FILE
    tmp = folder / (LAYOUT_FILE + ".tmp.npz")
    np.savez_compressed(tmp, xy=layout.xy.astype(np.float32), cluster=layout.cluster.astype(np.int32),
                        meta=np.array(json.dumps(meta)))
    tmp.replace(path)  # readers never see half a file
    return path


def load_layout(folder: str | Path) -> Layout | None:
    """The layout stored in folder (None when there is none)."""
    path = Path(folder) / LAYOUT_FILE
    if not path.exists():
        return None
    with np.load(path, allow_pickle=False) as z:
        xy, cl, meta = z["xy"], z["cluster"], json.loads(str(z["meta"]))
    regs = tuple(Region(r["id"], r["label"], r["size"], r["n_coarse"], tuple(r["centroid"]),
                        tuple(tuple(p) for p in r["hull"]), tuple((w, int(n)) for w, n in r["words"]))
                 for r in meta["regions"])
    return Layout(tuple(meta["sae_names"]), tuple(meta["widths"]), xy, cl, regs, float(meta["preservation"]),
                  meta["params"], meta.get("fingerprint", ""), float(meta.get("seconds", 0.0)))


# --- prompts on the map -----------------------------------------------------------------------------------

def token_positions(layout: Layout, acts: Mapping[str, np.ndarray]) -> np.ndarray:
    """Each token's place on the map: the activation-weighted mean position of its active features.

    acts: {sae name -> [pos, d_sae] feature activations} (any subset of the layout's SAEs; all given are pooled).
    -> [pos, 2] float64; NaN where no feature is active. pos_t = sum_f a_tf * xy_f / sum_f a_tf over a_tf > 0.
    """
    num, den = None, None
    for name, a in acts.items():
        a = np.asarray(a, dtype=np.float64)
        a = np.where(a > 0, a, 0.0)
        xy = layout.xy[layout.rows(name)].astype(np.float64)
        n, d = a @ xy, a.sum(axis=1)
        num = n if num is None else num + n
        den = d if den is None else den + d
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den[:, None] > 0, num / den[:, None], np.nan)


def sparse_token_positions(layout: Layout, active: Mapping[str, list]) -> list:
    """token_positions for sparse input: {sae -> per token [(index, activation), ...]} -> per token (x, y) or None."""
    n_tok = max((len(v) for v in active.values()), default=0)
    out = []
    for t in range(n_tok):
        sx = sy = w = 0.0
        for name, per_tok in active.items():
            o = layout.offset(name)
            for i, a in per_tok[t]:
                if a > 0:
                    x, y = layout.xy[o + int(i)]
                    sx += a * float(x)
                    sy += a * float(y)
                    w += a
        out.append((sx / w, sy / w) if w > 0 else None)
    return out
