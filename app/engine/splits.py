"""How a coarse SAE feature splits into fine SAE features (pure computation over corpus codes and decoders).

Inputs are what the feature atlas holds: activations of both SAEs on one token corpus as scipy CSR matrices
([T, d_sae], a feature "fires" on a token when its activation is > 0), a [T] bool mask of the tokens to count,
and the two decoder matrices. Nothing here reads the atlas, the engine or the environment.

- children of coarse feature c: fine features whose decoder cosine to W_dec_coarse[c] is >= child_cos;
  each fine feature also gets P(fine fires | c fires) and P(c fires | fine fires) on the same tokens;
- reconstruction vs novel (SAE stitching, Leask et al.): every fine feature's maximum decoder cosine to the
  coarse dictionary; >= a threshold: a split or copy of a coarse feature, below: new;
- absorption holes (after Chanin et al.): tokens where c fires strongly and none of its children fire, and
  tokens where a child fires strongly and c is silent;
- meta-decomposition: a fine decoder direction as a sparse non-negative mix of coarse decoder directions
  (greedy non-negative OMP, every step refitted by scipy's NNLS);
- stitching on a prompt: the coarse reconstruction with c's term replaced by its children's fine terms.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import scipy.optimize
import scipy.sparse as sp
import torch


# ---------------------------------------------------------------- the corpus index
def unit_rows(W) -> np.ndarray:
    """Rows of W [N, d] scaled to unit L2 norm (float32; zero rows stay zero)."""
    W = W.detach().float().cpu().numpy() if isinstance(W, torch.Tensor) else np.asarray(W, dtype=np.float32)
    n = np.linalg.norm(W, axis=1, keepdims=True)
    return (W / np.maximum(n, 1e-12)).astype(np.float32)


class SplitIndex:
    """Both SAEs' codes on the counted corpus tokens, in the layouts the split map reads, built once per atlas.

    coarse: CSC [T', Dc]; fine: CSR and CSC [T', Df] (T' = counted tokens); rows: [T'] their corpus positions;
    unit decoder rows; every fine feature's best coarse cosine and partner. Cost: one pass over the codes and
    one chunked Df x Dc cosine product (done on first use of `max_cos`).
    """

    def __init__(self, coarse_codes, fine_codes, coarse_W_dec, fine_W_dec, valid=None, chunk: int = 2048):
        coarse_codes, fine_codes = sp.csr_matrix(coarse_codes), sp.csr_matrix(fine_codes)
        if coarse_codes.shape[0] != fine_codes.shape[0]:
            raise ValueError(f"codes cover different tokens: {coarse_codes.shape[0]} vs {fine_codes.shape[0]}")
        T = coarse_codes.shape[0]
        self.rows = np.arange(T) if valid is None else np.flatnonzero(np.asarray(valid, dtype=bool))
        c = coarse_codes if valid is None else coarse_codes[self.rows]
        f = fine_codes if valid is None else fine_codes[self.rows]
        c.eliminate_zeros()
        f.eliminate_zeros()
        self.coarse = c.tocsc()
        self.fine = f
        self.fine_csc = f.tocsc()
        self.coarse_count = np.diff(self.coarse.indptr)  # [Dc] counted tokens where each coarse feature fires
        self.fine_count = np.diff(self.fine_csc.indptr)  # [Df]
        self.coarse_max = _column_max(self.coarse)
        self.fine_max = _column_max(self.fine_csc)
        self.coarse_unit = unit_rows(coarse_W_dec)
        self.fine_unit = unit_rows(fine_W_dec)
        self.chunk = chunk

    @classmethod
    def decoders_only(cls, coarse_W_dec, fine_W_dec, chunk: int = 2048) -> "SplitIndex":
        """No corpus (no atlas): the geometry still works; counts are 0 and coverage is nan."""
        Dc, Df = coarse_W_dec.shape[0], fine_W_dec.shape[0]
        return cls(sp.csr_matrix((0, Dc), dtype=np.float32), sp.csr_matrix((0, Df), dtype=np.float32),
                   coarse_W_dec, fine_W_dec, chunk=chunk)

    @property
    def n_tokens(self) -> int:
        return int(self.rows.shape[0])

    @functools.cached_property
    def _best(self) -> tuple[np.ndarray, np.ndarray]:
        return max_cosine_to(self.fine_unit, self.coarse_unit, chunk=self.chunk)

    @property
    def max_cos(self) -> np.ndarray:
        """[Df] each fine feature's largest decoder cosine to any coarse feature."""
        return self._best[0]

    @property
    def partner(self) -> np.ndarray:
        """[Df] the coarse feature that cosine belongs to."""
        return self._best[1]

    def coarse_rows(self, c: int) -> tuple[np.ndarray, np.ndarray]:
        """Counted-token row numbers where coarse feature c fires, and its activations there."""
        s, e = self.coarse.indptr[c], self.coarse.indptr[c + 1]
        return self.coarse.indices[s:e], self.coarse.data[s:e]

    def fine_rows(self, f: int) -> tuple[np.ndarray, np.ndarray]:
        s, e = self.fine_csc.indptr[f], self.fine_csc.indptr[f + 1]
        return self.fine_csc.indices[s:e], self.fine_csc.data[s:e]


def _column_max(csc: sp.csc_matrix) -> np.ndarray:
    """[D] largest stored value per column (0 for empty columns)."""
    out = np.zeros(csc.shape[1], dtype=np.float32)
    nz = np.flatnonzero(np.diff(csc.indptr))
    if nz.size:
        out[nz] = np.maximum.reduceat(csc.data, csc.indptr[nz]).astype(np.float32)
    return out


def max_cosine_to(rows_unit: np.ndarray, dict_unit: np.ndarray, chunk: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """For each unit row of rows_unit [N, d]: its largest cosine to the unit rows of dict_unit [M, d] and where.

    Chunked so that at most [chunk, M] floats exist at once. Returns ([N] float32, [N] int64).
    """
    N = rows_unit.shape[0]
    best = np.empty(N, dtype=np.float32)
    arg = np.empty(N, dtype=np.int64)
    for s in range(0, N, chunk):
        cos = rows_unit[s:s + chunk] @ dict_unit.T
        arg[s:s + chunk] = cos.argmax(1)
        best[s:s + chunk] = cos[np.arange(cos.shape[0]), arg[s:s + chunk]]
    return np.clip(best, -1.0, 1.0), arg


# ---------------------------------------------------------------- one coarse feature
@dataclass(frozen=True)
class FineMatch:
    """One fine feature seen from coarse feature c (counts over the counted corpus tokens)."""

    fine: int
    cosine: float  # decoder cosine to c
    n_fine: int  # tokens where the fine feature fires
    n_both: int  # tokens where both fire
    p_fine_given_coarse: float  # n_both / n_coarse
    p_coarse_given_fine: float  # n_both / n_fine (0 when the fine feature never fires)
    jaccard: float  # n_both / (n_coarse + n_fine - n_both)
    child: bool  # cosine >= child_cos


@dataclass(frozen=True)
class Hole:
    """A corpus token where the split leaks: `feature` fired there with `activation` (its own units)."""

    position: int  # index into the atlas corpus
    sae: str  # "coarse" (coarse fired, no child did) | "fine" (a child fired, the coarse feature did not)
    feature: int
    activation: float
    relative: float  # activation / that feature's max over the corpus


@dataclass(frozen=True)
class SplitMap:
    coarse: int
    n_tokens: int  # counted corpus tokens
    n_coarse: int  # tokens where c fires
    child_cos: float
    by_cosine: tuple[FineMatch, ...]  # best decoder cosine first
    by_cofiring: tuple[FineMatch, ...]  # best Jaccard first (only fine features that fire with c)
    children: tuple[FineMatch, ...]  # every fine feature with cosine >= child_cos, best cosine first
    coverage: float  # fraction of c's firing tokens where at least one child fires (nan if c never fires)
    strong_frac: float
    n_holes: int  # tokens where c >= strong_frac * max(c) and no child fires
    holes: tuple[Hole, ...]  # the strongest of them
    n_reverse_holes: int  # tokens where a child >= strong_frac * its max and c is silent
    reverse_holes: tuple[Hole, ...]


def fine_matches(ix: SplitIndex, c: int, fine_idx: np.ndarray, cos: np.ndarray, n_both_all: np.ndarray,
                 child_cos: float) -> tuple[FineMatch, ...]:
    n_c = int(ix.coarse_count[c])
    out = []
    for f in fine_idx:
        f = int(f)
        nb, nf = int(n_both_all[f]), int(ix.fine_count[f])
        union = n_c + nf - nb
        out.append(FineMatch(f, float(cos[f]), nf, nb, nb / n_c if n_c else 0.0, nb / nf if nf else 0.0,
                             nb / union if union else 0.0, bool(cos[f] >= child_cos)))
    return tuple(out)


def split_map(ix: SplitIndex, c: int, child_cos: float = 0.5, top: int = 20, strong_frac: float = 0.3,
              n_examples: int = 12, max_children: int = 50) -> SplitMap:
    """Children, co-firing, coverage and absorption holes of coarse feature c over the index's tokens."""
    cos = ix.fine_unit @ ix.coarse_unit[c]  # [Df]
    rows_c, acts_c = ix.coarse_rows(c)
    sub = ix.fine[rows_c]  # fine codes on the tokens where c fires
    n_both = np.bincount(sub.indices, minlength=ix.fine.shape[1])
    n_c, Df = int(rows_c.size), ix.fine.shape[1]

    k = min(top, Df)
    by_cos = np.argsort(-cos, kind="stable")[:k]
    cofiring = np.flatnonzero(n_both)
    if cofiring.size:
        jac = n_both[cofiring] / (n_c + ix.fine_count[cofiring] - n_both[cofiring])
        cofiring = cofiring[np.lexsort((cofiring, -jac))][:k]
    child_idx = np.flatnonzero(cos >= child_cos)
    child_idx = child_idx[np.argsort(-cos[child_idx], kind="stable")]

    # Coverage and holes use every child (not only the ones listed).
    child_fires = (sub[:, child_idx].getnnz(axis=1) > 0) if child_idx.size else np.zeros(n_c, dtype=bool)
    coverage = float(child_fires.mean()) if n_c else float("nan")
    mx_c = float(ix.coarse_max[c])
    strong = acts_c >= strong_frac * mx_c if mx_c > 0 else np.zeros(n_c, dtype=bool)
    hole_rows = np.flatnonzero(strong & ~child_fires)
    order = hole_rows[np.argsort(-acts_c[hole_rows], kind="stable")][:n_examples]
    holes = tuple(Hole(int(ix.rows[rows_c[i]]), "coarse", c, float(acts_c[i]), float(acts_c[i]) / mx_c) for i in order)

    # Reverse: a child fires strongly where c is silent; per token keep the child with the largest relative activation.
    best_rel: dict[int, tuple[float, int, float]] = {}
    silent = np.ones(ix.n_tokens, dtype=bool)
    silent[rows_c] = False
    for f in child_idx:
        f = int(f)
        r, a = ix.fine_rows(f)
        mx = float(ix.fine_max[f])
        if mx <= 0:
            continue
        rel = a / mx
        keep = (rel >= strong_frac) & silent[r]
        for row, rv, av in zip(r[keep].tolist(), rel[keep].tolist(), a[keep].tolist()):
            if row not in best_rel or rv > best_rel[row][0]:
                best_rel[row] = (rv, f, av)
    rev = sorted(best_rel.items(), key=lambda kv: (-kv[1][0], kv[0]))
    reverse = tuple(Hole(int(ix.rows[row]), "fine", f, float(av), float(rv)) for row, (rv, f, av) in rev[:n_examples])

    return SplitMap(
        coarse=c, n_tokens=ix.n_tokens, n_coarse=n_c, child_cos=child_cos,
        by_cosine=fine_matches(ix, c, by_cos, cos, n_both, child_cos),
        by_cofiring=fine_matches(ix, c, cofiring, cos, n_both, child_cos),
        children=fine_matches(ix, c, child_idx[:max_children], cos, n_both, child_cos),
        coverage=coverage, strong_frac=strong_frac,
        n_holes=int(hole_rows.size), holes=holes, n_reverse_holes=len(rev), reverse_holes=reverse,
    )


# ---------------------------------------------------------------- the whole dictionary
@dataclass(frozen=True)
class StitchSummary:
    """Reconstruction vs novel fine features, and per coarse feature its children and their coverage."""

    threshold: float
    bin_edges: tuple[float, ...]  # histogram of each fine feature's max cosine to the coarse dictionary
    counts: tuple[int, ...]
    n_reconstruction: int  # fine features with max cosine >= threshold (splits or copies of coarse ones)
    n_novel: int
    n_children: np.ndarray  # [Dc] fine features with cosine >= child_cos to each coarse feature
    coverage: np.ndarray  # [Dc] fraction of each coarse feature's firing tokens where one of those fires (nan: never fires)
    child_cos: float


def stitch_summary(ix: SplitIndex, threshold: float = 0.7, child_cos: float = 0.5, bins: int = 50) -> StitchSummary:
    """The whole-dictionary view: max-cosine histogram over [0, 1] (negative maxima land in the first bin),
    children counts and coverage for every coarse feature (one chunked cosine pass + one sparse product)."""
    mc = ix.max_cos
    edges = np.linspace(0.0, 1.0, bins + 1)
    counts, _ = np.histogram(np.clip(mc, 0.0, 1.0), bins=edges)
    # M[f, c] = 1 when fine f is a child of coarse c; rows of fine firing x M = which coarse parents have a child firing.
    Dc = ix.coarse_unit.shape[0]
    ri, ci = [], []
    for s in range(0, ix.fine_unit.shape[0], ix.chunk):
        r, cc = np.nonzero(ix.fine_unit[s:s + ix.chunk] @ ix.coarse_unit.T >= child_cos)
        ri.append(r + s)
        ci.append(cc)
    ri = np.concatenate(ri) if ri else np.zeros(0, dtype=np.int64)
    ci = np.concatenate(ci) if ci else np.zeros(0, dtype=np.int64)
    M = sp.csr_matrix((np.ones(ri.size, dtype=np.float32), (ri, ci)), shape=(ix.fine_unit.shape[0], Dc))
    n_children = np.bincount(ci, minlength=Dc)
    fine_fire = ix.fine.copy()
    fine_fire.data = np.ones_like(fine_fire.data)
    coarse_fire = ix.coarse.tocsr(copy=True)
    coarse_fire.data = np.ones_like(coarse_fire.data)
    covered = coarse_fire.multiply((fine_fire @ M) > 0)  # [T', Dc]: c fires and one of its children fires
    n_cov = np.asarray(sp.csr_matrix(covered).getnnz(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        coverage = np.where(ix.coarse_count > 0, n_cov / np.maximum(ix.coarse_count, 1), np.nan)
    n_rec = int((mc >= threshold).sum())
    return StitchSummary(threshold, tuple(float(e) for e in edges), tuple(int(x) for x in counts), n_rec,
                         int(mc.shape[0] - n_rec), n_children, coverage, child_cos)


# ---------------------------------------------------------------- meta-decomposition
@dataclass(frozen=True)
class MetaDecomposition:
    """target ≈ Σ coef · atom (unit directions); residual is ||target - mix|| / ||target||."""

    terms: tuple[tuple[int, float], ...]  # (atom index, coefficient >= 0), largest coefficient first
    residual: float
    cosine: float  # cos(target, mix)


def nonneg_decomposition(target, atoms, max_terms: int = 5, tol: float = 1e-6) -> MetaDecomposition:
    """Sparse non-negative mix of atom rows [N, d] ≈ target [d]: greedy OMP that adds the atom with the largest
    positive correlation with the residual, then refits all chosen coefficients with scipy's NNLS; stops at
    max_terms, when no atom correlates positively, or when the residual is below tol (relative)."""
    y = np.asarray(target, dtype=np.float64)
    A = np.asarray(atoms, dtype=np.float64)
    ny = float(np.linalg.norm(y))
    if ny == 0:
        return MetaDecomposition((), 0.0, 0.0)
    chosen: list[int] = []
    coef = np.zeros(0)
    r = y.copy()
    for _ in range(max_terms):
        corr = A @ r
        corr[chosen] = -np.inf
        j = int(np.argmax(corr))
        if not np.isfinite(corr[j]) or corr[j] <= tol * ny:
            break
        chosen.append(j)
        coef, _ = scipy.optimize.nnls(A[chosen].T, y)
        r = y - A[chosen].T @ coef
        if np.linalg.norm(r) <= tol * ny:
            break
    keep = [(j, float(c)) for j, c in zip(chosen, coef) if c > 0]
    keep.sort(key=lambda t: (-t[1], t[0]))
    mix = A[[j for j, _ in keep]].T @ np.array([c for _, c in keep]) if keep else np.zeros_like(y)
    nm = float(np.linalg.norm(mix))
    return MetaDecomposition(tuple(keep), float(np.linalg.norm(y - mix)) / ny, float(mix @ y) / (nm * ny) if nm else 0.0)


def meta_decomposition(fine_unit: np.ndarray, coarse_unit: np.ndarray, f: int, max_terms: int = 5) -> MetaDecomposition:
    """Fine feature f's unit decoder direction as a non-negative mix of unit coarse decoder directions."""
    return nonneg_decomposition(fine_unit[f], coarse_unit, max_terms)


# ---------------------------------------------------------------- stitching on a prompt
@dataclass(frozen=True)
class Stitching:
    """Coarse reconstruction vs the same with coarse feature c's term swapped for its children's fine terms."""

    coarse: int
    children: tuple[int, ...]
    positions: tuple[int, ...]  # prompt positions spliced (non-sink)
    coarse_act: tuple[float, ...]  # c's activation per spliced position
    children_act: tuple[float, ...]  # Σ children activations per spliced position
    rel_error_coarse: float  # Σ||x - x_hat||² / Σ||x||² over spliced positions
    rel_error_stitched: float
    rel_error_per_pos: tuple[tuple[float, float], ...]  # (coarse, stitched) ||x - x_hat|| / ||x|| per spliced position
    next_clean: tuple[tuple[int, float], ...]  # top next tokens after the prompt (id, prob)
    next_coarse: tuple[tuple[int, float], ...]  # with the coarse reconstruction spliced in
    next_stitched: tuple[tuple[int, float], ...]
    kl_coarse: float  # KL(clean || spliced) at the last position, nats
    kl_stitched: float


def stitched_reconstruction(x: torch.Tensor, coarse_sae, fine_sae, c: int, children) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """x [n, d] -> (coarse x_hat, stitched x_hat, c's activation [n], children's activations [n, k]).

    stitched = coarse x_hat - a_c · W_dec_coarse[c] + Σ_children a_f · W_dec_fine[f] (fine SAE's own encoding)."""
    a = coarse_sae.encode(x.to(coarse_sae.W_dec.dtype))
    x_hat = coarse_sae.decode(a).float()
    idx = torch.as_tensor(list(children), dtype=torch.long)
    b = fine_sae.encode(x.to(fine_sae.W_dec.dtype))[:, idx].float() if idx.numel() else torch.zeros(x.shape[0], 0)
    stitched = x_hat - a[:, c:c + 1].float() * coarse_sae.W_dec[c].float()
    if idx.numel():
        stitched = stitched + b @ fine_sae.W_dec[idx].float()
    return x_hat, stitched, a[:, c].float(), b


def make_splice_hook(replacements: dict[int, torch.Tensor], mask: torch.Tensor):
    """Forward hook: batch row b's masked positions are replaced by replacements[b] ([n_masked, d])."""

    def splice_hook(resid: torch.Tensor, hook=None) -> torch.Tensor:
        out = resid.clone()
        for b, rep in replacements.items():
            out[b, mask] = rep.to(out.dtype)
        return out

    return splice_hook


def stitch_on_prompt(model, coarse_sae, fine_sae, hook_name: str, token_ids, c: int, children,
                     sink_norm: float | None = None, top: int = 5) -> Stitching:
    """Splice the coarse reconstruction and the stitched one into the residual at the hook (non-sink positions:
    analysis.sink_mask) and compare the next-token distributions after the prompt with the clean run."""
    from app.engine.analysis import _final_logits, make_store_hook, sink_mask

    toks = torch.tensor([list(token_ids)] * 3, device=model.cfg.device)
    store: dict = {}
    layer = int(hook_name.split(".")[1])
    with model.hooks(fwd_hooks=[(hook_name, make_store_hook(store, "x"))]):
        model(toks[:1], stop_at_layer=layer + 1, attention_mask=torch.ones_like(toks[:1]))
    x = store["x"][0].float()
    keep = ~sink_mask(model, token_ids, x, sink_norm).to(x.device)
    xk = x[keep]
    x_hat, stitched, a_c, b = stitched_reconstruction(xk, coarse_sae, fine_sae, c, children)
    den = (xk ** 2).sum().clamp_min(1e-12)
    err_c = float(((xk - x_hat) ** 2).sum() / den)
    err_s = float(((xk - stitched) ** 2).sum() / den)
    xn = xk.norm(dim=-1).clamp_min(1e-12)
    per_pos = tuple((float(p), float(q)) for p, q in zip((xk - x_hat).norm(dim=-1) / xn, (xk - stitched).norm(dim=-1) / xn))
    hook = make_splice_hook({1: x_hat, 2: stitched}, keep)
    with model.hooks(fwd_hooks=[(hook_name, hook)]):
        final = model(toks, stop_at_layer=model.cfg.n_layers, attention_mask=torch.ones_like(toks))
    logp = _final_logits(model, final[:, -1:])[:, -1].float().log_softmax(-1)  # [3, vocab]
    p0 = logp[0].exp()
    kl = [float((p0 * (logp[0] - logp[i])).sum()) for i in (1, 2)]

    def topn(lp):
        v, i = lp.exp().topk(min(top, lp.shape[-1]))
        return tuple((int(t), float(p)) for p, t in zip(v.tolist(), i.tolist()))

    return Stitching(c, tuple(int(f) for f in children), tuple(int(p) for p in torch.nonzero(keep).flatten().tolist()),
                     tuple(a_c.tolist()), tuple(b.sum(-1).tolist()) if b.numel() else tuple(0.0 for _ in range(xk.shape[0])),
                     err_c, err_s, per_pos, topn(logp[0]), topn(logp[1]), topn(logp[2]), kl[0], kl[1])
