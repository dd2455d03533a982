"""Concept discovery: per-prompt SAE statistics over a concept set and a contrast set, and feature selectivity.

Definitions (shown on the /discover page):
- per-prompt activation of a feature: its max (or mean) over the prompt's tokens, sink positions left out
  (position 0, special tokens, massive-norm positions: `analysis.sink_mask`).
- mean_concept / mean_contrast: the mean of that per-prompt activation over each prompt set (so sets of
  unequal sizes compare fairly).
- fire rate: the fraction of a set's prompts on which the feature's max activation is > 0.
- selectivity = mean_concept / (mean_concept + mean_contrast): the share of the feature's activation mass
  that lands on concept prompts, normalised per set size (1 = only on concept prompts, 0.5 = no preference).
"""
from __future__ import annotations

import contextlib
import hashlib
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from app.engine.analysis import sink_mask

AGGREGATES = ("max", "mean")


@dataclass(frozen=True)
class SparsePromptStats:
    """Per-prompt max and mean activation of each feature that fired on the prompt (COO; absent = 0)."""

    n_prompts: int
    width: int
    prompt: torch.Tensor  # [nnz] int64, prompt index in the combined (concept then contrast) order
    feature: torch.Tensor  # [nnz] int64
    max: torch.Tensor  # [nnz] float32
    mean: torch.Tensor  # [nnz] float32

    def values(self, aggregate: str) -> torch.Tensor:
        if aggregate not in AGGREGATES:
            raise ValueError(f"aggregate must be one of {AGGREGATES}")
        return self.max if aggregate == "max" else self.mean

    def dense(self, features: Sequence[int], aggregate: str = "max") -> torch.Tensor:
        """[n_prompts, len(features)] per-prompt activations of the given features only."""
        feats = torch.as_tensor(list(features), dtype=torch.int64)
        out = torch.zeros(self.n_prompts, len(feats))
        if len(feats) == 0 or self.feature.numel() == 0:
            return out
        col = torch.full((self.width,), -1, dtype=torch.int64)
        col[feats] = torch.arange(len(feats))
        c = col[self.feature]
        keep = c >= 0
        out[self.prompt[keep], c[keep]] = self.values(aggregate)[keep]
        return out

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.prompt, self.feature, self.max, self.mean))


@dataclass(frozen=True)
class CollectedStats:
    """Everything the forward passes produced; the tables and the mapping are computed from this."""

    n_concept: int
    n_contrast: int
    n_positions: int  # real (unpadded) token positions run through the model
    n_tokens_used: int  # positions left after the sink mask
    per_sae: dict  # name -> SparsePromptStats
    seconds: float

    @property
    def n_prompts(self) -> int:
        return self.n_concept + self.n_contrast


@dataclass(frozen=True)
class FeatureStats:
    """Dense per-feature statistics of one SAE over the two prompt sets."""

    mean_concept: torch.Tensor  # [F]
    mean_contrast: torch.Tensor
    fire_concept: torch.Tensor  # fraction of concept prompts with max activation > 0
    fire_contrast: torch.Tensor
    selectivity: torch.Tensor


@dataclass(frozen=True)
class FeatureRow:
    index: int
    mean_concept: float
    mean_contrast: float
    fire_concept: float
    fire_contrast: float
    selectivity: float
    noisy: bool  # loud on concept prompts but not selective


def parse_prompt_lines(text: str) -> list[str]:
    """One prompt per line; blank lines and surrounding whitespace dropped."""
    return [ln.strip() for ln in text.splitlines() if ln.strip()]


def prompt_set_hash(concept: Sequence[str], contrast: Sequence[str]) -> str:
    """Stable hash of the two prompt sets (order matters: it fixes prompt indices)."""
    h = hashlib.sha256()
    for name, prompts in (("concept", concept), ("contrast", contrast)):
        h.update(name.encode())
        for p in prompts:
            h.update(b"\x00" + p.encode("utf-8"))
    return h.hexdigest()[:16]


def encode_prompt_set(tokenizer, prompts: Sequence[str], prepend_bos: bool = False,
                      max_tokens: int | None = None) -> list[tuple[int, ...]]:
    """Token ids of each prompt as raw text (no chat template), truncated to max_tokens."""
    out = []
    for p in prompts:
        ids = tokenizer.encode(p, add_special_tokens=False)
        if prepend_bos and tokenizer.bos_token_id is not None:
            ids = [tokenizer.bos_token_id] + ids
        if max_tokens is not None:
            ids = ids[:max_tokens]
        out.append(tuple(int(i) for i in ids))
    return out


def resid_at_hook(model, hook_name: str, batch_ids: Sequence[Sequence[int]], pad_id: int = 0) -> torch.Tensor:
    """[B, T, d] residual at the hook for right-padded prompts, forward stopped after the hook's layer.

    Right padding needs no attention mask: attention is causal, so real positions never see the pads.
    """
    T = max(len(ids) for ids in batch_ids)
    toks = torch.full((len(batch_ids), T), pad_id, dtype=torch.int64)
    for b, ids in enumerate(batch_ids):
        toks[b, : len(ids)] = torch.as_tensor(ids, dtype=torch.int64)
    layer = int(hook_name.split(".")[1])
    _, cache = model.run_with_cache(toks.to(model.cfg.device), names_filter=hook_name, stop_at_layer=layer + 1)
    return cache[hook_name]


PACK_ROW_TOKENS = 128  # packed row length: longer rows spend more attention on (masked) cross-prompt pairs
PACK_ROWS_PER_BATCH = 2  # rows per forward (~256 tokens: the engine lock is held ~ as long as a 16-prompt batch)


def pack_rows(lengths: Sequence[int], row_tokens: int) -> list[list[int]]:
    """First-fit decreasing: prompt indices per row, each row <= row_tokens tokens (a longer prompt gets a row
    of its own); empty prompts are left out."""
    order = sorted((i for i in range(len(lengths)) if lengths[i] > 0), key=lambda i: -lengths[i])
    rows: list[list[int]] = []
    room: list[int] = []
    for i in order:
        n = lengths[i]
        for r, left in enumerate(room):
            if left >= n:
                rows[r].append(i)
                room[r] -= n
                break
        else:
            rows.append([i])
            room.append(row_tokens - n)
    return rows


def can_pack(model) -> bool:
    """Packing needs per-token positions: rotary (re-rotated in hooks) or learned absolute position embeddings."""
    cfg = model.cfg
    if getattr(cfg, "use_dynamic_ntk_rope", False) or getattr(cfg, "use_logn_attn", False):
        return False
    return cfg.positional_embedding_type in ("rotary", "standard")


def make_capture_hook(store: dict, key):
    def hook_fn(act, hook):
        store[key] = act
    return hook_fn


def make_rotary_hook(attn, store: dict, key, positions: torch.Tensor):
    """Replaces hook_rot_q/k's input (rotated at row positions 0..T-1) by the un-rotated q/k (kept by
    make_capture_hook) rotated at each token's own position in its prompt: the same table entries and
    elementwise ops as the prompt's unpacked forward."""
    def hook_fn(act, hook):
        x = store.pop(key).to(act.device)
        r = attn.cfg.rotary_dim
        x_rot, x_pass = x[..., :r], x[..., r:]
        cos = attn.rotary_cos[positions][:, :, None, :]
        sin = attn.rotary_sin[positions][:, :, None, :]
        return torch.cat([x_rot * cos + attn.rotate_every_two(x_rot) * sin, x_pass], dim=-1)
    return hook_fn


def make_segment_mask_hook(allowed: torch.Tensor):
    """Attention scores [B, H, T, T] -> -inf wherever query and key belong to different prompts of a row."""
    def hook_fn(scores, hook):
        return scores.masked_fill(~allowed[:, None], float("-inf"))
    return hook_fn


def make_pos_embed_hook(W_pos: torch.Tensor, positions: torch.Tensor):
    def hook_fn(act, hook):
        return W_pos[positions].to(act.dtype)
    return hook_fn


def packed_resid_at_hook(model, hook_name: str, rows: Sequence[Sequence[Sequence[int]]],
                         pad_id: int = 0) -> list[list[torch.Tensor]]:
    """Residual at the hook [n_i, d] of each prompt of each packed row (prompts side by side in one row).

    Positions restart at 0 for every prompt and attention never crosses prompts (block-diagonal causal mask),
    so each prompt's residual is its unpacked forward's, up to float summation order.
    """
    device = model.cfg.device
    T = max(sum(len(ids) for ids in row) for row in rows)
    B = len(rows)
    toks = torch.full((B, T), pad_id, dtype=torch.int64)
    pos = torch.zeros((B, T), dtype=torch.int64)
    seg = torch.full((B, T), -1, dtype=torch.int64)  # pads: segment -1 (they see only pads)
    spans = []
    for b, row in enumerate(rows):
        o, sp = 0, []
        for j, ids in enumerate(row):
            n = len(ids)
            toks[b, o:o + n] = torch.as_tensor(list(ids), dtype=torch.int64)
            pos[b, o:o + n] = torch.arange(n)
            seg[b, o:o + n] = j
            sp.append((o, n))
            o += n
        spans.append(sp)
    pos, seg = pos.to(device), seg.to(device)
    allowed = seg[:, :, None] == seg[:, None, :]  # [B, T, T]; TL's own causal mask still applies
    layer = int(hook_name.split(".")[1])
    store: dict = {}
    hooks = [(hook_name, make_capture_hook(store, "resid"))]
    if model.cfg.positional_embedding_type == "standard":
        hooks.append(("hook_pos_embed", make_pos_embed_hook(model.W_pos, pos)))
    for li in range(layer + 1):
        attn = model.blocks[li].attn
        a = f"blocks.{li}.attn"
        if model.cfg.positional_embedding_type == "rotary":
            hooks += [(f"{a}.hook_q", make_capture_hook(store, (li, "q"))),
                      (f"{a}.hook_k", make_capture_hook(store, (li, "k"))),
                      (f"{a}.hook_rot_q", make_rotary_hook(attn, store, (li, "q"), pos)),
                      (f"{a}.hook_rot_k", make_rotary_hook(attn, store, (li, "k"), pos))]
        hooks.append((f"{a}.hook_attn_scores", make_segment_mask_hook(allowed)))
    with model.hooks(fwd_hooks=hooks):
        model(toks.to(device), stop_at_layer=layer + 1)
    resid = store["resid"]
    return [[resid[b, o:o + n] for o, n in sp] for b, sp in enumerate(spans)]


def stats_from_resid(saes: dict, segments: Sequence[torch.Tensor], encode_chunk: int = 4096) -> dict:
    """Per-prompt max/mean of every SAE feature from each prompt's kept residual rows [n_i, d].

    Returns name -> (local prompt idx, feature, max, mean) CPU tensors of the features that fired.
    All kept rows of the batch go through each SAE in one encode per chunk of encode_chunk rows, reduced into
    [prompts, F] max / sum accumulators as they come (the [rows, F] activations of the batch are never held).
    """
    lengths = torch.tensor([int(s.shape[0]) for s in segments], dtype=torch.int64)
    out = {}
    nonempty = [s for s in segments if s.shape[0] > 0]
    P = len(segments)
    for name, sae in saes.items():
        if not nonempty:
            empty = torch.zeros(0, dtype=torch.int64)
            out[name] = (empty, empty, torch.zeros(0), torch.zeros(0))
            continue
        x = torch.cat(nonempty).to(sae.W_dec.dtype)
        owner = torch.repeat_interleave(torch.arange(P), lengths).to(x.device)  # row -> local prompt
        F = int(sae.W_dec.shape[0])
        mx = torch.zeros(P, F, device=x.device)
        sm = torch.zeros(P, F, device=x.device)
        for i in range(0, x.shape[0], encode_chunk):
            acts = sae.encode(x[i:i + encode_chunk]).float().clamp_min_(0)
            o = owner[i:i + encode_chunk]
            mx.index_reduce_(0, o, acts, "amax", include_self=True)
            sm.index_add_(0, o, acts)
        mn = sm / lengths.to(sm.device).clamp_min(1)[:, None]
        p, f = (mx > 0).nonzero(as_tuple=True)
        out[name] = (p.cpu(), f.cpu(), mx[p, f].cpu(), mn[p, f].cpu())
    return out


def collect_stats(model, saes: dict, hook_name: str, id_lists: Sequence[Sequence[int]], n_concept: int,
                  sink_norm: float | None = None, batch_size: int = 16,
                  batch_context: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
                  progress: Callable[[int, int], None] | None = None, encode_chunk: int = 4096,
                  pack_tokens: int | None = PACK_ROW_TOKENS, rows_per_batch: int = PACK_ROWS_PER_BATCH) -> CollectedStats:
    """Run every prompt to the hook and aggregate per prompt (streaming: one batch's statistics at a time).

    With pack_tokens (and a model whose positions can be set per token), short prompts are packed side by side
    into rows of <= pack_tokens tokens, rows_per_batch rows per forward (`packed_resid_at_hook`); otherwise
    batches of batch_size prompts of similar lengths, right-padded. Both give the same statistics.
    batch_context() wraps each batch (the job passes engine.session so interactive requests interleave);
    progress(done, total) is called after each batch and may raise (a job runner's cancel) to stop it.
    """
    t0 = time.perf_counter()
    n = len(id_lists)
    widths = {name: int(sae.W_dec.shape[0]) for name, sae in saes.items()}
    parts = {name: [] for name in saes}
    n_pos = n_used = 0
    pad_id = getattr(model.tokenizer, "pad_token_id", None) or 0
    packed = pack_tokens is not None and can_pack(model)
    if packed:
        rows = pack_rows([len(ids) for ids in id_lists], pack_tokens)
        batches = [rows[s:s + rows_per_batch] for s in range(0, len(rows), rows_per_batch)]
    else:
        order = sorted(range(n), key=lambda i: len(id_lists[i]))
        batches = [[[i for i in order[s:s + batch_size] if len(id_lists[i]) > 0]] for s in range(0, n, batch_size)]
    n_empty = sum(1 for ids in id_lists if len(ids) == 0)
    done = n_empty if packed else 0
    for bi, batch in enumerate(batches):
        idx = [i for row in batch for i in row]
        if idx:
            with batch_context(), torch.inference_mode():
                if packed:
                    per_row = packed_resid_at_hook(model, hook_name, [[id_lists[i] for i in row] for row in batch], pad_id)
                    resids = [r for row in per_row for r in row]
                else:
                    full = resid_at_hook(model, hook_name, [id_lists[i] for i in idx], pad_id)
                    resids = [full[b, : len(id_lists[i])] for b, i in enumerate(idx)]
                segments = []
                for i, r in zip(idx, resids):
                    ids = id_lists[i]
                    r = r.float()
                    keep = ~sink_mask(model, ids, r, sink_norm).to(r.device)
                    segments.append(r[keep])
                    n_pos += len(ids)
                    n_used += int(keep.sum())
                per = stats_from_resid(saes, segments, encode_chunk)
            g = torch.as_tensor(idx, dtype=torch.int64)
            for name, (p, f, mx, mn) in per.items():
                parts[name].append((g[p], f, mx, mn))
        done = done + len(idx) if packed else min(n, (bi + 1) * batch_size)
        if progress is not None:
            progress(done, n)
    if progress is not None and not batches:
        progress(n, n)
    per_sae = {}
    for name, ps in parts.items():
        def cat(k, dt, ps=ps):
            return torch.cat([q[k] for q in ps]) if ps else torch.zeros(0, dtype=dt)
        pr, fe, mx, mn = cat(0, torch.int64), cat(1, torch.int64), cat(2, torch.float32), cat(3, torch.float32)
        o = torch.argsort(pr * widths[name] + fe)  # (prompt, feature) order: the same COO however prompts were batched
        per_sae[name] = SparsePromptStats(n, widths[name], pr[o], fe[o], mx[o], mn[o])
    return CollectedStats(n_concept, n - n_concept, n_pos, n_used, per_sae, time.perf_counter() - t0)


def feature_stats(stats: SparsePromptStats, n_concept: int, aggregate: str = "max") -> FeatureStats:
    """Dense [F] means, fire rates and selectivity (prompts 0..n_concept-1 are concept prompts)."""
    F, n = stats.width, stats.n_prompts
    n_contrast = n - n_concept
    is_concept = stats.prompt < n_concept
    vals = stats.values(aggregate)
    fired = (stats.max > 0).float()

    def per_feature(mask, v):
        return torch.zeros(F).index_add_(0, stats.feature[mask], v[mask])

    mc = per_feature(is_concept, vals) / max(n_concept, 1)
    mn = per_feature(~is_concept, vals) / max(n_contrast, 1)
    fc = per_feature(is_concept, fired) / max(n_concept, 1)
    fn = per_feature(~is_concept, fired) / max(n_contrast, 1)
    tot = mc + mn
    sel = torch.where(tot > 0, mc / tot.clamp_min(1e-30), torch.zeros_like(tot))
    return FeatureStats(mc, mn, fc, fn, sel)


def top_features(fs: FeatureStats, top: int = 20, min_fire_rate: float = 0.1, loud: int = 5,
                 noisy_below: float = 0.8) -> list[FeatureRow]:
    """The `top` features by selectivity among those firing on >= min_fire_rate of concept prompts
    (ties broken by mean_concept), plus the `loud` loudest features on concept prompts.

    A row is flagged noisy when its mean_concept is at least the median mean_concept of the selective
    rows (loud) while its selectivity is below noisy_below (it bleeds into contrast prompts).
    """
    eligible = (fs.fire_concept >= min_fire_rate) & (fs.mean_concept > 0)
    cand = eligible.nonzero(as_tuple=True)[0]
    # sort by (selectivity desc, mean_concept desc): two stable sorts
    o = torch.argsort(fs.mean_concept[cand], descending=True, stable=True)
    cand = cand[o]
    o = torch.argsort(fs.selectivity[cand], descending=True, stable=True)
    selective = [int(i) for i in cand[o][:top]]
    loudest = [int(i) for i in torch.argsort(fs.mean_concept, descending=True)[:loud] if fs.mean_concept[i] > 0]
    chosen = selective + [i for i in loudest if i not in selective]
    ref = torch.median(fs.mean_concept[selective]).item() if selective else float("inf")
    rows = []
    for i in chosen:
        mc, sel = float(fs.mean_concept[i]), float(fs.selectivity[i])
        rows.append(FeatureRow(i, mc, float(fs.mean_contrast[i]), float(fs.fire_concept[i]),
                               float(fs.fire_contrast[i]), sel, bool(mc >= ref and sel < noisy_below)))
    return rows


@dataclass(frozen=True)
class DiscoveryParams:
    """Analysis knobs applied to collected statistics (cheap: no forward pass)."""

    aggregate: str = "max"
    top_k: int = 20
    min_fire_rate: float = 0.25
    n_coarse: int = 5
    n_fine: int = 30
    n_match: int = 10  # best cosine matches per coarse feature added to the mapped fine set
    cos_floor: float = 0.1
    scan_chunk: int = 16384


def row_dict(r: FeatureRow) -> dict:
    return {"index": r.index, "mean_concept": r.mean_concept, "mean_contrast": r.mean_contrast,
            "fire_concept": r.fire_concept, "fire_contrast": r.fire_contrast, "selectivity": r.selectivity,
            "noisy": r.noisy}


def top_prompts(stats: SparsePromptStats, features: Sequence[int], aggregate: str = "max") -> list[tuple[int, float]]:
    """For each feature: (index of the prompt where its per-prompt activation is largest, that activation)."""
    d = stats.dense(features, aggregate)
    if d.shape[1] == 0:
        return []
    v, i = d.max(0)
    return [(int(a), float(b)) for a, b in zip(i, v)]


def summarize(collected: CollectedStats, saes: dict, p: DiscoveryParams, prompts: Sequence[str] | None = None) -> dict:
    """Tables for both SAEs and the coarse -> fine mapping, as a JSON-ready dict (the view's `result`).

    prompts (concept then contrast, as collected) adds each row's strongest prompt to the tables.
    """
    from app.engine import decomposition as dec

    tables, fstats = {}, {}
    for name, st in collected.per_sae.items():
        fstats[name] = feature_stats(st, collected.n_concept, p.aggregate)
        rows = [row_dict(r) for r in top_features(fstats[name], p.top_k, p.min_fire_rate)]
        for r, (pi, v) in zip(rows, top_prompts(st, [r["index"] for r in rows], p.aggregate)):
            r["top_prompt"] = prompts[pi] if prompts is not None and v > 0 else None
        tables[name] = rows
    mapping = None
    if "coarse" in tables and "fine" in tables:
        coarse = [r["index"] for r in tables["coarse"] if not r["noisy"]][: p.n_coarse]
        top_fine = top_features(fstats["fine"], max(p.n_fine, 1), p.min_fire_rate, loud=0)[: p.n_fine]
        W_c, W_f = saes["coarse"].W_dec.detach(), saes["fine"].W_dec.detach()
        scan = dec.scan_cosines(W_c[coarse] if coarse else W_c[:0], coarse, W_f, chunk=p.scan_chunk, floor=p.cos_floor)
        fine, source = [], {}
        for r in top_fine:
            fine.append(r.index)
            source[r.index] = "top"
        for m in scan.matches:
            for fi, _ in m[: p.n_match]:
                if fi not in source:
                    fine.append(fi)
                    source[fi] = "cosine"
                elif source[fi] == "top":
                    source[fi] = "both"
        a = collected.per_sae["coarse"].dense(coarse, p.aggregate)
        b = collected.per_sae["fine"].dense(fine, p.aggregate)
        corr = dec.pearson_columns(a, b) if coarse and fine else torch.zeros(len(coarse), len(fine))
        cos = dec.decoder_cosine(W_c[coarse].cpu(), W_f[fine].cpu()) if coarse and fine else torch.zeros(len(coarse), len(fine))
        fine_rows = {}
        for fi in fine:
            fine_rows[str(fi)] = {"selectivity": float(fstats["fine"].selectivity[fi]),
                                  "mean_concept": float(fstats["fine"].mean_concept[fi]),
                                  "fire_concept": float(fstats["fine"].fire_concept[fi]), "source": source[fi]}
        mapping = {
            "coarse": coarse, "fine": fine, "fine_info": fine_rows,
            "corr": [[round(float(x), 6) for x in row] for row in corr],
            "cos": [[round(float(x), 6) for x in row] for row in cos],
            "scan": {"n_fine": scan.n_fine, "bin_edges": list(scan.bin_edges), "counts": [list(c) for c in scan.counts],
                     "matches": [[[fi, round(v, 6)] for fi, v in m] for m in scan.matches], "floor": scan.floor,
                     "max_cosine": list(scan.max_cosine)},
        }
    secs = collected.seconds
    return {
        "n_concept": collected.n_concept, "n_contrast": collected.n_contrast,
        "n_positions": collected.n_positions, "n_tokens_used": collected.n_tokens_used,
        "seconds": round(secs, 3), "tokens_per_s": round(collected.n_positions / secs, 1) if secs > 0 else None,
        "aggregate": p.aggregate, "widths": {k: v.width for k, v in collected.per_sae.items()},
        "tables": tables, "mapping": mapping,
    }
