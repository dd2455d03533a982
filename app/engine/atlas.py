"""The feature atlas: corpus context for every feature of both SAEs (pure computation, no FastAPI).

A corpus of token windows is streamed through the model to the hook layer and encoded with both SAEs, one
chunk of windows at a time; each chunk's codes are kept sparse (CSR, activations rounded to the storage dtype)
and, when a work folder is given, checkpointed so an interrupted build resumes. From the sparse codes every
feature gets (vectorised over the non-zeros, never a dense tokens x d_sae matrix): fire density, mean
activation when firing, max activation, a histogram of its non-zero activations, its top max-activating
windows, windows sampled from its activation quantiles, the tokens it fires on most, and its nearest
decoder-cosine neighbours in both SAEs (chunked matmuls).

Definitions (the tests recompute each one by brute force over the dense activation matrix):
- only `valid` positions count (not position 0 of a window, not special tokens, not residual norm > sink_norm);
- an example is a window; its activation is the feature's max over the window, at the first position
  reaching it; top examples = windows by that activation, descending (ties: earlier window first);
- quantile examples: the windows where the feature fires, ranked as above, cut into `n_quantiles` equal
  rank bands (strongest first); `per_quantile` evenly spaced ranks in each band;
- histogram: `n_bins` equal bins over [0, max_act] of the non-zero activations (the max in the last bin);
- top tokens: token ids by firing count, then summed activation, then id.
- label: see token_label (selective top tokens by count x log lift; topic tokens of the top windows).
"""
from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import scipy.sparse as sp
import torch

ATLAS_VERSION = 1
SAE_ORDER = ("coarse", "fine")
VALUE_DTYPE = np.float16  # stored activations; summaries are computed from the same rounded values


# ---------------------------------------------------------------------------------------------- dataclasses
@dataclass(frozen=True)
class Example:
    """One context around a feature's activating token: per-token activations of that feature."""

    window: int
    position: int  # activating token, index within the window
    start: int  # window index of the first context token shown
    token_ids: tuple[int, ...]
    tokens: tuple[str, ...]
    acts: tuple[float, ...]  # the feature's activation at each context token (0 at invalid positions)
    activation: float  # at the activating token


@dataclass(frozen=True)
class Neighbour:
    sae: str
    index: int
    cosine: float  # decoder-direction cosine
    label: str


@dataclass(frozen=True)
class TokenStat:
    token_id: int
    token: str
    count: int  # firings on this token
    mean_act: float  # mean activation when firing on it


@dataclass(frozen=True)
class FeatureAtlas:
    """Everything the atlas knows about one feature."""

    sae: str
    index: int
    label: str
    density: float  # share of valid tokens where it fires
    n_firing: int
    mean_when_firing: float
    max_act: float
    hist_edges: tuple[float, ...]  # n_bins + 1 edges over [0, max_act]
    hist_counts: tuple[int, ...]
    top_tokens: tuple[TokenStat, ...]
    examples: tuple[Example, ...]
    quantiles: tuple[tuple[str, tuple[Example, ...]], ...]  # (band name, examples), strongest band first
    neighbours: dict  # sae name -> tuple[Neighbour, ...], nearest first


@dataclass(frozen=True)
class SearchHit:
    sae: str
    index: int
    score: float  # what the ranking used
    activation: float  # on the query (text search) or the feature's max in the atlas (atlas search)
    token: str  # the query token it fired on most (text search) or the matching token (atlas search)
    label: str
    density: float | None
    max_act: float | None


@dataclass(frozen=True)
class PairIndependence:
    """Was the coarse/fine pair initialised together? Same-index decoder cosines vs a random baseline."""

    mean_same_index_cosine: float  # mean over i < d_coarse of cos(W_dec_coarse[i], W_dec_fine[i])
    share_best_is_same: float  # share of (checked) coarse features whose best fine match is index i
    n_checked: int  # coarse features checked for the best match (all, or an evenly spaced sample)
    threshold: float

    @property
    def initialised_together(self) -> bool:
        return self.mean_same_index_cosine > self.threshold


@dataclass(frozen=True)
class Atlas:
    fingerprint: str  # engine/SAE fingerprint it was built for (stale detection)
    tokens: np.ndarray  # [T] int32 token ids of the atlas corpus, windows concatenated
    ctx: int  # window length: window w covers tokens[w*ctx:(w+1)*ctx]
    valid: np.ndarray  # [T] bool: position counted (not position 0 / sink / special)
    codes: dict  # "coarse"/"fine" -> scipy.sparse.csr_matrix [T, d_sae] float32 activations
    density: dict  # name -> [d_sae] share of valid tokens where the feature fires (> 0)
    mean_when_firing: dict  # name -> [d_sae]
    max_act: dict  # name -> [d_sae]
    summaries: dict = field(default_factory=dict)  # name -> {array name: np.ndarray} (see summarise)
    token_strings: dict = field(default_factory=dict)  # token id -> decoded string (ids in the corpus)
    meta: dict = field(default_factory=dict)  # corpus, build parameters, timings
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def n_windows(self) -> int:
        return len(self.tokens) // self.ctx

    @property
    def n_valid(self) -> int:
        return int(self.valid.sum())

    def width(self, sae: str) -> int:
        return int(self.codes[sae].shape[1])

    def tok(self, token_id: int) -> str:
        return self.token_strings.get(int(token_id), f"<{int(token_id)}>")

    def label(self, sae: str, index: int) -> str:
        """Label from the tokens it fires on more than the corpus does (see token_label), memoised."""
        key = ("label", sae)
        if key not in self._cache:
            self._cache[key] = {}
        memo = self._cache[key]
        if index not in memo:
            memo[index] = token_label(self, sae, index)
        return memo[index]

    def neighbours(self, sae: str, index: int, other: str | None = None) -> tuple[Neighbour, ...]:
        s = self.summaries[sae]
        which = "same" if other in (None, sae) else "other"
        target = sae if which == "same" else other
        if f"nb_{which}_idx" not in s:
            return ()
        idx, cos = s[f"nb_{which}_idx"][index], s[f"nb_{which}_cos"][index]
        return tuple(Neighbour(target, int(i), float(c), self.label(target, int(i))) for i, c in zip(idx, cos) if i >= 0)

    def example(self, sae: str, index: int, row: int, left: int = 16, right: int = 6) -> Example:
        """The context around token `row` (a global position) with the feature's activation at each token."""
        w, pos = divmod(int(row), self.ctx)
        start, stop = max(0, pos - left), min(self.ctx, pos + right + 1)
        g0 = w * self.ctx
        col = self.codes[sae][g0 + start: g0 + stop, index].toarray().ravel()
        ids = self.tokens[g0 + start: g0 + stop]
        return Example(window=w, position=pos, start=start, token_ids=tuple(int(i) for i in ids),
                       tokens=tuple(self.tok(i) for i in ids), acts=tuple(float(a) for a in col),
                       activation=float(col[pos - start]))

    def feature(self, sae: str, index: int, left: int = 16, right: int = 6) -> FeatureAtlas:
        """Examples, quantile examples, histogram, tokens and neighbours of one feature."""
        s = self.summaries[sae]
        width = self.width(sae)
        if not 0 <= index < width:
            raise IndexError(f"feature index {index} does not exist: SAE {sae} has {width} features (0..{width - 1})")
        mx = float(self.max_act[sae][index])
        edges = tuple(float(e) for e in np.linspace(0.0, mx, s["hist"].shape[1] + 1)) if mx > 0 else ()
        toks = tuple(TokenStat(int(t), self.tok(t), int(c), float(m))
                     for t, c, m in zip(s["tok_ids"][index], s["tok_counts"][index], s["tok_mean"][index]) if c > 0)
        ex = tuple(self.example(sae, index, r, left, right) for r in s["top_rows"][index] if r >= 0)
        q = s["quant_rows"][index]
        nq = q.shape[0]
        bands = []
        for b in range(nq):
            rows = [r for r in q[b] if r >= 0]
            if rows:
                name = f"ranks {100 * b // nq}–{100 * (b + 1) // nq}%"
                bands.append((name, tuple(self.example(sae, index, r, left, right) for r in rows)))
        nbs = {sae: self.neighbours(sae, index)}
        for other in self.codes:
            if other != sae:
                nbs[other] = self.neighbours(sae, index, other)
        return FeatureAtlas(sae=sae, index=index, label=self.label(sae, index),
                            density=float(self.density[sae][index]), n_firing=int(s["n_firing"][index]),
                            mean_when_firing=float(self.mean_when_firing[sae][index]), max_act=mx,
                            hist_edges=edges, hist_counts=tuple(int(c) for c in s["hist"][index]) if mx > 0 else (),
                            top_tokens=toks, examples=ex, quantiles=tuple(bands), neighbours=nbs)


def token_base_rates(atlas: Atlas) -> np.ndarray:
    """[max token id + 1] share of the atlas's valid positions holding each token (memoised)."""
    if "base_rates" not in atlas._cache:
        counts = np.bincount(atlas.tokens[atlas.valid], minlength=int(atlas.tokens.max()) + 1).astype(np.float64)
        atlas._cache["base_rates"] = counts / max(counts.sum(), 1.0)
    return atlas._cache["base_rates"]


def _token_key(raw: str) -> str:
    return raw.strip() or (raw.replace(" ", "␣").replace("\n", "↵").replace("\t", "⇥") or "∅")


def token_label(atlas: Atlas, sae: str, index: int, max_parts: int = 3, min_count: int = 3, min_lift: float = 4.0,
                max_context: int = 2, min_window_share: float = 1 / 3, min_window_lift: float = 5.0) -> str:
    """A label from what the feature fires on *more than the corpus does*, e.g. "au · French · Roman (in: France)".

    Tokens: among the feature's top tokens, those with >= min_count firings and lift >= min_lift, where lift =
    (share of the feature's firings on the token) / (share of the corpus's valid positions holding it); ranked by
    count x log(lift), so punctuation a feature merely co-fires on ("." on every sentence end) does not name it.
    Context: tokens present in >= min_window_share of its top-example windows and >= min_window_lift times as
    often as in a random window, for features that track a topic rather than a token.
    """
    s = atlas.summaries[sae]
    n = int(s["n_firing"][index])
    if n == 0:
        return "(never fires on the atlas corpus)"
    base = token_base_rates(atlas)
    scored: dict[str, list[float]] = {}  # key -> [count, score]; equal strings (" the" / "the") merged
    for t, c in zip(s["tok_ids"][index], s["tok_counts"][index]):
        if c <= 0 or t < 0 or t >= len(base) or base[t] <= 0:
            continue
        lift = (c / n) / base[t]
        key = _token_key(atlas.tok(t))
        if key in scored:
            scored[key][0] += c
            scored[key][1] = max(scored[key][1], lift)
        else:
            scored[key] = [float(c), lift]
    parts = [k for k, (c, lift) in sorted(scored.items(), key=lambda kv: -kv[1][0] * np.log(max(kv[1][1], 1.0)))
             if c >= min_count and lift >= min_lift][:max_parts]
    windows = np.unique(np.asarray(s["top_rows"][index])[np.asarray(s["top_rows"][index]) >= 0] // atlas.ctx)
    context: list[str] = []
    if len(windows) >= 3:
        rows = (windows[:, None] * atlas.ctx + np.arange(atlas.ctx)[None, :]).ravel()
        toks = np.where(atlas.valid[rows], atlas.tokens[rows], -1).reshape(len(windows), atlas.ctx)
        toks.sort(axis=1)  # distinct tokens per window: the first of each run in the sorted row
        first = np.ones_like(toks, dtype=bool)
        first[:, 1:] = toks[:, 1:] != toks[:, :-1]
        ids, k = np.unique(toks[first & (toks >= 0)], return_counts=True)
        share = k / len(windows)
        chance = -np.expm1(atlas.ctx * np.log1p(-np.minimum(base[ids], 1 - 1e-12)))  # a random window holds it
        lift = share / np.maximum(chance, 1e-12)
        keep = (share >= min_window_share) & (lift >= min_window_lift)
        for t in ids[keep][np.argsort(-lift[keep], kind="stable")]:
            key = _token_key(atlas.tok(t))
            if key not in parts and key not in context and any(ch.isalnum() for ch in key):
                context.append(key)
            if len(context) == max_context:
                break
    label = " · ".join(parts) if parts else "(no selective token)"
    return f"{label} (in: {' · '.join(context)})" if context else label


# ---------------------------------------------------------------------------------------------- building
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


def encode_sparse(sae, resid: torch.Tensor, keep: torch.Tensor, value_dtype=VALUE_DTYPE) -> sp.csr_matrix:
    """SAE codes of resid [n, d] as CSR [n, d_sae] (rows not kept are empty), values rounded to value_dtype."""
    with torch.no_grad():
        acts = sae.encode(resid.to(sae.W_dec.dtype)).float()
        acts = acts * keep.to(acts.device).unsqueeze(-1)
        r, c = acts.nonzero(as_tuple=True)  # row-major order: CSR order
        vals = acts[r, c].cpu().numpy().astype(value_dtype).astype(np.float32)
    r, c = r.cpu().numpy(), c.cpu().numpy().astype(np.int32)
    indptr = np.concatenate([[0], np.cumsum(np.bincount(r, minlength=acts.shape[0]))]).astype(np.int64)
    m = sp.csr_matrix((vals, c, indptr), shape=tuple(acts.shape))
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
                n_tokens: int = 10, n_neighbours: int = 10, meta: dict | None = None) -> Atlas:
    """Stream windows [n, ctx] through the model to the hook, encode with every SAE, summarise per feature.

    Memory: one chunk's dense codes (chunk_windows x ctx x d_sae, transient) plus the sparse codes (nnz).
    With `work_dir`, each finished chunk is saved there and a later call with the same inputs resumes after
    the last saved chunk. `progress(tokens_done, tokens_total)` is called after each chunk.
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
            out = {"valid": v}
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
    summaries = {n: summarise(codes[n], tokens, valid, ctx, top_examples, n_quantiles, per_quantile, n_bins, n_tokens)
                 for n in names}
    add_neighbours(summaries, {n: saes[n].W_dec for n in names}, n_neighbours)
    tok = model.tokenizer
    uniq = np.unique(tokens)
    strings = {int(i): tok.decode([int(i)]) for i in uniq} if tok is not None else {}
    info = {**(meta or {}), "version": ATLAS_VERSION, "corpus_sha": key["corpus"], "windows": len(windows),
            "tokens": int(len(tokens)), "valid_tokens": int(valid.sum()), "hook_name": hook_name,
            "sink_norm": sink_norm, "encode_seconds": round(encode_s, 2),
            "seconds": round(time.perf_counter() - t0, 2),
            "params": {"top_examples": top_examples, "n_quantiles": n_quantiles, "per_quantile": per_quantile,
                       "n_bins": n_bins, "n_tokens": n_tokens, "n_neighbours": n_neighbours}}
    return _assemble(fingerprint, tokens, ctx, valid, codes, summaries, strings, info)


def _assemble(fingerprint, tokens, ctx, valid, codes, summaries, strings, meta) -> Atlas:
    n_valid = max(1, int(valid.sum()))
    density = {n: s["n_firing"] / n_valid for n, s in summaries.items()}
    mean = {n: s["mean_when_firing"] for n, s in summaries.items()}
    mx = {n: s["max_act"] for n, s in summaries.items()}
    return Atlas(fingerprint=fingerprint, tokens=tokens, ctx=ctx, valid=valid, codes=codes, density=density,
                 mean_when_firing=mean, max_act=mx, summaries=summaries, token_strings=strings, meta=meta)


def _group_rank(groups: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """For sorted group labels: (rank of each element within its group, start offset of each group)."""
    counts = np.bincount(groups, minlength=n_groups)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return np.arange(len(groups)) - starts[groups], starts


def summarise(codes: sp.csr_matrix, tokens: np.ndarray, valid: np.ndarray, ctx: int, top_examples: int = 20,
              n_quantiles: int = 4, per_quantile: int = 5, n_bins: int = 20, n_tokens: int = 10) -> dict:
    """Per-feature arrays from sparse codes [T, F] (vectorised over the non-zeros; see the module docstring)."""
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
    # per (feature, window): max activation at its first position
    win = rows // ctx
    o = np.lexsort((rows, -vals, win, cols))
    c1, w1, v1, r1 = cols[o], win[o], vals[o], rows[o]
    first = np.ones(len(c1), bool)
    first[1:] = (c1[1:] != c1[:-1]) | (w1[1:] != w1[:-1])
    c2, w2, v2, r2 = c1[first], w1[first], v1[first], r1[first]
    o2 = np.lexsort((w2, -v2, c2))  # strongest window first; ties: earlier window
    c2, v2, r2 = c2[o2], v2[o2], r2[o2]
    rank, starts = _group_rank(c2, F)
    top_rows = np.full((F, top_examples), -1, np.int32)
    sel = rank < top_examples
    top_rows[c2[sel], rank[sel]] = r2[sel]
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


# ---------------------------------------------------------------------------------------------- storage
def save_atlas(atlas: Atlas, folder: Path) -> None:
    """Token ids, sparse codes (uint16/int32 indices + fp16 values) and per-feature summaries; atomic swap."""
    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".writing")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    np.save(tmp / "tokens.npy", atlas.tokens.astype(np.int32))
    np.save(tmp / "valid.npy", np.packbits(atlas.valid))
    for n, m in atlas.codes.items():
        itype = np.uint16 if m.shape[1] <= 65536 else np.int32
        np.savez(tmp / f"codes_{n}.npz", data=m.data.astype(VALUE_DTYPE), indices=m.indices.astype(itype),
                 indptr=m.indptr.astype(np.int64), shape=np.asarray(m.shape))
        np.savez_compressed(tmp / f"summary_{n}.npz", **atlas.summaries[n])
    strings = sorted(atlas.token_strings.items())
    (tmp / "token_strings.json").write_text(json.dumps([[i, s] for i, s in strings]))
    (tmp / "meta.json").write_text(json.dumps({**atlas.meta, "fingerprint": atlas.fingerprint, "ctx": atlas.ctx,
                                               "saes": list(atlas.codes)}, indent=2))
    if folder.exists():
        old = folder.with_name(folder.name + ".old")
        if old.exists():
            shutil.rmtree(old)
        folder.rename(old)
        tmp.rename(folder)
        shutil.rmtree(old)
    else:
        tmp.rename(folder)


def read_meta(folder: Path) -> dict | None:
    f = Path(folder) / "meta.json"
    return json.loads(f.read_text()) if f.exists() else None


def load_atlas(folder: Path) -> Atlas | None:
    """The atlas saved in `folder`, or None when there is none."""
    folder = Path(folder)
    meta = read_meta(folder)
    if meta is None:
        return None
    tokens = np.load(folder / "tokens.npy")
    valid = np.unpackbits(np.load(folder / "valid.npy"))[: len(tokens)].astype(bool)
    codes, summaries = {}, {}
    for n in meta["saes"]:
        z = np.load(folder / f"codes_{n}.npz")
        codes[n] = sp.csr_matrix((z["data"].astype(np.float32), z["indices"].astype(np.int32), z["indptr"]),
                                 shape=tuple(z["shape"]))
        with np.load(folder / f"summary_{n}.npz") as s:
            summaries[n] = {k: s[k] for k in s.files}
    strings = {int(i): s for i, s in json.loads((folder / "token_strings.json").read_text())}
    fp = meta.pop("fingerprint")
    ctx = meta.pop("ctx")
    return _assemble(fp, tokens, ctx, valid, codes, summaries, strings, meta)


def folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file())


def atlas_fingerprint(profile_name: str, hook_name: str, sae_fingerprint: str) -> str:
    """What an atlas depends on: the profile, the hook and the SAE weights."""
    return f"{profile_name}|{hook_name}|{sae_fingerprint}"


def default_atlas_dir(profile, root: Path | None = None) -> Path:
    """Where a profile's atlas lives: `root/<profile>` when given; else shipped `data/atlas/<profile>` for the
    embedded (GGUF) profile and `data/cache/atlas/<profile>` for the others."""
    from app.engine.profiles import DATA_DIR

    if root is not None:
        return Path(root) / profile.name
    return DATA_DIR / "atlas" / profile.name if profile.loader == "gguf" else DATA_DIR / "cache" / "atlas" / profile.name


def build_command(profile_name: str) -> str:
    return f"python -m app atlas --profile {profile_name}"


def load_for_engine(folder: Path, fingerprint: str, profile_name: str) -> tuple[Atlas | None, str]:
    """(atlas, status): status is "ok", or says why there is none and the command that builds it."""
    meta = read_meta(folder)
    cmd = build_command(profile_name)
    if meta is None:
        return None, f"missing: no atlas in {folder}; build it with `{cmd}`"
    if meta.get("fingerprint") != fingerprint or meta.get("version") != ATLAS_VERSION:
        return None, (f"stale: the atlas in {folder} was built for {meta.get('fingerprint')} (version "
                      f"{meta.get('version')}), the loaded SAEs are {fingerprint}; rebuild it with `{cmd}`")
    try:
        return load_atlas(folder), "ok"
    except Exception as exc:  # a half-copied or corrupted folder must not stop the server
        return None, f"unreadable: {type(exc).__name__}: {exc}; rebuild it with `{cmd}`"


# ---------------------------------------------------------------------------------------------- pair check
def pair_independence(W_dec_coarse: torch.Tensor, W_dec_fine: torch.Tensor, max_checked: int = 2048,
                      threshold: float = 0.1, chunk: int = 256) -> PairIndependence:
    """Mean cos(coarse i, fine i) over i < min width, and the share of coarse features whose best fine match
    (max decoder cosine) is the same index (all coarse features, or `max_checked` evenly spaced ones)."""
    A = torch.nn.functional.normalize(W_dec_coarse.detach().float(), dim=-1)
    B = torch.nn.functional.normalize(W_dec_fine.detach().float(), dim=-1)
    n = min(A.shape[0], B.shape[0])
    max_checked = min(max_checked, max(128, 2**25 // max(1, B.shape[0])))  # ~2k x 16k cosines at most (CPU)
    same = float((A[:n] * B[:n]).sum(-1).mean()) if n else 0.0
    rows = torch.arange(A.shape[0]) if A.shape[0] <= max_checked else \
        torch.linspace(0, A.shape[0] - 1, max_checked).long()
    hits = 0
    for s0 in range(0, len(rows), chunk):
        r = rows[s0: s0 + chunk]
        best = (A[r] @ B.T).argmax(-1)
        hits += int((best == r).sum())
    return PairIndependence(mean_same_index_cosine=same, share_best_is_same=hits / max(1, len(rows)),
                            n_checked=int(len(rows)), threshold=threshold)


# ---------------------------------------------------------------------------------------------- search
def search_by_text(model, saes: dict, hook_name: str, prefix_ids: Sequence[int], query_ids: Sequence[int],
                   sink_norm: float | None = None, top: int = 20, atlas: Atlas | None = None,
                   relative: bool = False) -> dict:
    """Features that fire on the query tokens (run after `prefix_ids`, so no query token is position 0).

    score = max activation over the query's non-sink positions; with relative=True and an atlas, divided by
    the feature's max activation on the atlas corpus (features that fire near their strongest rank first).
    -> {sae name: tuple[SearchHit, ...]} best first.
    """
    ids = list(prefix_ids) + list(query_ids)
    toks = torch.tensor([ids], device=model.cfg.device)
    resid = forward_to_hook(model, hook_name, toks)[0]
    special = sorted(set(getattr(model.tokenizer, "all_special_ids", []) or []))
    keep = valid_mask(resid.unsqueeze(0), toks.cpu(), special, sink_norm)[0]
    keep[: len(prefix_ids)] = False
    q = resid[len(prefix_ids):]
    kq = keep[len(prefix_ids):]
    out = {}
    for n, sae in saes.items():
        acts = sae.encode(q.to(sae.W_dec.dtype)).float().cpu()
        acts[~kq] = 0.0
        mx, where = acts.max(dim=0) if len(q) else (torch.zeros(acts.shape[1]), torch.zeros(acts.shape[1], dtype=torch.long))
        score = mx.clone()
        if relative and atlas is not None and n in atlas.max_act:
            ref = torch.as_tensor(atlas.max_act[n]).float()
            score = torch.where(ref > 0, mx / ref.clamp_min(1e-12), torch.zeros_like(mx))
        fired = int((mx > 0).sum())
        k = min(top, fired)
        if k == 0:
            out[n] = ()
            continue
        # ties: lower index first (stable order on -score)
        order = np.argsort(-score.numpy(), kind="stable")[:k]
        hits = []
        for f in order:
            f = int(f)
            tid = int(query_ids[int(where[f])])
            hits.append(SearchHit(sae=n, index=f, score=float(score[f]), activation=float(mx[f]),
                                  token=model.tokenizer.decode([tid]),
                                  label=atlas.label(n, f) if atlas is not None else "",
                                  density=float(atlas.density[n][f]) if atlas is not None else None,
                                  max_act=float(atlas.max_act[n][f]) if atlas is not None else None))
        out[n] = tuple(hits)
    return out


def _norm(s: str) -> str:
    return " ".join(s.casefold().split())


def search_atlas(atlas: Atlas, query: str, top: int = 20) -> dict:
    """Features whose top tokens or top examples' activating tokens contain the query (case-insensitive).

    score = share of the feature's firings on matching top tokens, plus 0.5 x the share of its top examples
    whose activating token (with the 3 tokens before it) contains the query. -> {sae: tuple[SearchHit, ...]}.
    """
    qn = _norm(query)
    if not qn:
        return {n: () for n in atlas.codes}
    words = qn.split()
    lookup = np.zeros(max(atlas.token_strings, default=0) + 2, bool)  # token id -> matches (index -1: padding)
    for i, s in atlas.token_strings.items():
        t = _norm(s)
        lookup[i] = bool(t) and (qn in t or t in words)
    out = {}
    for n in atlas.codes:
        s = atlas.summaries[n]
        tid, tcnt = s["tok_ids"], s["tok_counts"]
        m = lookup[np.clip(tid, -1, len(lookup) - 2)] & (tid >= 0)
        nf = np.maximum(s["n_firing"], 1)
        tok_score = (tcnt * m).sum(1) / nf
        snippets = _snippets(atlas, n)
        ex_score = np.array([sum(qn in sn for sn in sns) / max(1, len(sns)) for sns in snippets]) if len(snippets) else 0
        score = tok_score + 0.5 * ex_score
        cand = np.flatnonzero(score > 0)
        order = cand[np.lexsort((cand, -atlas.max_act[n][cand], -score[cand]))][:top]
        hits = []
        for f in order:
            f = int(f)
            mt = next((atlas.tok(t) for t, ok in zip(tid[f], m[f]) if ok), "")
            hits.append(SearchHit(sae=n, index=f, score=float(score[f]), activation=float(atlas.max_act[n][f]),
                                  token=mt, label=atlas.label(n, f), density=float(atlas.density[n][f]),
                                  max_act=float(atlas.max_act[n][f])))
        out[n] = tuple(hits)
    return out


def _snippets(atlas: Atlas, sae: str, before: int = 3) -> list[list[str]]:
    """Per feature: the normalised text of each top example's activating token and the `before` tokens before
    it (built once per atlas and SAE, then cached)."""
    key = ("snippets", sae)
    if key not in atlas._cache:
        rows = atlas.summaries[sae]["top_rows"]
        strings = atlas.token_strings
        toks = atlas.tokens
        ctx = atlas.ctx
        out = []
        for fr in rows:
            sns = []
            for r in fr:
                if r < 0:
                    continue
                w0 = (int(r) // ctx) * ctx
                ids = toks[max(w0, int(r) - before): int(r) + 1]
                sns.append(_norm("".join(strings.get(int(i), "") for i in ids)))
            out.append(sns)
        atlas._cache[key] = out
    return atlas._cache[key]
