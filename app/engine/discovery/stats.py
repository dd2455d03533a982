"""What discovery collects and derives: sparse per-prompt statistics, dense feature statistics, table rows."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

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
