"""Steering with SAE features at the profile's hook point, through hook context managers only.

Two modes, per feature f of SAE s, at every steered position:
- additive: x <- x + c * W_dec[f]           (c in units of the feature's activation: what the SAE would add
                                              if the feature fired with activation c)
- clamp:    x <- x - a_f(x) * W_dec[f] + v * W_dec[f]
            with a_f(x) the SAE's own encoder activation at that position: the feature's activation becomes v
            in the SAE's reconstruction while the reconstruction error x - x_hat is kept. v = 0 ablates.

Several features at once: every clamp reads a_f from the unsteered x at that position; all deltas are summed.
Positions: every prompt and generated position except position 0 (the attention sink: SmolLM2 has no BOS and
position 0's residual norm is ~100x the median; editing it breaks the model) and, when the profile gives a
sink norm, positions whose residual norm exceeds it. Optionally only the positions that predict generated
tokens (the last prompt position onward).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

import torch

from app.engine import generation
from app.engine.analysis import logit_direction
from app.engine.generation import Generation, GenerationRun, GenToken, PositionState, next_token_logits
from app.engine.sampling import SamplingParams
from app.engine.tokens import token_text

Mode = Literal["add", "clamp"]


@dataclass(frozen=True)
class SteerFeature:
    sae: str  # "coarse" | "fine"
    index: int
    mode: Mode = "add"
    value: float = 0.0  # c for "add", v for "clamp"


@dataclass(frozen=True)
class SteerOptions:
    generated_only: bool = False  # only positions >= prompt_len - 1 (those that predict generated tokens)
    skip_first: bool = True  # leave position 0 (attention sink) alone
    sink_norm: float | None = None  # leave positions with a larger residual norm alone


def steered_positions(start: int, resid: torch.Tensor, prompt_len: int, opts: SteerOptions) -> torch.Tensor:
    """[pos] bool for a forward pass covering absolute positions start .. start + pos - 1 (batch 0's norms)."""
    n = resid.shape[1]
    pos = torch.arange(start, start + n, device=resid.device)
    m = torch.ones(n, dtype=torch.bool, device=resid.device)
    if opts.skip_first:
        m &= pos != 0
    if opts.generated_only:
        m &= pos >= max(prompt_len - 1, 0)
    if opts.sink_norm is not None:
        m &= resid[0].float().norm(dim=-1) <= opts.sink_norm
    return m


def steering_delta(saes: dict, features, x: torch.Tensor) -> torch.Tensor:
    """The edit to add to x [n, d] (rows are positions): additive c*W_dec[f] plus clamp (v - a_f(x))*W_dec[f]."""
    delta = torch.zeros_like(x, dtype=torch.float32)
    by_sae: dict[str, list[SteerFeature]] = {}
    for f in features:
        by_sae.setdefault(f.sae, []).append(f)
    for name, feats in by_sae.items():
        sae = saes[name]
        W = sae.W_dec.float()
        clamps = [f for f in feats if f.mode == "clamp"]
        for f in feats:
            if f.mode == "add":
                delta += float(f.value) * W[f.index].to(x.device)
        if clamps:
            acts = sae.encode(x.to(sae.W_dec.dtype)).float()  # [n, F], the SAE's own encoder
            idx = torch.tensor([f.index for f in clamps], device=x.device)
            v = torch.tensor([float(f.value) for f in clamps], device=x.device)
            delta += (v - acts[:, idx]) @ W[idx].to(x.device)
    return delta.to(x.dtype)


def make_steering_hook(saes: dict, features, state: PositionState, opts: SteerOptions = SteerOptions(), record: list | None = None):
    """A forward hook for the profile's hook point (resid [batch, pos, d]); `state` gives absolute positions.

    `record`, when given, receives (start, mask, delta) per call (tests and the UI's "where it applied")."""
    features = tuple(features)

    def steering_hook(resid: torch.Tensor, hook=None) -> torch.Tensor:
        mask = steered_positions(state.start, resid, state.prompt_len, opts)
        if not bool(mask.any()) or not features:
            if record is not None:
                record.append((state.start, mask, None))
            return resid
        out = resid.clone()
        for b in range(resid.shape[0]):
            x = resid[b, mask]
            out[b, mask] = x + steering_delta(saes, features, x)
        if record is not None:
            record.append((state.start, mask, (out - resid)[0]))
        return out

    return steering_hook


def steering_hooks(hook_name: str, saes: dict, features, state: PositionState, opts: SteerOptions = SteerOptions()) -> list:
    """fwd_hooks for `with model.hooks(fwd_hooks=...)` (empty when there is nothing to steer)."""
    features = [f for f in features]
    if not features:
        return []
    return [(hook_name, make_steering_hook(saes, features, state, opts))]


def steered_generate(model, saes: dict, hook_name: str, prompt_ids, features, params: SamplingParams, max_new_tokens: int,
                     stop_ids=(), opts: SteerOptions = SteerOptions(), cancel=None, run: GenerationRun | None = None,
                     prefer_fast: bool = True, on_token: Callable[[int, GenToken], None] | None = None) -> Generation:
    """generate() with the steering hook attached for the whole run (prompt and every decode step);
    on_token(i, token) is called as each token is produced (streaming)."""
    run = run if run is not None else GenerationRun()
    state = PositionState()
    hooks = steering_hooks(hook_name, saes, features, state, opts)
    toks = []
    with model.hooks(fwd_hooks=hooks):
        # generation.iter_generate looked up per call (a test paces it to meet a running stream)
        for i, t in enumerate(generation.iter_generate(model, prompt_ids, max_new_tokens, params, stop_ids, cancel, state, run, prefer_fast)):
            toks.append(t)
            if on_token is not None:
                on_token(i, t)
    text = model.tokenizer.decode([t.id for t in toks])
    return Generation(tuple(int(i) for i in prompt_ids), tuple(toks), text, run.finish_reason, run.seconds, run.decoder)


def divergence(a_ids, b_ids) -> tuple[list[bool], int | None]:
    """Per generated position: do two runs' tokens differ (or has one run ended)? And the first such position."""
    n = max(len(a_ids), len(b_ids))
    diverged = [i >= len(a_ids) or i >= len(b_ids) or a_ids[i] != b_ids[i] for i in range(n)]
    return diverged, next((i for i, d in enumerate(diverged) if d), None)


def most_moved_tokens(probs, k: int) -> tuple[list[int], list[float]]:
    """The k tokens whose probability moved most across a sweep (one [vocab] tensor per strength): ids, max - min."""
    p = torch.stack([q.float() for q in probs])
    spread = p.max(0).values - p.min(0).values
    top = spread.topk(min(k, spread.shape[-1]))
    return [int(i) for i in top.indices], [float(v) for v in top.values]


SLIDER_TIMES = 12.0  # a feature's strength slider spans +-12x its typical activation
LINK_TIMES = 6.0  # a "steer with this feature" link opens at 6x (half the slider): enough to move the output


def slider_span(typical: float, limit: float) -> float:
    """Half-width of a feature's strength slider: SLIDER_TIMES x its typical activation, capped at the strength limit."""
    return min(SLIDER_TIMES * typical, limit)


def link_strength(typical: float, limit: float) -> float:
    """The strength a "steer" link opens Generate with: LINK_TIMES x the typical activation, inside the slider (so
    inside the limit), rounded to 2 decimals. The one rule for every link (feature card, feature page, attribution)."""
    return round(min(LINK_TIMES * typical, slider_span(typical, limit)), 2)


def typical_activation(atlas_mean: float | None, prompt_max: float | None) -> tuple[float, str] | None:
    """(scale, where it came from): the feature's mean activation when firing on the atlas corpus, else its max on
    the prompt; None when neither is known (or positive)."""
    if atlas_mean is not None and atlas_mean > 0:
        return float(atlas_mean), "its mean activation when firing on the atlas corpus"
    if prompt_max is not None and prompt_max > 0:
        return float(prompt_max), "its max activation on the prompt (no atlas)"
    return None


def steered_next_token_logits(model, saes: dict, hook_name: str, prompt_ids, features, opts: SteerOptions = SteerOptions()) -> torch.Tensor:
    """Logits at the end of the prompt under steering (the same decoder generation uses)."""
    state = PositionState()
    with model.hooks(fwd_hooks=steering_hooks(hook_name, saes, features, state, opts)):
        return next_token_logits(model, prompt_ids, state)


@dataclass(frozen=True)
class FeatureScale:
    """How big a feature's activations are, for the slider's default range."""

    max_on_prompt: float  # max activation over the prompt's steerable positions
    typical_max: float  # the slider's scale
    source: str  # where typical_max came from
    promoted: tuple[tuple[int, str, float], ...]  # tokens W_dec[f] @ W_U raises most (id, token, logit)


def feature_scale(model, saes: dict, hook_name: str, sae_name: str, index: int, prompt_ids, opts: SteerOptions = SteerOptions(),
                  promoted_top: int = 5, atlas_mean: float | None = None) -> FeatureScale:
    """The slider's scale: the feature's mean activation when firing on the atlas (atlas_mean, when known), else its
    max activation on this prompt; when it does not fire there either, the median over features of their max
    activation on the prompt (the scale SAE activations have at this hook)."""
    sae = saes[sae_name]
    layer = int(hook_name.split(".")[1])
    toks = torch.tensor([list(prompt_ids)], device=model.cfg.device)
    with torch.inference_mode():
        _, cache = model.run_with_cache(toks, names_filter=hook_name, stop_at_layer=layer + 1)
        resid = cache[hook_name]
        mask = steered_positions(0, resid, len(prompt_ids), SteerOptions(skip_first=opts.skip_first, sink_norm=opts.sink_norm))
        x = resid[0][mask].to(sae.W_dec.dtype)
        acts = sae.encode(x).float() if x.shape[0] else torch.zeros(1, sae.W_dec.shape[0])
        mx = float(acts[:, index].max()) if acts.numel() else 0.0
        per_feature = acts.max(0).values
        fired = per_feature[per_feature > 0]
        if atlas_mean is not None and atlas_mean > 0:
            typical, source = float(atlas_mean), "its mean activation when firing on the atlas corpus"
        elif mx > 0:
            typical, source = mx, "this feature's max activation on the prompt"
        elif fired.numel():
            typical, source = float(fired.median()), "median max activation of the features that fire on the prompt (this one does not)"
        else:
            typical, source = 1.0, "default (no feature fires on the prompt)"
        pv, pi = logit_direction(model, sae, index).topk(promoted_top)
    tok = model.tokenizer
    return FeatureScale(mx, typical, source, tuple((int(i), token_text(tok, i), float(v)) for v, i in zip(pv, pi)))
