"""What every fast decoder (app/engine/generation.py, app/engine/decoders/) shares: the option check and the fused
Q/K/V weights. A leaf (no app imports), so the decoders and generation do not import each other."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


def common_flags_ok(cfg) -> bool:
    """Options none of the fast decoders implement (they fall back to transformer-lens's forward)."""
    return (not cfg.use_attn_result and not cfg.use_split_qkv_input and not cfg.use_attn_in
            and not cfg.use_hook_mlp_in and not cfg.parallel_attn_mlp and not cfg.attn_only
            and not getattr(cfg, "use_qk_norm", False) and not getattr(cfg, "load_in_4bit", False)
            and getattr(cfg, "n_devices", 1) == 1 and not getattr(cfg, "use_hook_tokens", False))


@dataclass
class _FastWeights:
    key: tuple
    qkv: list = field(default_factory=list)  # per layer [d, (H + 2K) * dh]
    b_qkv: list = field(default_factory=list)


def _fast_weights(model) -> _FastWeights:
    """Fused Q/K/V per layer, rebuilt only when a weight tensor changed (data_ptr / in-place version)."""
    params = []
    for b in model.blocks:
        a = b.attn
        params += [a.W_Q, a._W_K if hasattr(a, "_W_K") else a.W_K, a._W_V if hasattr(a, "_W_V") else a.W_V,
                   a.b_Q, a._b_K if hasattr(a, "_b_K") else a.b_K, a._b_V if hasattr(a, "_b_V") else a.b_V]
    key = tuple((p.data_ptr(), p._version) for p in params)
    cached = getattr(model, "_asn_fast_weights", None)
    if cached is not None and cached.key == key:
        return cached
    fw = _FastWeights(key)
    with torch.no_grad():
        for i in range(len(model.blocks)):
            W_Q, W_K, W_V, b_Q, b_K, b_V = params[6 * i: 6 * i + 6]
            d = W_Q.shape[1]
            fw.qkv.append(torch.cat([w.permute(1, 0, 2).reshape(d, -1) for w in (W_Q, W_K, W_V)], dim=1).contiguous())
            fw.b_qkv.append(torch.cat([b.reshape(-1) for b in (b_Q, b_K, b_V)]).contiguous())
    model._asn_fast_weights = fw
    return fw


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding in the half-split layout (x * cos + rotate_half(x) * sin)."""
    n = x.shape[-1] // 2
    return x * cos + torch.cat([-x[..., n:], x[..., :n]], dim=-1) * sin


class KVCacheDecoder:
    """The fast decoders' shared state: fused Q/K/V weights, a [layers, kv heads, max_len, d_head] K/V cache and
    the next position; subclasses implement `step(new_ids) -> logits [vocab]` starting with `_begin`."""

    name = "fast"
    extra_hooks: tuple[str, ...] = ()  # top-level hook points the decoder calls besides hook_embed
    _rope = staticmethod(rope)

    def __init__(self, model, max_len: int, position_state=None):
        cfg = model.cfg
        self.model, self.cfg = model, cfg
        self.w = _fast_weights(model)
        self.n_heads, self.d_head = cfg.n_heads, cfg.d_head
        self.n_kv = cfg.n_key_value_heads or cfg.n_heads
        dev, dt = model.W_E.device, model.W_E.dtype
        self.k = torch.zeros(cfg.n_layers, self.n_kv, max_len, self.d_head, device=dev, dtype=dt)
        self.v = torch.zeros_like(self.k)
        self.pos, self.max_len, self.state = 0, max_len, position_state

    def _begin(self, new_ids) -> tuple[int, int, torch.Tensor]:
        """(first position, number of new tokens, their ids [1, n]); the position state moves to the first."""
        p0, n = self.pos, len(new_ids)
        if p0 + n > self.max_len:
            raise ValueError(f"KV cache holds {self.max_len} positions; {p0 + n} needed")
        if self.state is not None:
            self.state.start = p0
        return p0, n, torch.as_tensor([list(new_ids)], device=self.k.device)
