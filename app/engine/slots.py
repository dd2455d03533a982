"""Rows of different lengths in one KV cache, for continuous batching (app/engine/continuous.py): the slot decoder
on the fast Llama-style weights and the per-row steering hook (pure computation)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import torch

from app.engine.batched import BatchedFastDecoder, BatchState, rows_delta


@dataclass
class RowsState(BatchState):
    """The pass in flight: each row's absolute positions [B, n], prompt length, steering and options."""

    positions: torch.Tensor = field(default_factory=lambda: torch.zeros(1, 1, dtype=torch.int64))
    steers: list = field(default_factory=list)
    opts: list = field(default_factory=list)


def rows_mask(resid: torch.Tensor, state: RowsState) -> torch.Tensor:
    """[B, n] bool: the positions each row's steering edits, by its own SteerOptions (steering.steered_positions)."""
    pos = state.positions.to(resid.device)
    first = torch.tensor([o.skip_first for o in state.opts], device=resid.device)[:, None]
    only = torch.tensor([o.generated_only for o in state.opts], device=resid.device)[:, None]
    sink = torch.tensor([math.inf if o.sink_norm is None else o.sink_norm for o in state.opts], device=resid.device)
    m = ~(first & (pos == 0)) & (~only | (pos >= (state.prompt_lens.to(resid.device)[:, None] - 1).clamp_min(0)))
    if bool(torch.isfinite(sink).any()):
        m &= resid.float().norm(dim=-1) <= sink[:, None]
    return m


def make_rows_steering_hook(saes: dict, state: RowsState):
    """A forward hook for resid [B, n, d] applying the rows' steering that `state` holds for the pass in flight."""

    def rows_steering_hook(resid: torch.Tensor, hook=None) -> torch.Tensor:
        rows = state.steers
        if all(r.empty for r in rows):
            return resid
        mask = rows_mask(resid, state) & torch.tensor([not r.empty for r in rows], device=resid.device)[:, None]
        if not bool(mask.any()):
            return resid
        delta = rows_delta(saes, rows, resid, any(r.add is not None for r in rows), sorted({f.sae for r in rows for f in r.clamps}))
        return torch.where(mask[..., None], resid + delta.to(resid.dtype), resid)

    return rows_steering_hook


class SlotDecoder(BatchedFastDecoder):
    """BatchedFastDecoder whose rows each have their own length: live rows hold slots 0..B-1 of the KV cache
    (a row leaving gives its slot to the last one), a new row is prefilled alone into the next slot, and a step
    writes each row's key at its own position, attending under a mask of its real keys."""

    name = "fast"  # the same fast decoder's maths, batched: results equal the single-row decoder's

    def __init__(self, model, state: RowsState, rows: int = 4, length: int = 128):
        super().__init__(model, 0, 0, state)
        self.lens: list[int] = []  # live rows' lengths, slot order
        self._slot: int | None = None  # the slot a prefill fills (None: a step of every live row)
        self._grow(rows, length)

    def _grow(self, rows: int, length: int) -> None:
        k = torch.zeros(self.cfg.n_layers, rows, self.K, length, self.dh, device=self.k.device, dtype=self.k.dtype)
        v = torch.zeros_like(k)
        B, T = len(self.lens), max(self.lens, default=0)
        k[:, :B, :, :T], v[:, :B, :, :T] = self.k[:, :B, :, :T], self.v[:, :B, :, :T]
        self.k, self.v, self.B, self.max_len = k, v, rows, length

    def prefill(self, ids: Sequence[int], need: int) -> torch.Tensor:  # type: ignore[override]
        """A new row's prompt into the next slot (room for `need` positions); logits [vocab] at its last token."""
        if need > self.cos.shape[0]:
            raise ValueError(f"rotary table has {self.cos.shape[0]} positions; {need} needed")
        B, n = len(self.lens), len(ids)
        if B + 1 > self.B or need > self.max_len:
            self._grow(max(self.B, 2 * B, B + 1), max(self.max_len, -(-need // 64) * 64))
        self._slot, self.pos = B, 0
        mask = torch.ones(n, n, dtype=torch.bool, device=self.k.device).tril()[None, None]
        logits = self._forward(torch.as_tensor([list(ids)], device=self.k.device), torch.arange(n, device=self.k.device)[None], mask)
        self.lens.append(n)
        return logits[0]

    def step(self, ids: Sequence[int]) -> torch.Tensor:
        """One new token per live row (slot order); logits [B, vocab]."""
        dev = self.k.device
        lens = torch.tensor(self.lens, device=dev)
        self._slot, self.pos = None, int(lens.max())  # _forward attends to keys 0..pos
        T = self.pos + 1
        mask = (torch.arange(T, device=dev)[None, :] <= lens[:, None])[:, None, None, :]
        out = self._forward(torch.as_tensor(list(ids), device=dev)[:, None], lens[:, None], mask)
        self.lens = [n + 1 for n in self.lens]
        return out

    def _store(self, i, k, v, p0, T):
        if self._slot is not None:  # prefill: one row, positions 0..n-1 of its slot
            s, n = self._slot, k.shape[1]
            self.k[i, s, :, :n], self.v[i, s, :, :n] = k[0].transpose(0, 1), v[0].transpose(0, 1)
            return self.k[i, s:s + 1, :, :n], self.v[i, s:s + 1, :, :n]
        B = len(self.lens)
        rows, pos = torch.arange(B, device=k.device), torch.tensor(self.lens, device=k.device)
        self.k[i][rows, :, pos], self.v[i][rows, :, pos] = k[:, 0], v[:, 0]
        return self.k[i, :B, :, :T], self.v[i, :B, :, :T]

    def remove(self, slot: int) -> None:
        """Free a row's slot: the last live row moves into it."""
        last = len(self.lens) - 1
        if slot != last:
            n = self.lens[last]
            self.k[:, slot, :, :n], self.v[:, slot, :, :n] = self.k[:, last, :, :n], self.v[:, last, :, :n]
            self.lens[slot] = n
        self.lens.pop()
