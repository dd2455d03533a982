"""Finding places on the map by word: regions whose name or words match, features by atlas hits or by id."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from app.engine.layout.base import Layout, Region
from app.engine.layout.regions import WORD_RE

ID_RE = re.compile(r"^\s*(coarse|fine|c|f)\s*[:#\- ]?\s*(\d{1,7})\s*$", re.IGNORECASE)
SAE_PREFIX = {"c": "coarse", "f": "fine", "coarse": "coarse", "fine": "fine"}


@dataclass(frozen=True)
class Box:
    """What to show to see a place: x0 <= x <= x1, y0 <= y <= y1 (layout units)."""
    x0: float
    x1: float
    y0: float
    y1: float


@dataclass(frozen=True)
class RegionHit:
    id: int
    label: str
    size: int
    centroid: tuple[float, float]
    box: Box
    matched: tuple[str, ...]  # the query words its name or words matched


@dataclass(frozen=True)
class PointHit:
    sae: str
    index: int
    x: float
    y: float
    region: int  # -1: in no region
    box: Box


@dataclass(frozen=True)
class MapSearch:
    query: str
    regions: tuple[RegionHit, ...]
    features: tuple[PointHit, ...]


def query_words(query: str) -> list[str]:
    """The query's words, lowercased, in order, each once."""
    return list(dict.fromkeys(w.lower() for w in WORD_RE.findall(query or "")))


def parse_feature_id(query: str, sae_names: Sequence[str]) -> tuple[str, int] | None:
    """'fine:123', 'coarse 12', 'C-1332', 'f#5' -> (sae, index); None when the query is not a feature id."""
    m = ID_RE.match(query or "")
    if not m:
        return None
    sae = SAE_PREFIX[m.group(1).lower()]
    return (sae, int(m.group(2))) if sae in sae_names else None


def padded_box(xs: np.ndarray, ys: np.ndarray, span: tuple[float, float], min_share: float = 0.06) -> Box:
    """A box around the points with 15 % margin, at least min_share of the whole map's span on each axis."""
    cx, cy = (float(xs.min()) + float(xs.max())) / 2, (float(ys.min()) + float(ys.max())) / 2
    w = max(float(xs.max() - xs.min()) * 1.3, min_share * span[0])
    h = max(float(ys.max() - ys.min()) * 1.3, min_share * span[1])
    return Box(round(cx - w / 2, 4), round(cx + w / 2, 4), round(cy - h / 2, 4), round(cy + h / 2, 4))


def map_span(layout: Layout) -> tuple[float, float]:
    if not layout.n:
        return (1.0, 1.0)
    d = layout.xy.max(axis=0) - layout.xy.min(axis=0)
    return (max(float(d[0]), 1e-6), max(float(d[1]), 1e-6))


def region_box(layout: Layout, region: Region) -> Box:
    """The box around a region's soft hull (its members' positions when it has no hull)."""
    if region.hull:
        pts = np.asarray(region.hull, dtype=np.float64)
    else:
        pts = layout.xy[layout.cluster == region.id].astype(np.float64)
        if not len(pts):
            pts = np.asarray([region.centroid], dtype=np.float64)
    return padded_box(pts[:, 0], pts[:, 1], map_span(layout))


def point_hit(layout: Layout, sae: str, index: int) -> PointHit:
    row = layout.offset(sae) + index
    x, y = float(layout.xy[row, 0]), float(layout.xy[row, 1])
    return PointHit(sae, index, round(x, 4), round(y, 4), int(layout.cluster[row]),
                    padded_box(np.array([x]), np.array([y]), map_span(layout), min_share=0.08))


def matching_regions(layout: Layout, words: Sequence[str]) -> list[RegionHit]:
    """Regions whose name or telling words start with a query word; most words matched first, then the larger."""
    hits = []
    for r in layout.regions:
        names = set(w.lower() for w in WORD_RE.findall(r.label)) | {w for w, _ in r.words}
        matched = tuple(q for q in words if any(n.startswith(q) for n in names))
        if matched:
            hits.append((-len(matched), -r.size, r.id, matched))
    hits.sort()
    return [RegionHit(layout.regions[i].id, layout.regions[i].label, layout.regions[i].size,
                      layout.regions[i].centroid, region_box(layout, layout.regions[i]), m) for _, _, i, m in hits]


def search_map(layout: Layout, query: str, feature_hits: Sequence[tuple[str, int]] = (), max_regions: int = 10,
               max_features: int = 20) -> MapSearch:
    """Places on the map for a query: the matching regions, then the features (an id like 'fine:12' first, then
    `feature_hits` in the order given, e.g. the atlas search's best first), each with the box to show it in.
    An id alone ('fine:12') finds that feature only ("12" would otherwise match a region called "cluster 12")."""
    words = query_words(query)
    feats: list[PointHit] = []
    seen = set()
    by_id = parse_feature_id(query, layout.sae_names)
    wanted = ([by_id] if by_id is not None else []) + list(feature_hits)
    for sae, index in wanted:
        if sae not in layout.sae_names or not 0 <= index < layout.widths[layout.sae_names.index(sae)]:
            continue
        if (sae, index) in seen:
            continue
        seen.add((sae, index))
        feats.append(point_hit(layout, sae, int(index)))
        if len(feats) >= max_features:
            break
    regs = () if by_id is not None else tuple(matching_regions(layout, words)[:max_regions])  # an id names one feature
    return MapSearch(query.strip(), regs, tuple(feats))
