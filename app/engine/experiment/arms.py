"""The experiment's arms: its config, its conditions and the steering each condition applies."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from app.engine.batched import RowSteer
from app.engine.steering import SteerFeature

ARMS = ("none", "coarse", "fine", "coarse+fine", "random")
COMPARED = ("coarse", "fine", "coarse+fine")  # the arms the verdict ranks
CONCEPT_MAX_TOKENS = 64


@dataclass(frozen=True)
class ExperimentConfig:
    anchor: int  # coarse feature index
    children: tuple[int, ...]  # fine feature indices
    eval_prompts: tuple[str, ...]
    concept_prompts: tuple[str, ...]
    contrast_prompts: tuple[str, ...]
    strengths: tuple[float, ...] = (2.0, 4.0, 8.0)  # multiples of each feature's typical activation
    modes: tuple[str, ...] = ("add",)  # "add" and/or "clamp" for the activation-scale sweep
    matched_norm: bool = True  # also sweep every arm at the coarse arm's vector norm
    max_new_tokens: int = 32
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    n_seeds: int = 1  # sampled generations per prompt and condition (1 when greedy)
    seed: int = 0
    words: tuple[str, ...] = ()
    probe_layer: int | None = None  # default: probe_layer_for(n_layers, hook layer)
    chat: bool = False
    n_boot: int = 1000
    batch_size: int = 32
    sink_norm: float | None = None
    measure: str = "zeroshot"  # the concept score: "zeroshot" (app/engine/experiment/zeroshot.py) or "probe"
    preface_k: int = 6  # prompts of each set listed in the zero-shot prefaces
    n_validation: int = 40  # held-out texts per side for the measure's AUC (when no validation sets are given)
    validation_concept: tuple[str, ...] = ()  # held-out concept texts for the AUC (default: set prompts not in the preface)
    validation_contrast: tuple[str, ...] = ()
    concept_name: str = "concept"  # how the result names its sets (a shipped name or "pasted, sha:...")
    contrast_name: str = "contrast"
    # the zero-shot contrast preface's texts when not the contrast set: e.g. several other topics, so that pushing
    # the text off its topic in any direction does not read as the concept (default: contrast_prompts)
    measure_contrast: tuple[str, ...] = ()
    measure_contrast_name: str = ""
    # contrast prompts pushed along random directions for the zero-shot measure's "pushed" preface, and as many again
    # to check that pushing does not raise the measure (app/engine/experiment/pushes.py); 0: no pushed preface
    measure_pushed: int = 16


# fields that change only how generations are scored, not the generations: a re-run that changes them reuses the
# checkpointed generations
SCORING_ONLY = ("words", "probe_layer", "n_boot", "measure", "preface_k", "n_validation", "validation_concept",
                "validation_contrast", "concept_name", "contrast_name", "measure_contrast", "measure_contrast_name",
                "measure_pushed")


@dataclass(frozen=True)
class Condition:
    arm: str
    mode: str  # "add" | "clamp" | "-" (none)
    scale: str  # "activation" | "norm" | "-"
    strength: float

    @property
    def key(self) -> str:
        return "none" if self.arm == "none" else f"{self.arm}|{self.mode}|{self.scale}|{self.strength:g}"


def conditions_for(cfg: ExperimentConfig) -> list[Condition]:
    conds = [Condition("none", "-", "-", 0.0)]
    for mode in cfg.modes:
        for s in cfg.strengths:
            for arm in ARMS[1:]:
                if arm == "random" and mode == "clamp":
                    continue  # a random direction has no SAE activation to clamp
                conds.append(Condition(arm, mode, "activation", float(s)))
    if cfg.matched_norm:
        for s in cfg.strengths:
            for arm in ARMS[1:]:
                conds.append(Condition(arm, "add", "norm", float(s)))
    return conds


def aliases(conds: Sequence[Condition]) -> dict[str, str]:
    """Conditions whose steering is identical to another's (the coarse arm at matched norm is the coarse arm at
    that strength: the norm is matched to it): key -> the key generated instead."""
    keys = {c.key for c in conds}
    out = {}
    for c in conds:
        if c.scale == "norm" and c.arm == "coarse":
            src = Condition("coarse", "add", "activation", c.strength).key
            if src in keys:
                out[c.key] = src
    return out


def random_direction(d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(int(seed) + 7919)
    v = torch.randn(d, generator=g, dtype=torch.float32)
    return v / v.norm()


def steer_for(cond: Condition, saes: dict, anchor: int, children: Sequence[int], typical: dict, rand_dir: torch.Tensor) -> tuple[RowSteer, float]:
    """(RowSteer, norm of its additive vector) for a condition; typical = {("coarse"|"fine", idx): activation}."""
    if cond.arm == "none":
        return RowSteer(), 0.0
    Wc, Wf = saes["coarse"].W_dec.float(), saes["fine"].W_dec.float()

    def vec(arm: str, s: float) -> torch.Tensor:
        v = torch.zeros(Wc.shape[1])
        if arm in ("coarse", "coarse+fine"):
            v = v + s * typical[("coarse", anchor)] * Wc[anchor]
        if arm in ("fine", "coarse+fine"):
            for j in children:
                v = v + s * typical[("fine", j)] * Wf[j]
        return v

    s = cond.strength
    if cond.scale == "norm":
        target = float(vec("coarse", s).norm())
        d = rand_dir if cond.arm == "random" else vec(cond.arm, 1.0)
        v = d / d.norm().clamp_min(1e-12) * target
        return RowSteer(v), target
    if cond.mode == "clamp":
        feats = []
        if cond.arm in ("coarse", "coarse+fine"):
            feats.append(SteerFeature("coarse", anchor, "clamp", s * typical[("coarse", anchor)]))
        if cond.arm in ("fine", "coarse+fine"):
            feats += [SteerFeature("fine", j, "clamp", s * typical[("fine", j)]) for j in children]
        return RowSteer(None, tuple(feats)), float("nan")
    if cond.arm == "random":
        v = rand_dir * float(vec("coarse+fine", s).norm())
    else:
        v = vec(cond.arm, s)
    return RowSteer(v), float(v.norm())
