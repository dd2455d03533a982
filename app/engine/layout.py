"""The map of activation space: one 2D layout of both SAEs' decoder directions, its regions and its honesty figure.

Pure computation (numpy / scipy / scikit-learn / umap-learn; no FastAPI, no model). Built once per SAE pair
(`build_layout`), stored beside the atlas as `layout.npz` (`save_layout` / `load_layout`), read at request time
without UMAP: placing a prompt's tokens (`token_positions`) is a weighted mean of stored coordinates.
"""
from __future__ import annotations

import json
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

LAYOUT_FILE = "layout.npz"
LAYOUT_VERSION = 1
NEIGHBOURS = 10  # the honesty figure: share of each point's 10 nearest cosine neighbours that are 2D neighbours


@dataclass(frozen=True)
class Region:
    """One cluster of the layout, drawn as a soft region with its label."""

    id: int
    label: str  # the atlas label words its members carry more than the map does, or "cluster N"
    size: int  # member features (both SAEs)
    n_coarse: int
    centroid: tuple[float, float]  # median of the members' 2D positions
    hull: tuple[tuple[float, float], ...]  # convex hull of the 90% of members nearest the centroid (closed polygon)
    words: tuple[tuple[str, int], ...] = ()  # (label word, members carrying it), most telling first


@dataclass(frozen=True, eq=False)
class Layout:
    """2D coordinates of every feature of an SAE pair; rows are coarse features first, then fine."""

    sae_names: tuple[str, ...]  # ("coarse", "fine")
    widths: tuple[int, ...]  # (2048, 16384)
    xy: np.ndarray  # [N, 2] float32, N = sum(widths)
    cluster: np.ndarray  # [N] int32, -1 = no region (HDBSCAN noise)
    regions: tuple[Region, ...]
    preservation: float  # mean share of the 10 nearest cosine neighbours that are among the 10 nearest in 2D
    params: dict = field(default_factory=dict)  # seed, n_neighbors, min_dist, n_epochs, min_cluster_size
    fingerprint: str = ""  # SAE weights fingerprint the layout was built from
    seconds: float = 0.0  # build time

    @property
    def n(self) -> int:
        return int(self.xy.shape[0])

    def offset(self, sae: str) -> int:
        i = self.sae_names.index(sae)
        return int(sum(self.widths[:i]))

    def rows(self, sae: str) -> slice:
        """Rows of `sae`'s features in xy / cluster."""
        o = self.offset(sae)
        return slice(o, o + self.widths[self.sae_names.index(sae)])

    def sae_of_row(self) -> np.ndarray:
        """[N] int: index into sae_names of each row."""
        return np.repeat(np.arange(len(self.widths)), self.widths)


# --- neighbours -------------------------------------------------------------------------------------------

def unit_rows(X: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (float32); zero rows stay zero."""
    X = np.asarray(X, dtype=np.float32)
    n = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.maximum(n, 1e-12)


def cosine_knn(X: np.ndarray, k: int, block: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest cosine neighbours of every row (self excluded) -> (indices [N, k], cosine distances [N, k]).

    Blocked matmul on unit rows: [block, N] similarities at a time (18k x 2048 fp32 = 150 MB), never [N, N].
    Ties are broken by index (stable sort), so the result is deterministic.
    """
    U = unit_rows(X)
    N = U.shape[0]
    k = min(k, N - 1)
    idx = np.empty((N, k), dtype=np.int64)
    dist = np.empty((N, k), dtype=np.float32)
    for s in range(0, N, block):
        sim = U[s: s + block] @ U.T  # [b, N]
        rows = np.arange(sim.shape[0])
        sim[rows, s + rows] = -np.inf  # not its own neighbour
        # self sits at +inf in -sim, so it is never among the first k (k <= N - 1)
        part = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        ps = np.take_along_axis(sim, part, axis=1)
        order = np.lexsort((part, -ps), axis=1)  # most similar first, ties by index
        part = np.take_along_axis(part, order, axis=1)
        idx[s: s + block] = part
        dist[s: s + block] = 1.0 - np.take_along_axis(sim, part, axis=1)
    return idx, np.clip(dist, 0.0, 2.0)


def planar_knn(Y: np.ndarray, k: int) -> np.ndarray:
    """k nearest Euclidean neighbours in 2D of every row (self excluded) -> [N, k] (kd-tree)."""
    from scipy.spatial import cKDTree

    Y = np.asarray(Y, dtype=np.float64)
    k = min(k, len(Y) - 1)
    _, ii = cKDTree(Y).query(Y, k=k + 1)
    out = np.empty((len(Y), k), dtype=np.int64)
    for r, row in enumerate(ii):  # self is usually first, but not when points coincide
        row = [j for j in row if j != r][:k]
        out[r] = row
    return out


def neighbour_preservation(knn_high: np.ndarray, knn_low: np.ndarray) -> float:
    """Mean over points of |high-dim neighbours ∩ 2D neighbours| / k (1 = every neighbourhood kept)."""
    k = knn_high.shape[1]
    hits = [len(np.intersect1d(a, b, assume_unique=True)) for a, b in zip(knn_high, knn_low)]
    return float(np.mean(hits) / k)


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


def clusters(xy: np.ndarray, min_cluster_size: int, min_samples: int | None = None,
             max_cluster_size: int | None = None) -> np.ndarray:
    """HDBSCAN on the 2D positions -> [N] int32 labels, -1 for points in no cluster; ids ordered by size.

    max_cluster_size (default N // 4) stops "excess of mass" from answering "one blob": on real SAE decoders most
    of the map is one dense mass (the shipped 18k: 80 % in one cluster without the cap), and the regions worth
    naming are the denser neighbourhoods inside it.
    """
    from sklearn.cluster import HDBSCAN

    n = len(xy)
    mcs = max(2, min_cluster_size)
    lab = HDBSCAN(min_cluster_size=mcs, min_samples=max(2, min_samples or mcs // 4),
                  max_cluster_size=max(mcs + 1, max_cluster_size or n // 4), copy=True
                  ).fit_predict(np.asarray(xy, dtype=np.float64))
    ids = [c for c in np.unique(lab) if c >= 0]
    ids.sort(key=lambda c: (-int((lab == c).sum()), int(np.flatnonzero(lab == c)[0])))
    remap = {c: i for i, c in enumerate(ids)}
    return np.array([remap.get(int(c), -1) for c in lab], dtype=np.int32)


WORD_RE = re.compile(r"[^\W_]+", re.UNICODE)


# an atlas label's own wording, not what its feature fires on: "(no selective token)", "(never fires on the atlas
# corpus)" (a parenthesised group without a " · " list, so not "( · the · )") and the "in:" of "(in: France · Paris)"
LABEL_MARKUP_RE = re.compile(r"\((?!in: )[^()·]*\)|\(in: ")


def label_words(label: str) -> list[str]:
    """Words of an atlas label, lowercased (punctuation, whitespace tokens and the label's own wording dropped)."""
    return [w.lower() for w in WORD_RE.findall(LABEL_MARKUP_RE.sub(" ", label or ""))]


def region_of(members: np.ndarray, xy: np.ndarray, cid: int, n_coarse: int,
              words: Counter | None, top_words: int = 3) -> Region:
    """One region: centroid, soft hull (the 90% of members nearest the centroid), label from label words."""
    pts = xy[members].astype(np.float64)
    c = np.median(pts, axis=0)
    d = np.linalg.norm(pts - c, axis=1)
    core = pts[d <= np.quantile(d, 0.9)] if len(pts) >= 10 else pts
    hull: tuple = ()
    if len(core) >= 3:
        try:
            from scipy.spatial import ConvexHull

            h = ConvexHull(core)
            poly = core[h.vertices]
            hull = tuple((round(float(x), 4), round(float(y), 4)) for x, y in np.vstack([poly, poly[:1]]))
        except Exception:  # collinear points: no area to draw
            hull = ()
    common = tuple((w, n) for w, n in (words or Counter()).items())[:top_words]  # ranked by the caller
    label = " · ".join(w for w, _ in common) if common else f"cluster {cid}"
    return Region(cid, label, int(len(members)), n_coarse, (round(float(c[0]), 4), round(float(c[1]), 4)), hull, common)


def telling_words(words: Counter, size: int, everywhere: Counter, n: int, min_count: int = 2,
                  min_lift: float = 2.0) -> Counter:
    """A region's label words ranked by count x log(lift), lift = (share of its members carrying the word) / (share of
    all features carrying it): "the" or "of" sit in every region's labels and name none (like the atlas's labels)."""
    scored = []
    for w, k in words.items():
        lift = (k / size) / (everywhere[w] / n)
        if k >= min_count and lift >= min_lift:
            scored.append((-k * np.log(lift), w, k))
    return Counter({w: k for _, w, k in sorted(scored)})


def regions(cluster: np.ndarray, xy: np.ndarray, sae_of_row: np.ndarray,
            row_label: Callable[[int], str] | None = None) -> tuple[Region, ...]:
    """A Region per cluster id (0..), labelled by the words its members' atlas labels carry more than the map's do."""
    per_row = [set(label_words(row_label(r))) for r in range(len(cluster))] if row_label is not None else None
    everywhere = Counter(w for ws in per_row for w in ws) if per_row is not None else Counter()
    out = []
    for cid in range(int(cluster.max()) + 1 if len(cluster) else 0):
        members = np.flatnonzero(cluster == cid)
        words = None
        if per_row is not None:
            words = telling_words(Counter(w for r in members for w in per_row[r]), len(members), everywhere, len(cluster))
        out.append(region_of(members, xy, cid, int((sae_of_row[members] == 0).sum()), words))
    return tuple(out)


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


def cosine_to(decoders: Mapping[str, np.ndarray], sae: str, index: int) -> np.ndarray:
    """[N] cosine of every decoder row (map order) to one feature's decoder direction."""
    v = unit_rows(np.asarray(decoders[sae][index])[None, :])[0]
    return np.concatenate([unit_rows(np.asarray(m)) @ v for m in decoders.values()])
