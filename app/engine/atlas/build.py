"""Building the atlas: stream windows to the hook, encode sparse, summarise every feature, add neighbours."""
from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import scipy.sparse as sp
import torch

from app.engine.atlas.compact import compact
from app.engine.atlas.core import (
    ATLAS_VERSION,
    EARLY_POSITIONS,
    SAE_ORDER,
    VALUE_DTYPE,
    Atlas,
    _assemble,
)
from app.engine.tokens import token_text


def forward_to_hook(model, hook_name: str, toks: torch.Tensor) -> torch.Tensor:
    """Residual at the hook [batch, pos, d] with the forward stopped right after the hook's block."""
    layer = int(hook_name.split(".")[1])
    _, cache = model.run_with_cache(toks, names_filter=hook_name, stop_at_layer=layer + 1)
    return cache[hook_name]


def valid_mask(resid: torch.Tensor, toks: torch.Tensor, special_ids: Sequence[int], sink_norm: float | None) -> torch.Tensor:
    """[batch, pos] bool: not position 0, not a special token, residual norm <= sink_norm."""
    keep = torch.ones(toks.shape, dtype=torch.bool)
    keep[:, 0] = False
    if len(special_ids):
        keep &= ~torch.isin(toks.cpu(), torch.as_tensor(list(special_ids)))
    if sink_norm is not None:
        keep &= resid.float().norm(dim=-1).cpu() <= sink_norm
    return keep


def topk_parts(sae, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(values [n, k], indices [n, k]) of a TopK SAE's codes of x [n, d], exactly as sae.encode computes them, without
    the dense [n, d_sae] scatter; None for other SAEs (or TopK variants that rescale by decoder norm)."""
    from app.engine.compat import TopKSAE

    if not isinstance(sae, TopKSAE) or getattr(sae.cfg, "rescale_acts_by_decoder_norm", False):
        return None
    pre = sae.process_sae_in(x) @ sae.W_enc + sae.b_enc
    vals, idx = torch.topk(pre, k=sae.cfg.k, dim=-1, sorted=False)  # as sae_lens' TopK: top k, then ReLU
    return vals.relu(), idx


def encode_sparse(sae, resid: torch.Tensor, keep: torch.Tensor, value_dtype=VALUE_DTYPE) -> sp.csr_matrix:
    """SAE codes of resid [n, d] as CSR [n, d_sae] (rows not kept are empty), values rounded to value_dtype."""
    n, d_sae = resid.shape[0], sae.cfg.d_sae
    with torch.no_grad():
        parts = topk_parts(sae, resid.to(sae.W_dec.dtype))
        if parts is not None:  # TopK: k codes per row, no dense matrix to scan (a third of the encode's time)
            vals, idx = parts
            kept = keep.to(vals.device)
            vals, idx = vals[kept].float(), idx[kept]
            order = idx.argsort(dim=-1)  # CSR wants each row's columns ascending
            idx, vals = idx.gather(-1, order), vals.gather(-1, order)
            nz = vals > 0
            rows = torch.nonzero(kept).squeeze(-1).unsqueeze(-1).expand_as(idx)[nz].cpu().numpy()
            c = idx[nz].cpu().numpy().astype(np.int32)
            v = vals[nz].cpu().numpy().astype(value_dtype).astype(np.float32)
        else:
            acts = sae.encode(resid.to(sae.W_dec.dtype)).float()
            acts = acts * keep.to(acts.device).unsqueeze(-1)
            r, cc = acts.nonzero(as_tuple=True)  # row-major order: CSR order
            v = acts[r, cc].cpu().numpy().astype(value_dtype).astype(np.float32)
            rows, c = r.cpu().numpy(), cc.cpu().numpy().astype(np.int32)
    indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=n))]).astype(np.int64)
    m = sp.csr_matrix((v, c, indptr), shape=(n, d_sae))
    m.eliminate_zeros()  # values that underflow the storage dtype
    return m


def _corpus_hash(windows) -> str:
    h = hashlib.sha256()
    for w in windows:
        h.update(np.asarray(w, dtype=np.int32).tobytes())
    return h.hexdigest()[:16]


def build_atlas(model, saes: dict, windows: Sequence[Sequence[int]], hook_name: str, fingerprint: str = "",
                sink_norm: float | None = None, batch_size: int = 8, chunk_windows: int = 64,
                work_dir: Path | None = None, progress: Callable[[int, int], None] | None = None,
                top_examples: int = 20, n_quantiles: int = 4, per_quantile: int = 5, n_bins: int = 20,
                n_tokens: int = 10, n_neighbours: int = 10, meta: dict | None = None,
                cofire_tokens: int = 131_072, early: int = EARLY_POSITIONS) -> Atlas:
    """Stream windows [n, ctx] through the model to the hook, encode with every SAE, summarise per feature, and
    keep the compact form (compact.compact: examples with their contexts, word index, label scores, and the codes
    of the first `cofire_tokens` tokens only).

    Memory: one chunk's dense codes (chunk_windows x ctx x d_sae, transient) plus the sparse codes (nnz).
    With `work_dir`, each finished chunk is saved there and a later call with the same inputs resumes after
    the last saved chunk. `progress(tokens_done, tokens_total)` is called after each chunk. Examples come from
    window positions >= `early` where a window has any (summarise).
    """
    t0 = time.perf_counter()
    windows = [list(map(int, w)) for w in windows]
    if not windows:
        raise ValueError("the atlas corpus has no windows")
    ctx = len(windows[0])
    if any(len(w) != ctx for w in windows):
        raise ValueError("all atlas windows must have the same length")
    special = sorted(set(getattr(model.tokenizer, "all_special_ids", []) or [])) if model.tokenizer is not None else []
    names = [n for n in SAE_ORDER if n in saes] + [n for n in saes if n not in SAE_ORDER]
    key = {"fingerprint": fingerprint, "corpus": _corpus_hash(windows), "ctx": ctx, "chunk_windows": chunk_windows,
           "hook_name": hook_name, "sink_norm": sink_norm, "version": ATLAS_VERSION}
    if work_dir is not None:
        work_dir = Path(work_dir)
        kfile = work_dir / "build.json"
        if kfile.exists() and json.loads(kfile.read_text()) != key:
            shutil.rmtree(work_dir)  # another corpus or another SAE pair: start over
        work_dir.mkdir(parents=True, exist_ok=True)
        kfile.write_text(json.dumps(key))
    n_chunks = (len(windows) + chunk_windows - 1) // chunk_windows
    total = len(windows) * ctx
    parts: dict[str, list] = {n: [] for n in names}
    valid_parts = []
    device = model.cfg.device
    for ci in range(n_chunks):
        shard = work_dir / f"chunk_{ci:05d}.npz" if work_dir is not None else None
        if shard is not None and shard.exists():
            z = np.load(shard)
            valid_parts.append(z["valid"])
            for n in names:
                parts[n].append(sp.csr_matrix((z[f"{n}_data"], z[f"{n}_indices"], z[f"{n}_indptr"]),
                                              shape=tuple(z[f"{n}_shape"])))
        else:
            chunk = windows[ci * chunk_windows: (ci + 1) * chunk_windows]
            cparts: dict[str, list] = {n: [] for n in names}
            cvalid = []
            with torch.inference_mode():
                for b0 in range(0, len(chunk), batch_size):
                    toks = torch.tensor(chunk[b0: b0 + batch_size], device=device)
                    resid = forward_to_hook(model, hook_name, toks)
                    keep = valid_mask(resid, toks, special, sink_norm)
                    flat = resid.reshape(-1, resid.shape[-1])
                    kf = keep.reshape(-1)
                    cvalid.append(kf.numpy())
                    for n in names:
                        cparts[n].append(encode_sparse(saes[n], flat, kf))
            v = np.concatenate(cvalid)
            valid_parts.append(v)
            out: dict[str, Any] = {"valid": v}
            for n in names:
                m = sp.vstack(cparts[n], format="csr")
                parts[n].append(m)
                out.update({f"{n}_data": m.data, f"{n}_indices": m.indices, f"{n}_indptr": m.indptr,
                            f"{n}_shape": np.asarray(m.shape)})
            if shard is not None:
                tmp = shard.with_name(shard.stem + ".part.npz")
                np.savez(tmp, **out)
                tmp.replace(shard)
        if progress is not None:
            progress(min((ci + 1) * chunk_windows, len(windows)) * ctx, total)
    tokens = np.asarray(windows, dtype=np.int32).reshape(-1)
    valid = np.concatenate(valid_parts).astype(bool)
    codes = {n: sp.vstack(parts[n], format="csr") for n in names}
    encode_s = time.perf_counter() - t0
    summaries = {n: summarise(codes[n], tokens, valid, ctx, top_examples, n_quantiles, per_quantile, n_bins, n_tokens,
                              early) for n in names}
    add_neighbours(summaries, {n: saes[n].W_dec for n in names}, n_neighbours)
    tok = model.tokenizer
    uniq = np.unique(tokens)
    strings = {int(i): token_text(tok, i) for i in uniq} if tok is not None else {}
    info = {**(meta or {}), "version": ATLAS_VERSION, "corpus_sha": key["corpus"], "windows": len(windows),
            "tokens": int(len(tokens)), "valid_tokens": int(valid.sum()), "hook_name": hook_name,
            "sink_norm": sink_norm, "encode_seconds": round(encode_s, 2),
            "seconds": round(time.perf_counter() - t0, 2),
            "params": {"top_examples": top_examples, "n_quantiles": n_quantiles, "per_quantile": per_quantile,
                       "n_bins": n_bins, "n_tokens": n_tokens, "n_neighbours": n_neighbours, "early": early}}
    full = _assemble(fingerprint, tokens, ctx, valid, codes, summaries, strings, info)
    small = compact(full, cofire_tokens)
    small.meta["seconds"] = round(time.perf_counter() - t0, 2)
    return small


def _group_rank(groups: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """For sorted group labels: (rank of each element within its group, start offset of each group)."""
    counts = np.bincount(groups, minlength=n_groups)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return np.arange(len(groups)) - starts[groups], starts


def summarise(codes: sp.csr_matrix, tokens: np.ndarray, valid: np.ndarray, ctx: int, top_examples: int = 20,
              n_quantiles: int = 4, per_quantile: int = 5, n_bins: int = 20, n_tokens: int = 10,
              early: int = EARLY_POSITIONS) -> dict:
    """Per-feature arrays from sparse codes [T, F] (vectorised over the non-zeros; see the module docstring).

    A window's example is its strongest position >= `early`, else (it fires only before) its strongest position;
    ties: the first. Top examples: windows with a late example first, each group by the example's activation;
    quantile bands: all windows by that activation. Atlas windows are cut from documents, so their first positions
    follow a word cut in half ("ritrope") and read position more than content: an example needs context to read.
    """
    F = codes.shape[1]
    coo = codes.tocoo()
    rows, cols, vals = coo.row.astype(np.int64), coo.col.astype(np.int64), coo.data.astype(np.float32)
    pos = vals > 0
    rows, cols, vals = rows[pos], cols[pos], vals[pos]
    n_firing = np.bincount(cols, minlength=F).astype(np.int64)
    sums = np.bincount(cols, weights=vals, minlength=F)
    mean = np.where(n_firing > 0, sums / np.maximum(n_firing, 1), 0.0).astype(np.float32)
    max_act = np.zeros(F, np.float32)
    np.maximum.at(max_act, cols, vals)
    # histogram over [0, max]: the max itself goes into the last bin
    b = np.minimum((vals / max_act[cols] * n_bins).astype(np.int64), n_bins - 1)
    hist = np.bincount(cols * n_bins + b, minlength=F * n_bins).reshape(F, n_bins).astype(np.int32)
    # per (feature, window): its example, the strongest late position (else the strongest early one)
    win = rows // ctx
    early_pos = (rows % ctx) < early
    o = np.lexsort((rows, -vals, early_pos, win, cols))
    c1, w1, v1, r1, e1 = cols[o], win[o], vals[o], rows[o], early_pos[o]
    first = np.ones(len(c1), bool)
    first[1:] = (c1[1:] != c1[:-1]) | (w1[1:] != w1[:-1])
    c2, w2, v2, r2, e2 = c1[first], w1[first], v1[first], r1[first], e1[first]
    ot = np.lexsort((w2, -v2, e2, c2))  # top examples: late ones first, strongest first; ties: earlier window
    ct, rt = c2[ot], r2[ot]
    rank_t, _ = _group_rank(ct, F)
    top_rows = np.full((F, top_examples), -1, np.int32)
    sel = rank_t < top_examples
    top_rows[ct[sel], rank_t[sel]] = rt[sel]
    o2 = np.lexsort((w2, -v2, c2))  # quantile bands: strongest first; ties: earlier window
    c2, v2, r2 = c2[o2], v2[o2], r2[o2]
    _, starts = _group_rank(c2, F)
    n_win = np.bincount(c2, minlength=F)
    q = np.arange(n_quantiles)
    lo = (q[None, :] * n_win[:, None]) // n_quantiles  # [F, Q]
    hi = ((q[None, :] + 1) * n_win[:, None]) // n_quantiles
    j = np.arange(per_quantile)
    pick = lo[..., None] + ((2 * j[None, None, :] + 1) * (hi - lo)[..., None]) // (2 * per_quantile)  # [F, Q, m]
    ok = (hi > lo)[..., None] & np.ones_like(pick, bool)
    ok[..., 1:] &= pick[..., 1:] != pick[..., :-1]
    flat = np.clip(starts[:, None, None] + pick, 0, max(len(r2) - 1, 0))
    quant_rows = np.where(ok, r2[flat] if len(r2) else -1, -1).astype(np.int32)
    # tokens it fires on most
    V = int(tokens.max()) + 1 if len(tokens) else 1
    keys = cols * V + tokens[rows].astype(np.int64)
    uk, inv, cnt = np.unique(keys, return_inverse=True, return_counts=True)
    tsum = np.bincount(inv.ravel(), weights=vals, minlength=len(uk))
    uc, ut = uk // V, uk % V
    o3 = np.lexsort((ut, -tsum, -cnt, uc))
    uc, ut, cnt, tsum = uc[o3], ut[o3], cnt[o3], tsum[o3]
    rank3, _ = _group_rank(uc, F)
    sel3 = rank3 < n_tokens
    tok_ids = np.full((F, n_tokens), -1, np.int32)
    tok_counts = np.zeros((F, n_tokens), np.int32)
    tok_mean = np.zeros((F, n_tokens), np.float32)
    tok_ids[uc[sel3], rank3[sel3]] = ut[sel3]
    tok_counts[uc[sel3], rank3[sel3]] = cnt[sel3]
    tok_mean[uc[sel3], rank3[sel3]] = tsum[sel3] / cnt[sel3]
    return {"n_firing": n_firing, "mean_when_firing": mean, "max_act": max_act, "hist": hist,
            "top_rows": top_rows, "quant_rows": quant_rows, "tok_ids": tok_ids, "tok_counts": tok_counts,
            "tok_mean": tok_mean}


def cosine_topk(A: torch.Tensor, B: torch.Tensor, k: int, exclude_self: bool = False,
                chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """For each row of A [n, d]: the k rows of B [m, d] with the highest cosine -> (indices [n, k], cosines)."""
    A = torch.nn.functional.normalize(A.detach().float(), dim=-1)
    B = torch.nn.functional.normalize(B.detach().float(), dim=-1)
    k = min(k, B.shape[0] - (1 if exclude_self else 0))
    idx = np.zeros((A.shape[0], max(k, 0)), np.int32)
    cos = np.zeros((A.shape[0], max(k, 0)), np.float32)
    if k <= 0:
        return idx, cos
    for s0 in range(0, A.shape[0], chunk):
        sims = A[s0: s0 + chunk] @ B.T
        if exclude_self:
            r = torch.arange(sims.shape[0])
            sims[r, r + s0] = -float("inf")
        v, i = sims.topk(k, dim=-1)
        idx[s0: s0 + chunk], cos[s0: s0 + chunk] = i.numpy(), v.numpy()
    return idx, cos


def add_neighbours(summaries: dict, W_decs: dict, k: int = 10) -> None:
    """nb_same_* (same SAE, self excluded) and nb_other_* (the other SAE of a pair) into each summary."""
    names = list(W_decs)
    for n in names:
        s = summaries[n]
        s["nb_same_idx"], s["nb_same_cos"] = cosine_topk(W_decs[n], W_decs[n], k, exclude_self=True)
        others = [m for m in names if m != n]
        if others:
            s["nb_other_idx"], s["nb_other_cos"] = cosine_topk(W_decs[n], W_decs[others[0]], k)
