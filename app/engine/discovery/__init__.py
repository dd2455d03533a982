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

from app.engine.discovery.collect import collect_stats, stats_from_resid
from app.engine.discovery.forward import (
           PACK_ROW_TOKENS,
           PACK_ROWS_PER_BATCH,
           pack_rows,
           packed_resid_at_hook,
           resid_at_hook,
)
from app.engine.discovery.prompts import encode_prompt_set, parse_prompt_lines, prompt_set_hash
from app.engine.discovery.selectivity import (
           DiscoveryParams,
           feature_stats,
           row_dict,
           summarize,
           top_features,
           top_prompts,
)
from app.engine.discovery.stats import AGGREGATES, CollectedStats, FeatureRow, FeatureStats, SparsePromptStats

__all__ = ["collect_stats", "stats_from_resid", "PACK_ROW_TOKENS", "PACK_ROWS_PER_BATCH", "pack_rows",
           "packed_resid_at_hook", "resid_at_hook", "encode_prompt_set", "parse_prompt_lines", "prompt_set_hash",
           "DiscoveryParams", "feature_stats", "row_dict", "summarize", "top_features", "top_prompts", "AGGREGATES",
           "CollectedStats", "FeatureRow", "FeatureStats", "SparsePromptStats"]
