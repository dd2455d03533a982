"""collect_stats: every prompt through the model and both SAEs, reduced to sparse per-prompt statistics."""
from __future__ import annotations

import contextlib
import time
from typing import Callable, Sequence

import torch

from app.engine.analysis import sink_mask
from app.engine.discovery.forward import (
    PACK_ROW_TOKENS,
    PACK_ROWS_PER_BATCH,
    can_pack,
    pack_rows,
    packed_resid_at_hook,
    resid_at_hook,
)
from app.engine.discovery.stats import CollectedStats, SparsePromptStats


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
    parts: dict[str, list] = {name: [] for name in saes}
    n_pos = n_used = 0
    pad_id = getattr(model.tokenizer, "pad_token_id", None) or 0
    packed = pack_tokens is not None and can_pack(model)
    if packed and pack_tokens is not None:  # packed implies it; mypy does not see that
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
