"""The corpus index: both SAEs' codes on one token corpus, unit decoders, firing counts, max cosines."""
from __future__ import annotations

import functools

import numpy as np
import scipy.sparse as sp
import torch


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
