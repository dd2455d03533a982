"""Next-token sampling: temperature, top-k, top-p (nucleus), seeded draws, and the views built on them.

Order of operations (the same as Hugging Face's logits processors): divide the logits by the temperature,
keep the top-k, keep the smallest set of tokens whose probability reaches top-p, renormalise, draw.
Temperature 0 means greedy (argmax of the raw logits, no randomness).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from app.engine.tokens import token_text


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.0  # 0 = greedy
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1 = off
    seed: int = 0

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


def keep_mask(logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """[vocab] bool: which tokens survive top-k then top-p at this temperature (always at least one)."""
    logits = logits.float()
    keep = torch.ones_like(logits, dtype=torch.bool)
    if top_k and 0 < top_k < logits.shape[-1]:
        kth = logits.topk(top_k).values[-1]
        keep &= logits >= kth
    if top_p < 1.0:
        t = max(temperature, 1e-6)
        scaled = torch.where(keep, logits / t, torch.full_like(logits, -math.inf))
        probs = scaled.softmax(-1)
        sp, si = probs.sort(descending=True)
        before = sp.cumsum(-1) - sp  # probability mass strictly above each token
        keep_sorted = before < top_p
        keep_sorted[0] = True
        nucleus = torch.zeros_like(keep)
        nucleus[si[keep_sorted]] = True
        keep &= nucleus
    return keep


def filtered_probs(logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """[vocab] probabilities after temperature, top-k and top-p, renormalised over the survivors."""
    logits = logits.float()
    if temperature <= 0.0:
        out = torch.zeros_like(logits)
        out[logits.argmax()] = 1.0
        return out
    keep = keep_mask(logits, temperature, top_k, top_p)
    scaled = torch.where(keep, logits / temperature, torch.full_like(logits, -math.inf))
    return scaled.softmax(-1)


def filtered_probs_rows(logits: torch.Tensor, temperature: float, top_p: float = 1.0) -> torch.Tensor:
    """[rows, vocab] probabilities after temperature and top-p (no top-k), all rows at once; row b equals
    filtered_probs(logits[b], temperature, 0, top_p). temperature > 0."""
    scaled = logits.float() / temperature
    probs = scaled.softmax(-1)
    if top_p < 1.0:
        sp, si = probs.sort(-1, descending=True)
        keep_sorted = (sp.cumsum(-1) - sp) < top_p
        keep_sorted[:, 0] = True
        keep = torch.zeros_like(keep_sorted).scatter(-1, si, keep_sorted)
        scaled = torch.where(keep, scaled, torch.full_like(scaled, -math.inf))
        probs = scaled.softmax(-1)
    return probs


def entropy_bits(probs: torch.Tensor) -> float:
    """Shannon entropy in bits (0 log 0 = 0)."""
    p = probs.double()
    nz = p > 0
    return float(-(p[nz] * p[nz].log2()).sum())


def make_generator(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(int(seed))
    return g


def sample_next(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None) -> int:
    """One token id from [vocab] logits: argmax when greedy, else a seeded draw from the filtered distribution."""
    if params.greedy:
        return int(logits.argmax())
    probs = filtered_probs(logits, params.temperature, params.top_k, params.top_p)
    return int(torch.multinomial(probs, 1, generator=generator))


@dataclass(frozen=True)
class TemperatureView:
    temperature: float
    entropy_bits: float
    probs: tuple[float, ...]  # full softmax at this temperature, for the tokens listed
    kept: tuple[bool, ...]  # survives top-k / top-p
    renormalised: tuple[float, ...]  # after the cut (0 for the cut tokens)
    n_kept: int  # over the whole vocabulary
    entropy_kept_bits: float


def temperature_views(logits: torch.Tensor, temperatures, token_ids, top_k: int = 0, top_p: float = 1.0) -> list[TemperatureView]:
    """Re-softmax the same logits at several temperatures; for the listed tokens, their probability, whether
    they survive the top-k / top-p cut, and the renormalised probability after it."""
    logits = logits.float()
    idx = torch.as_tensor(list(token_ids), dtype=torch.long)
    out = []
    for t in temperatures:
        t = float(t)
        full = filtered_probs(logits, t) if t > 0 else filtered_probs(logits, 0.0)
        keep = keep_mask(logits, t, top_k, top_p) if t > 0 else full > 0
        cut = filtered_probs(logits, t, top_k, top_p) if t > 0 else full
        out.append(TemperatureView(
            temperature=t, entropy_bits=entropy_bits(full),
            probs=tuple(float(x) for x in full[idx]), kept=tuple(bool(x) for x in keep[idx]),
            renormalised=tuple(float(x) for x in cut[idx]), n_kept=int(keep.sum()),
            entropy_kept_bits=entropy_bits(cut),
        ))
    return out


@dataclass(frozen=True)
class ShiftRow:
    token_id: int
    token: str
    p_a: float
    p_b: float
    rank_a: int  # 1-based rank in distribution A
    rank_b: int

    @property
    def delta(self) -> float:
        return self.p_b - self.p_a


def distribution_shift(probs_a: torch.Tensor, probs_b: torch.Tensor, tokenizer, top_n: int = 10) -> list[ShiftRow]:
    """Tokens in the top-n of either distribution, with both probabilities and both ranks (1 = top)."""
    probs_a, probs_b = probs_a.double(), probs_b.double()
    ids = []
    for p in (probs_a, probs_b):
        for i in p.topk(top_n).indices.tolist():
            if i not in ids:
                ids.append(i)
    rank_a = _ranks(probs_a, ids)
    rank_b = _ranks(probs_b, ids)
    rows = [ShiftRow(i, token_text(tokenizer, i), float(probs_a[i]), float(probs_b[i]), rank_a[i], rank_b[i]) for i in ids]
    rows.sort(key=lambda r: -max(r.p_a, r.p_b))
    return rows


def _ranks(probs: torch.Tensor, ids) -> dict[int, int]:
    """1-based rank of each id (number of tokens with strictly higher probability, plus one)."""
    return {i: int((probs > probs[i]).sum()) + 1 for i in ids}
