"""The layout's records: a region of the map and the layout itself (rows: the coarse SAE, then the fine)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


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
