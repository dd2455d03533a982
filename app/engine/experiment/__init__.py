"""The steering experiment: does multi-resolution steering (coarse anchor + fine children) beat single-resolution?

Arms (each a per-row steering of batched generation, app/engine/batched.py):
- none; coarse (the anchor alone); fine (the children together); coarse+fine; random (a seeded random
  direction with the norm of the coarse+fine vector, additive only: the control).
- scale "activation": every feature at `strength x` its typical activation (atlas mean-when-firing when present,
  else its mean activation over the concept set's tokens where it fires); modes "add" (c*W_dec[f]) and "clamp".
- scale "norm": each arm's additive direction rescaled to the norm of the coarse arm at that strength, so a
  combined arm cannot win by pushing harder (random included).

Scores of every generation, read back WITHOUT steering (one plain forward over prompt + generated tokens):
- concept: the zero-shot measure (zeroshot.py: per generated token, how many nats likelier it is after concept
  examples than after the best contrast preface, one of them texts pushed along random directions (pushes.py),
  clipped to [0, 4], averaged), or with measure="probe" the probe below;
- probe: a logistic-regression probe (L2, C=1, standardised features; concept vs contrast discovery prompts,
  residual mean-pooled over tokens, sinks excluded) at a layer other than the SAE's hook, applied to the mean
  residual of the generated tokens -> probability of "concept" in [0, 1];
- sae: fraction of generated tokens on which any of the concept's selective SAE features fires (shown apart);
- words: 1 when any word of an optional list occurs in the generated text (case-insensitive, whole words);
- logprob: mean log-probability per generated token under the unsteered model (nats); fluency ratio of a
  condition = exp(logprob - logprob of no steering) (1 = as fluent as unsteered; 0.5 = twice the perplexity);
- distinct2: distinct token bigrams / bigrams of the generation.
Intervals: percentile bootstrap over prompts (seeds averaged within a prompt), one resampling shared by every
condition so paired differences are consistent.
"""
from __future__ import annotations

from app.engine.experiment.arms import (
           ARMS,
           COMPARED,
           CONCEPT_MAX_TOKENS,
           Condition,
           ExperimentConfig,
           aliases,
           conditions_for,
)
from app.engine.experiment.cli import format_report, main
from app.engine.experiment.probe import Probe, fit_logistic, probe_layer_for, train_probe
from app.engine.experiment.reads import read_back
from app.engine.experiment.runner import run_experiment
from app.engine.experiment.scoring import aggregate, control_check, verdict_from_records
from app.engine.experiment.stats import bootstrap_ci, bootstrap_indices, distinct_2, fluency_at, json_safe, word_hit

__all__ = ["ARMS", "COMPARED", "CONCEPT_MAX_TOKENS", "Condition", "ExperimentConfig", "aliases", "conditions_for",
           "format_report", "main", "Probe", "fit_logistic", "probe_layer_for", "train_probe", "read_back",
           "run_experiment", "aggregate", "control_check", "verdict_from_records", "bootstrap_ci", "bootstrap_indices",
           "distinct_2", "fluency_at", "json_safe", "word_hit"]
