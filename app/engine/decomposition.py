"""Cross-resolution mapping: which fine-SAE features are sub-features of a coarse-SAE feature.

Two pieces of evidence per (coarse, fine) pair:
- behaviour: Pearson correlation of their per-prompt activations across all prompts (concept + contrast);
- geometry: cosine similarity of their decoder rows (directions in the residual stream).
Scanning ALL fine features (the histogram and the GO/NO-GO count) is done in chunks of decoder rows, so the
dense coarse x fine matrix never exists beyond [n_coarse, chunk].
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

KINDS = ("blue", "orange", "red", "grey")
SCAN_CAP = 1000  # fine matches kept per coarse feature (cosine >= floor, best first)
KIND_LABELS = {
    "blue": "sub-feature (correlated and aligned)",
    "orange": "partial overlap",
    "red": "co-occurring concept (correlated, cosine near 0)",
    "grey": "unrelated",
}


@dataclass(frozen=True)
class CosineScan:
    """Cosine of each coarse decoder row against every fine decoder row, kept compact."""

    coarse: tuple[int, ...]
    n_fine: int
    bin_edges: tuple[float, ...]  # len(bins) + 1, over [-1, 1]
    counts: tuple[tuple[int, ...], ...]  # [coarse][bin]
    matches: tuple[tuple[tuple[int, float], ...], ...]  # [coarse] -> (fine index, cosine) >= floor, best first
    floor: float
    max_cosine: tuple[float, ...]  # best cosine per coarse feature (even below the floor)


def pearson_columns(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """[Na, Nb] Pearson correlation between columns of a [P, Na] and b [P, Nb]; constant columns give 0."""
    a = a.double() - a.double().mean(0)
    b = b.double() - b.double().mean(0)
    na, nb = a.norm(dim=0), b.norm(dim=0)
    c = (a.T @ b) / (na[:, None] * nb[None, :]).clamp_min(1e-300)
    c[na == 0] = 0.0
    c[:, nb == 0] = 0.0
    return c.clamp(-1, 1).float()


def decoder_cosine(wa: torch.Tensor, wb: torch.Tensor) -> torch.Tensor:
    """[Na, Nb] cosine similarity between rows of wa [Na, d] and wb [Nb, d]."""
    wa = wa.float()
    wb = wb.float()
    return (wa / wa.norm(dim=-1, keepdim=True).clamp_min(1e-12)) @ (wb / wb.norm(dim=-1, keepdim=True).clamp_min(1e-12)).T


def scan_cosines(coarse_dec: torch.Tensor, coarse_idx, fine_W_dec: torch.Tensor, chunk: int = 16384,
                 floor: float = 0.1, cap: int = SCAN_CAP, bins: int = 100) -> CosineScan:
    """Cosine of coarse decoder rows [Nc, d] against every row of fine_W_dec [F, d], chunk rows at a time.

    Keeps a histogram over [-1, 1] per coarse feature and the fine features with cosine >= floor (at most cap,
    best first). Peak extra memory ~ chunk x (d + Nc) floats on the decoder's device.
    """
    dev = fine_W_dec.device
    c = coarse_dec.to(dev, torch.float32)
    c = c / c.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    nc, F = c.shape[0], fine_W_dec.shape[0]
    counts = torch.zeros(nc, bins, dtype=torch.int64)
    best = torch.full((nc,), -2.0)
    hits_i = [[] for _ in range(nc)]
    hits_v = [[] for _ in range(nc)]
    for s in range(0, F, chunk):
        w = fine_W_dec[s:s + chunk].float()
        w = w / w.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        cos = (c @ w.T).clamp(-1, 1)  # [nc, chunk]
        b = ((cos + 1) / 2 * bins).long().clamp(0, bins - 1)
        for j in range(nc):
            counts[j] += torch.bincount(b[j], minlength=bins).cpu()
            best[j] = max(best[j].item(), cos[j].max().item())
            keep = (cos[j] >= floor).nonzero(as_tuple=True)[0]
            if keep.numel():
                hits_i[j].append((keep + s).cpu())
                hits_v[j].append(cos[j, keep].cpu())
    matches = []
    for j in range(nc):
        if hits_i[j]:
            ii, vv = torch.cat(hits_i[j]), torch.cat(hits_v[j])
            o = torch.argsort(vv, descending=True)[:cap]
            matches.append(tuple((int(ii[k]), float(vv[k])) for k in o))
        else:
            matches.append(())
    edges = tuple(float(x) for x in torch.linspace(-1, 1, bins + 1))
    return CosineScan(tuple(int(i) for i in coarse_idx), F, edges, tuple(tuple(int(x) for x in row) for row in counts),
                      tuple(matches), floor, tuple(float(x) for x in best))


def classify(corr: float, cos: float, cos_threshold: float = 0.3, corr_threshold: float = 0.3,
             cos_near_zero: float = 0.1) -> str:
    """The seed's colours: blue = correlated and aligned (cos >= cos_threshold, corr >= corr_threshold);
    red = correlated but |cos| < cos_near_zero (a co-occurring concept); orange = partial overlap (correlated
    with cosine in between, or aligned without enough correlation); grey = neither."""
    aligned = cos >= cos_threshold
    correlated = corr >= corr_threshold
    if aligned and correlated:
        return "blue"
    if correlated and abs(cos) < cos_near_zero:
        return "red"
    if correlated or aligned:
        return "orange"
    return "grey"


@dataclass(frozen=True)
class GoNoGoRow:
    """GO/NO-GO for one coarse feature: GO when at least `need` fine features have decoder cosine >= threshold."""

    coarse: int
    n_above: int
    go: bool
    above: tuple[tuple[int, float], ...]  # (fine, cosine) at or above the threshold, best first
    top: tuple[tuple[int, float], ...]  # the best matches regardless of the threshold (up to 6)
    max_cosine: float | None
    exact: bool  # every fine feature at or above the threshold was kept by the scan (threshold >= floor, under the cap)


GO_NEED = 3  # fine features at or above the cosine threshold for GO


def go_no_go_rows(coarse, matches, max_cosine, floor: float, threshold: float = 0.3, need: int = GO_NEED,
                  cap: int = SCAN_CAP) -> list[GoNoGoRow]:
    """The one GO/NO-GO definition, from a scan's plain data (CosineScan fields or their JSON)."""
    out = []
    for i, (ci, m) in enumerate(zip(coarse, matches)):
        m = [(int(f), float(v)) for f, v in m]
        above = tuple((f, v) for f, v in m if v >= threshold)
        best = float(max_cosine[i]) if max_cosine is not None and i < len(max_cosine) else None
        out.append(GoNoGoRow(int(ci), len(above), len(above) >= need, above, tuple(m[:6]), best,
                             count_is_exact(m, floor, threshold, cap)))
    return out


def count_is_exact(matches, floor: float, threshold: float, cap: int = SCAN_CAP) -> bool:
    """Whether a scan's matches (best first) hold every fine feature at or above the threshold: the threshold is
    at or above the scan's floor and the scan did not stop at its cap above it (else n_above is a lower bound)."""
    return threshold >= floor and (len(matches) < cap or float(matches[-1][1]) < threshold)


def go_no_go_table(coarse, matches, max_cosine, floor: float, threshold: float = 0.3, need: int = GO_NEED) -> list[dict]:
    """The GO/NO-GO rows a discovery result carries (JSON and page read these): {coarse, n_above, go, best (the top
    5 matches, fine index and cosine)} per mapped coarse feature."""
    return [{"coarse": r.coarse, "n_above": r.n_above, "go": r.go, "best": [list(x) for x in r.top[:5]]}
            for r in go_no_go_rows(coarse, matches, max_cosine, floor, threshold, need)]


def go_no_go(scan: CosineScan, threshold: float = 0.3, need: int = GO_NEED) -> list[dict]:
    """go_no_go_table of a scan."""
    return go_no_go_table(scan.coarse, scan.matches, scan.max_cosine, scan.floor, threshold, need)
