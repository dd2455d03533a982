"""Clusters of the 2D layout and the regions named after their features' labels."""
from __future__ import annotations

import re
from collections import Counter
from typing import Callable

import numpy as np

from app.engine.layout.base import Region


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


# English function words (articles, pronouns, auxiliaries, prepositions, conjunctions, common adverbs, contraction
# pieces): many features fire on them, so they are what the members of a region share most often, and they name
# nothing a reader can look for ("the · a · is" named two regions of the shipped map)
FUNCTION_WORDS = frozenset("""
a an the and or but nor so yet if then than as of in on at to for from by with about into onto over under up down out
off through during before after above below between among against within without via per upon
is are was were be been being am do does did done doing have has had having will would shall should can could may might
must i me my mine we us our ours you your yours he him his she her hers it its they them their theirs this that these
those who whom whose which what when where why how there here not no yes all any some each every both either neither
such own same other another more most much many few less least very too also just only even still again ever
s t d ll m re ve o y don isn aren wasn weren hasn haven hadn doesn didn won wouldn shan shouldn cannot couldn mustn
let one ones because since while whether rather like unless until though although however thus hence
""".split())


def content_word(w: str) -> bool:
    """A word that can name a region: not a function word, not a lone letter (digits stay: a region of numbers)."""
    return w not in FUNCTION_WORDS and not (len(w) == 1 and w.isalpha())


def label_words(label: str) -> list[str]:
    """Words of an atlas label, lowercased (punctuation, whitespace tokens and the label's own wording dropped)."""
    return [w.lower() for w in WORD_RE.findall(LABEL_MARKUP_RE.sub(" ", label or ""))]


def region_of(members: np.ndarray, xy: np.ndarray, cid: int, n_coarse: int,
              words: Counter | None, top_words: int = 3, taken: set | None = None) -> Region:
    """One region: centroid, soft hull (the 90% of members nearest the centroid), label from label words.

    taken: labels earlier (larger) regions already have; this one's label then swaps its last words for the next
    ranked ones until it differs (the region id is added when its words run out), and is added to taken.
    """
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
    ranked = tuple((w, n) for w, n in (words or Counter()).items())  # ranked by the caller
    common = ranked[:top_words]
    label = " · ".join(w for w, _ in common) if common else f"cluster {cid}"
    nxt = top_words
    while taken is not None and label in taken and common and nxt < len(ranked):
        common = common[:-1] + (ranked[nxt],)  # keep the strongest words, try the next one in the last place
        nxt += 1
        label = " · ".join(w for w, _ in common)
    if taken is not None:
        if label in taken:
            label = f"{label} ({cid})"
        taken.add(label)
    return Region(cid, label, int(len(members)), n_coarse, (round(float(c[0]), 4), round(float(c[1]), 4)), hull, common)


def telling_words(words: Counter, size: int, everywhere: Counter, n: int, min_count: int = 2,
                  min_lift: float = 2.0) -> Counter:
    """A region's label words ranked by count x log(lift), lift = (share of its members carrying the word) / (share of
    all features carrying it): "the" or "of" sit in every region's labels and name none (like the atlas's labels).
    Function words and lone letters are left out even where a region has more of them than the map (`content_word`)."""
    scored = []
    for w, k in words.items():
        if not content_word(w):
            continue
        lift = (k / size) / (everywhere[w] / n)
        if k >= min_count and lift >= min_lift:
            scored.append((-k * np.log(lift), w, k))
    return Counter({w: k for _, w, k in sorted(scored)})


def regions(cluster: np.ndarray, xy: np.ndarray, sae_of_row: np.ndarray,
            row_label: Callable[[int], str] | None = None) -> tuple[Region, ...]:
    """A Region per cluster id (0..), labelled by the words its members' atlas labels carry more than the map's do;
    no two regions share a label (ids are ordered by size, so the larger region keeps the plain one)."""
    per_row = [set(label_words(row_label(r))) for r in range(len(cluster))] if row_label is not None else None
    everywhere = Counter(w for ws in per_row for w in ws) if per_row is not None else Counter()
    out: list[Region] = []
    taken: set = set()
    for cid in range(int(cluster.max()) + 1 if len(cluster) else 0):
        members = np.flatnonzero(cluster == cid)
        words = None
        if per_row is not None:
            words = telling_words(Counter(w for r in members for w in per_row[r]), len(members), everywhere, len(cluster))
        out.append(region_of(members, xy, cid, int((sae_of_row[members] == 0).sum()), words, taken=taken))
    return tuple(out)
