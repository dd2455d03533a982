"""The patched runs of exact activation patching (patching.exact_patching): the corrupt run's prefix reused.

A patched cell (layer L, position p) changes nothing at positions < p (attention is causal) nor at layers < L: there
every residual, key and value is the corrupt run's. So the cells of one position p run only positions p..n-1, each
row joining the batch at its own layer L (the corrupt run's cached residual there), their attention reading the
corrupt run's cached keys / values of positions < p (`PrefixKV`, a transformer-lens past-K/V entry). A cell whose
clean activation equals the corrupt one is the corrupt run itself: LD_corrupt, nothing run. Work: (n - p) positions
x (n_layers - L) blocks per cell, against n x n_layers for a whole forward per cell. Models whose attention cannot
take a prefix (supports_prefix) run whole-prompt rows from each chunk's first layer (whole_prompt_patching).
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

QK_NORMED = ("OlmoeForCausalLM", "Olmo2ForCausalLM", "Olmo3ForCausalLM")  # cached keys are not hook_k there


class PrefixKV:
    """Fixed past keys / values [rows, p, kv_heads, d_head] for one block: `append` returns them with the new ones
    after and keeps nothing (every chunk of the same p reuses the prefix)."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor):
        self.past_keys, self.past_values = keys, values

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.cat([self.past_keys.to(k.dtype), k], 1), torch.cat([self.past_values.to(v.dtype), v], 1)


def supports_prefix(model) -> bool:
    """The model's blocks read positions only through rotary / absolute embeddings already in the residual and
    cache exactly what hook_k / hook_v see (no local windows, QK norm, clipping or per-head inputs)."""
    cfg = model.cfg
    return (cfg.positional_embedding_type in ("standard", "rotary") and not getattr(cfg, "use_local_attn", False)
            and cfg.original_architecture not in QK_NORMED and getattr(cfg, "clip_qkv", None) is None
            and not cfg.use_attn_in and not cfg.use_split_qkv_input)


def kv_names(layers) -> list[str]:
    return [f"blocks.{x}.attn.{h}" for x in layers for h in ("hook_k", "hook_v")]


def make_suffix_patch_hook(source: torch.Tensor, rows):
    """Writes source [...] (one clean activation) into rows `rows` at the suffix's first position (the patched one)."""
    r = torch.as_tensor(list(rows), dtype=torch.long, device=source.device)

    def suffix_patch_hook(act: torch.Tensor, hook=None) -> torch.Tensor:
        act = act.clone()
        act[r, 0] = source.to(act.dtype)
        return act

    return suffix_patch_hook


def plan(cells, n_layers: int, n: int, batch_tokens: int, batch_rows: int | None) -> list[tuple[int, list[int]]]:
    """Chunks (p, cell indices) of the cells [(layer, p)]: one position each, layer-sorted, at most batch_rows rows
    (default: all of the position's) and batch_tokens suffix tokens per chunk."""
    by_p: dict[int, list[int]] = {}
    for i, (_, p) in enumerate(cells):
        by_p.setdefault(p, []).append(i)
    out = []
    for p, idx in sorted(by_p.items()):
        idx.sort(key=lambda i: cells[i][0])
        size = max(1, min(batch_rows or len(idx), batch_tokens // max(n - p, 1)))
        out += [(p, idx[lo:lo + size]) for lo in range(0, len(idx), size)]
    return out


def prefix_patching(model, cells, n: int, clean: dict, corrupt: dict, hook_of: Callable[[int], str],
                    ld: Callable[[torch.Tensor], torch.Tensor], batch_tokens: int = 4096,
                    batch_rows: int | None = None) -> tuple[np.ndarray, int, int]:
    """LD of every patched cell [(layer, p)] -> (LDs [cells], nan where the cell equals the corrupt run; forwards;
    work in positions x blocks). clean: {hook_of(layer): act [pos, ...]}; corrupt: the same hooks plus resid_pre,
    hook_k and hook_v of every layer from the first patched one.

    A chunk's rows are sorted by layer and join the batch at their layer (the corrupt residual there, its suffix):
    no row runs a block before its patched layer."""
    from app.engine.compat import run_block

    n_layers = model.cfg.n_layers
    out = np.full(len(cells), np.nan)
    todo = [i for i, (x, p) in enumerate(cells) if not torch.equal(clean[hook_of(x)][p], corrupt[hook_of(x)][p])]
    forwards = work = 0
    for p, idx in plan([cells[i] for i in todo], n_layers, n, batch_tokens, batch_rows):
        chunk = [todo[i] for i in idx]
        by_layer: dict[int, list[int]] = {}
        for row, i in enumerate(chunk):
            by_layer.setdefault(cells[i][0], []).append(row)
        hooks = [(hook_of(x), make_suffix_patch_hook(clean[hook_of(x)][p], rs)) for x, rs in by_layer.items()]
        resid = None
        with model.hooks(fwd_hooks=hooks):
            for x in range(cells[chunk[0]][0], n_layers):
                if x in by_layer:  # these rows join here: the corrupt run's suffix, patched by the hook above
                    new = corrupt[f"blocks.{x}.hook_resid_pre"][p:][None].expand(len(by_layer[x]), -1, -1)
                    resid = new if resid is None else torch.cat([resid, new])
                assert resid is not None  # the first layer is the first row's
                past = None
                if p > 0:
                    kv = [corrupt[f"blocks.{x}.attn.{h}"][:p] for h in ("hook_k", "hook_v")]
                    past = PrefixKV(*(t[None].expand(resid.shape[0], *t.shape) for t in kv))
                resid = run_block(model.blocks[x], resid, past)
                work += resid.shape[0] * (n - p)
        assert resid is not None  # a chunk has a row, so its first layer adds it
        out[chunk] = ld(resid).cpu().numpy()
        forwards += 1
    return out, forwards, work


def make_patch_rows_hook(source: torch.Tensor, rows, positions):
    """Writes source[positions[i]] ([pos, ...], one run's activation) into row rows[i] at positions[i]."""
    r = torch.as_tensor(list(rows), dtype=torch.long, device=source.device)
    p = torch.as_tensor(list(positions), dtype=torch.long, device=source.device)

    def patch_rows_hook(act: torch.Tensor, hook=None) -> torch.Tensor:
        act = act.clone()
        act[r, p] = source[p].to(act.dtype)
        return act

    return patch_rows_hook


def whole_prompt_patching(model, corrupt_ids, cells, clean: dict, corrupt: dict, hook_of: Callable[[int], str],
                          ld: Callable[[torch.Tensor], torch.Tensor], batch_rows: int) -> tuple[np.ndarray, int, int]:
    """Layer-major chunks of whole-prompt rows, each from its first patched layer (shortformer models: from the
    embedding) -> (LDs [cells], forwards, work)."""
    n, n_layers = len(corrupt_ids), model.cfg.n_layers
    out = np.empty(len(cells))
    forwards = work = 0
    for lo in range(0, len(cells), batch_rows):
        chunk = cells[lo:lo + batch_rows]
        start = min(x for x, _ in chunk)
        by_layer: dict[int, tuple[list[int], list[int]]] = {}
        for row, (x, p) in enumerate(chunk):
            by_layer.setdefault(x, ([], []))[0].append(row)
            by_layer[x][1].append(p)
        hooks = [(hook_of(x), make_patch_rows_hook(clean[hook_of(x)], rs, ps)) for x, (rs, ps) in by_layer.items()]
        with model.hooks(fwd_hooks=hooks):
            if model.cfg.positional_embedding_type == "shortformer":  # blocks re-add position embeddings: no skip
                start = 0
                toks = torch.tensor([list(corrupt_ids)] * len(chunk), device=model.cfg.device)
                final = model(toks, stop_at_layer=n_layers, attention_mask=torch.ones_like(toks))
            else:
                resid = corrupt[f"blocks.{start}.hook_resid_pre"][None].repeat(len(chunk), 1, 1)
                final = model(resid, start_at_layer=start, stop_at_layer=n_layers)
        out[lo:lo + len(chunk)] = ld(final).cpu().numpy()
        forwards += 1
        work += len(chunk) * n * (n_layers - start)
    return out, forwards, work
