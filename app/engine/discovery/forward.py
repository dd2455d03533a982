"""Residuals at the hook for many short prompts: right-padded batches, or prompts packed into rows."""
from __future__ import annotations

from typing import Sequence

import torch


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
