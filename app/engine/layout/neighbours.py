"""Nearest neighbours by cosine (high-dimensional) and in the plane, and how well the plane keeps them."""
from __future__ import annotations

from typing import Mapping

import numpy as np


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


def cosine_to(decoders: Mapping[str, np.ndarray], sae: str, index: int) -> np.ndarray:
    """[N] cosine of every decoder row (map order) to one feature's decoder direction."""
    v = unit_rows(np.asarray(decoders[sae][index])[None, :])[0]
    return np.concatenate([unit_rows(np.asarray(m)) @ v for m in decoders.values()])
