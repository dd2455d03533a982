"""Batched steered generation: many prompts at once, each row with its own steering, on the fast decoder's weights.

Rows are left-padded to a common length; an attention mask hides the pads, rotary positions count from each
row's first real token, and one KV cache [layers, rows, kv_heads, positions, d_head] serves the whole batch.
Each row carries its own steering (`RowSteer`: an additive vector, e.g. sum of c*W_dec[f] or any direction,
plus SAE clamps), applied by one hook at the profile's hook point through `model.hooks(...)` on the same
positions the single-prompt steering edits (never pads, position 0 or sink-norm positions).

Greedy rows equal `steering.steered_generate` token for token (tests); sampled rows draw from their own generator
seeded like `generation.generate`. Without the fast path (or with hooks it would skip): one row at a time.
"""
from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from app.engine.decoder_common import _fast_weights, rope
from app.engine.generation import (
    Generation,
    GenToken,
    PositionState,
    _rms,
    fast_path_supported,
    generate,
    hooks_outside_fast_path,
)
from app.engine.sampling import SamplingParams, make_generator, sample_next
from app.engine.steering import SteerFeature, SteerOptions
from app.engine.tokens import token_text


@dataclass(frozen=True)
class RowSteer:
    """One row's steering: an additive vector [d] (None = none) and SAE clamps (SteerFeature mode "clamp")."""

    add: torch.Tensor | None = None
    clamps: tuple[SteerFeature, ...] = ()

    @property
    def empty(self) -> bool:
        return self.add is None and not self.clamps


def additive_vector(saes: dict, features: Sequence[SteerFeature]) -> torch.Tensor | None:
    """sum of c*W_dec[f] over the additive features [d] float32 (summed in steering_delta's order)."""
    by_sae: dict[str, list[SteerFeature]] = {}
    for f in features:
        by_sae.setdefault(f.sae, []).append(f)
    vec = None
    for name, feats in by_sae.items():
        W = saes[name].W_dec.float()
        for f in feats:
            if f.mode == "add":
                term = float(f.value) * W[f.index]
                vec = term.clone() if vec is None else vec + term
    return vec


def row_steer(saes: dict, features: Sequence[SteerFeature], extra: torch.Tensor | None = None) -> RowSteer:
    """RowSteer for a feature list (additive ones summed into one vector) plus an optional extra direction [d]."""
    add = additive_vector(saes, features)
    if extra is not None:
        add = extra.float().clone() if add is None else add + extra.float()
    return RowSteer(add, tuple(f for f in features if f.mode == "clamp"))


@dataclass
class BatchState(PositionState):
    """PositionState for a batch: `start` is the padded position of the pass in flight; pads[b] left pads of row b."""

    pads: torch.Tensor = field(default_factory=lambda: torch.zeros(1, dtype=torch.int64))
    prompt_lens: torch.Tensor = field(default_factory=lambda: torch.zeros(1, dtype=torch.int64))


def batch_steered_mask(resid: torch.Tensor, state: BatchState, opts: SteerOptions) -> torch.Tensor:
    """[B, n] bool: the positions steering edits (row-relative position >= 0, not the sink, within sink_norm)."""
    B, n = resid.shape[:2]
    pads = state.pads.to(resid.device)
    pos = state.start + torch.arange(n, device=resid.device)[None, :] - pads[:, None]  # row-relative positions
    m = pos >= 0
    if opts.skip_first:
        m &= pos != 0
    if opts.generated_only:
        m &= pos >= (state.prompt_lens.to(resid.device)[:, None] - 1).clamp_min(0)
    if opts.sink_norm is not None:
        m &= resid.float().norm(dim=-1) <= opts.sink_norm
    return m


def make_batched_steering_hook(saes: dict, rows: Sequence[RowSteer], state: BatchState, opts: SteerOptions = SteerOptions()):
    """A forward hook for resid [B, pos, d] applying row b's RowSteer on its steerable positions."""
    rows = list(rows)
    any_add = any(r.add is not None for r in rows)
    clamp_saes = sorted({f.sae for r in rows for f in r.clamps})

    def batched_steering_hook(resid: torch.Tensor, hook=None) -> torch.Tensor:
        mask = batch_steered_mask(resid, state, opts)
        if not bool(mask.any()):
            return resid
        return torch.where(mask[..., None], resid + rows_delta(saes, rows, resid, any_add, clamp_saes).to(resid.dtype), resid)

    return batched_steering_hook


def rows_delta(saes: dict, rows: Sequence[RowSteer], resid: torch.Tensor, any_add: bool, clamp_saes) -> torch.Tensor:
    """[B, n, d] float32: row b's additive vector plus its clamps' (v - a_f(x)) W_dec[f] at every position."""
    B, n, d = resid.shape
    delta = torch.zeros(B, n, d, dtype=torch.float32, device=resid.device)
    if any_add:
        A = torch.stack([r.add.to(resid.device) if r.add is not None else torch.zeros(d, device=resid.device) for r in rows])
        delta += A[:, None, :]
    for name in clamp_saes:
        sae = saes[name]
        W = sae.W_dec.float()
        acts = sae.encode(resid.reshape(B * n, d).to(sae.W_dec.dtype)).float().view(B, n, -1)
        for b, r in enumerate(rows):
            cl = [f for f in r.clamps if f.sae == name]
            if cl:
                idx = torch.tensor([f.index for f in cl], device=resid.device)
                v = torch.tensor([float(f.value) for f in cl], device=resid.device)
                delta[b] += (v - acts[b][:, idx]) @ W[idx].to(resid.device)
    return delta


class BatchedFastDecoder:
    """KV-cached decode of B left-padded rows over a Llama-style model's weights (FastLlamaDecoder, batched)."""

    name = "fast-batched"

    def __init__(self, model, batch: int, max_len: int, state: BatchState):
        cfg = model.cfg
        self.model, self.cfg, self.state = model, cfg, state
        self.w = _fast_weights(model)
        self.H, self.dh = cfg.n_heads, cfg.d_head
        self.K = cfg.n_key_value_heads or cfg.n_heads
        dev, dt = model.W_E.device, model.W_E.dtype
        self.k = torch.zeros(cfg.n_layers, batch, self.K, max_len, self.dh, device=dev, dtype=dt)
        self.v = torch.zeros_like(self.k)
        attn0 = model.blocks[0].attn
        self.cos, self.sin = attn0.rotary_cos, attn0.rotary_sin
        if self.cos.shape[0] < max_len:
            raise ValueError(f"rotary table has {self.cos.shape[0]} positions; {max_len} needed")
        self.scale = 1.0 / attn0.attn_scale
        self.valid = torch.zeros(batch, max_len, dtype=torch.bool, device=dev)  # key positions that are real tokens
        self.B, self.max_len, self.pos = batch, max_len, 0

    _rope = staticmethod(rope)

    def prefill(self, rows: Sequence[Sequence[int]], pad_id: int) -> torch.Tensor:
        """Run the left-padded prompts; logits [B, vocab] at each row's last prompt token."""
        T = max(len(r) for r in rows)
        dev = self.k.device
        toks = torch.full((self.B, T), int(pad_id), dtype=torch.int64)
        pads = torch.tensor([T - len(r) for r in rows], dtype=torch.int64)
        for b, r in enumerate(rows):
            toks[b, T - len(r):] = torch.as_tensor(list(r), dtype=torch.int64)
        self.state.pads = pads
        self.state.prompt_lens = torch.tensor([len(r) for r in rows], dtype=torch.int64)
        ar = torch.arange(T)
        self.valid[:, :T] = (ar[None, :] >= pads[:, None]).to(dev)
        # causal and real keys only; a pad query sees itself (an all-masked row would give NaN)
        mask = torch.ones(T, T, dtype=torch.bool).tril()[None] & self.valid[:, None, :T].cpu()
        mask |= torch.eye(T, dtype=torch.bool)[None]
        positions = (ar[None, :] - pads[:, None]).clamp_min(0)
        return self._forward(toks.to(dev), positions.to(dev), mask[:, None].to(dev))

    def step(self, ids: Sequence[int]) -> torch.Tensor:
        """One new token per row; logits [B, vocab]."""
        dev = self.k.device
        p = self.pos
        if p + 1 > self.max_len:
            raise ValueError(f"KV cache holds {self.max_len} positions; {p + 1} needed")
        self.valid[:, p] = True
        positions = (p - self.state.pads).to(dev)[:, None]
        mask = self.valid[:, None, None, : p + 1]
        return self._forward(torch.as_tensor(list(ids), device=dev)[:, None], positions, mask)

    def _store(self, i: int, k: torch.Tensor, v: torch.Tensor, p0: int, T: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Layer i's new keys/values [B, n, K, dh] into every row at p0..T-1; -> the keys, values to attend to."""
        self.k[i, :, :, p0:T], self.v[i, :, :, p0:T] = k.transpose(1, 2), v.transpose(1, 2)
        return self.k[i, :, :, :T], self.v[i, :, :, :T]

    def _forward(self, toks: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        m = self.model
        B, n = toks.shape
        p0, H, K, dh = self.pos, self.H, self.K, self.dh
        T = p0 + n
        self.state.start = p0
        cos = self.cos[positions][:, :, None, :]  # [B, n, 1, dh]
        sin = self.sin[positions][:, :, None, :]
        x = m.hook_embed(m.embed(toks))
        for i, blk in enumerate(m.blocks):
            x = blk.hook_resid_pre(x)
            h = _rms(x, blk.ln1.w, blk.ln1.eps)
            qkv = torch.addmm(self.w.b_qkv[i], h.reshape(B * n, -1), self.w.qkv[i])
            q = qkv[:, : H * dh].view(B, n, H, dh)
            k = qkv[:, H * dh: (H + K) * dh].view(B, n, K, dh)
            v = qkv[:, (H + K) * dh:].view(B, n, K, dh)
            q = self._rope(q, cos, sin).transpose(1, 2)  # [B, H, n, dh]
            k = self._rope(k, cos, sin)
            kk, vv = self._store(i, k, v, p0, T)
            z = F.scaled_dot_product_attention(q, kk, vv, attn_mask=mask, scale=self.scale, enable_gqa=(H != K))
            z = z.transpose(1, 2).reshape(B * n, H * dh)
            a = blk.attn
            x = blk.hook_resid_mid(x + torch.addmm(a.b_O, z, a.W_O.reshape(H * dh, -1)).view(B, n, -1))
            h = _rms(x, blk.ln2.w, blk.ln2.eps).reshape(B * n, -1)
            mlp = blk.mlp
            post = F.silu(h @ mlp.W_gate) * (h @ mlp.W_in) + mlp.b_in
            x = blk.hook_resid_post(x + torch.addmm(mlp.b_out, post, mlp.W_out).view(B, n, -1))
        self.pos = T
        last = _rms(x[:, -1], m.ln_final.w, m.ln_final.eps)
        return last @ m.W_U + m.b_U


@dataclass(frozen=True)
class BatchRow:
    """One row of a batched run: prompt ids, steering, sampling (seed per row)."""

    prompt_ids: tuple[int, ...]
    steer: RowSteer = RowSteer()
    params: SamplingParams = SamplingParams()


def batched_supported(model) -> bool:
    return fast_path_supported(model) and not hooks_outside_fast_path(model)


def _generate_chunk(model, saes, hook_name, rows: Sequence[BatchRow], max_new_tokens: int, stop: set, opts: SteerOptions,
                    cancel: threading.Event | None) -> list[Generation]:
    t0 = time.perf_counter()
    tok = model.tokenizer
    B = len(rows)
    state = BatchState()
    hook = make_batched_steering_hook(saes, [r.steer for r in rows], state, opts)
    pad_id = getattr(tok, "pad_token_id", None) or 0
    T = max(len(r.prompt_ids) for r in rows)
    gens = [None if r.params.greedy else make_generator(r.params.seed) for r in rows]
    out: list[list[GenToken]] = [[] for _ in rows]
    finish = ["length"] * B
    live = [True] * B
    with torch.inference_mode(), model.hooks(fwd_hooks=[(hook_name, hook)] if any(not r.steer.empty for r in rows) else []):
        dec = BatchedFastDecoder(model, B, T + max_new_tokens, state)
        logits = dec.prefill([r.prompt_ids for r in rows], pad_id).float().cpu()
        for step in range(max_new_tokens):
            if cancel is not None and cancel.is_set():
                finish = ["cancelled" if lv else f for lv, f in zip(live, finish)]
                break
            nxt = []
            lse = torch.logsumexp(logits, -1)
            for b in range(B):
                if not live[b]:
                    nxt.append(pad_id)
                    continue
                tid = sample_next(logits[b], rows[b].params, gens[b])
                out[b].append(GenToken(tid, token_text(tok, tid), math.exp(float(logits[b, tid] - lse[b]))))
                nxt.append(tid)
                if tid in stop:
                    live[b], finish[b] = False, "stop"
            if not any(live) or step + 1 == max_new_tokens:
                break
            logits = dec.step(nxt).float().cpu()
    secs = time.perf_counter() - t0
    return [Generation(r.prompt_ids, tuple(o), tok.decode([t.id for t in o]), f, secs, BatchedFastDecoder.name)
            for r, o, f in zip(rows, out, finish)]


def batched_generate(model, saes: dict, hook_name: str, rows: Sequence[BatchRow], max_new_tokens: int, stop_ids=(),
                     opts: SteerOptions = SteerOptions(), batch_size: int = 32, cancel: threading.Event | None = None,
                     progress: Callable[[int, int], None] | None = None, prefer_batched: bool = True) -> list[Generation]:
    """Generate every row (results in row order); batches of similar prompt length on the fast decoder,
    else one row at a time through generation.generate with the same per-row hook.

    progress(rows_done, rows_total) after each batch (may raise to stop). `seconds` of a row is its batch's wall time.
    """
    rows = list(rows)
    stop = set(int(s) for s in stop_ids)
    results: list[Generation | None] = [None] * len(rows)
    if prefer_batched and batched_supported(model):
        order = sorted(range(len(rows)), key=lambda i: len(rows[i].prompt_ids))
        for s in range(0, len(order), batch_size):
            idx = order[s:s + batch_size]
            for i, g in zip(idx, _generate_chunk(model, saes, hook_name, [rows[i] for i in idx], max_new_tokens, stop, opts, cancel)):
                results[i] = g
            if progress is not None:
                progress(min(len(rows), s + batch_size), len(rows))
        return results  # type: ignore[return-value]
    for i, r in enumerate(rows):
        state = BatchState(pads=torch.zeros(1, dtype=torch.int64), prompt_lens=torch.tensor([len(r.prompt_ids)]))
        hooks = [] if r.steer.empty else [(hook_name, make_batched_steering_hook(saes, [r.steer], state, opts))]
        with model.hooks(fwd_hooks=hooks):
            results[i] = generate(model, r.prompt_ids, max_new_tokens, r.params, stop_ids, cancel, state)
        if progress is not None:
            progress(i + 1, len(rows))
    return results  # type: ignore[return-value]
