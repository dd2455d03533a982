"""Which SAE features drive one next-token logit: linear attribution at the profile's hook, checked by ablation.

For the logit L of a target token at prompt position p, with x_t the residual at the hook at position t <= p and
g_t = dL/dx_t (one forward, one backward; only the residual at the hook is a leaf that needs grad):
    attribution(SAE s, feature f) = Σ_t a_f(x_t) · (W_dec[f] · g_t)
and, per SAE, the rest of x_t = Σ_f a_f W_dec[f] + bias + error as their own entries:
    error = Σ_t (x_t - x_hat_t) · g_t,   bias = Σ_t (x_hat_t - Σ_f a_f W_dec[f]) · g_t
so that features + bias + error = Σ_t x_t · g_t over the decomposed positions, for each SAE. Position 0 and
positions whose residual norm exceeds the profile's sink norm are not decomposed (the positions steering leaves
alone); their Σ x_t · g_t is one "sink" entry.

The linear estimate of clamping feature f to 0 (the steering clamp, which keeps the SAE error) is -attribution;
`validate_by_ablation` measures the real logit change for the top entries and the Pearson correlation.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
from dataclasses import dataclass

import numpy as np
import torch

from app.engine.steering import SteerFeature, SteerOptions, steered_next_token_logits, steered_positions
from app.engine.tokens import token_text


@dataclass(frozen=True)
class FeatureAttribution:
    sae: str
    index: int
    attribution: float  # logit units
    positions: tuple[tuple[int, float, float], ...]  # (position, activation, attribution there), largest |attribution| first


@dataclass(frozen=True)
class TermAttribution:
    name: str  # "error" | "bias" | "sink"
    sae: str | None  # None for "sink"
    attribution: float


@dataclass(frozen=True)
class Ablation:
    sae: str
    index: int
    estimate: float  # -attribution: the linear estimate of the logit change when clamped to 0
    actual: float  # logit with the feature clamped to 0 minus the clean logit (same decoder)


@dataclass(frozen=True)
class Attribution:
    token_ids: tuple[int, ...]  # the prompt up to and including `position`
    position: int
    target: int  # token id whose logit is attributed
    logit: float
    prob: float
    top_next: tuple[tuple[int, float], ...]  # the model's top next tokens at `position` (id, prob)
    features: tuple[FeatureAttribution, ...]  # both SAEs, largest |attribution| first
    terms: tuple[TermAttribution, ...]  # per-SAE error and bias, and the sink positions
    total: float  # Σ_t x_t · g_t over every position (the first-order part of the logit at the hook)
    decomposed: tuple[int, ...]  # positions whose features are counted
    ablations: tuple[Ablation, ...] = ()
    correlation: float = float("nan")  # Pearson(estimate, actual) over the ablations
    also: tuple[tuple[int, float], ...] = ()  # (id, prob) at `position` of the tokens asked for with probs_of


def _wide(t: torch.Tensor) -> torch.Tensor:
    """float64 stays float64 (tests), everything else becomes float32."""
    return t if t.dtype == torch.float64 else t.float()


def make_grad_leaf_hook(store: dict, key: str = "x"):
    """Forward hook that swaps the activation for a detached copy that requires grad (kept in store[key]):
    the backward pass stops there, so only dL/d(residual at the hook) is computed."""

    def grad_leaf_hook(act: torch.Tensor, hook=None) -> torch.Tensor:
        leaf = act.detach().clone().requires_grad_(True)
        store[key] = leaf
        return leaf

    return grad_leaf_hook


def logit_gradient(model, hook_name: str, token_ids, target: int | None = None, top: int = 10, probs_of=()):
    """One forward over token_ids (grad recorded), one backward from the last position's target logit.

    Returns (x [pos, d], g [pos, d] = dlogit/dx at the hook, target id, logit, prob, top next (id, prob),
    (id, prob) of each id in probs_of).
    Works inside engine.session() (which runs in inference mode): grad is switched back on locally.
    """
    from app.engine.analysis.core import _final_logits

    store: dict = {}
    with torch.inference_mode(False), torch.enable_grad():
        toks = torch.tensor([list(token_ids)], device=model.cfg.device)
        with model.hooks(fwd_hooks=[(hook_name, make_grad_leaf_hook(store))]):
            final = model(toks, stop_at_layer=model.cfg.n_layers, attention_mask=torch.ones_like(toks))
        logits = _final_logits(model, final[:, -1:])[0, -1]
        probs = _wide(logits.detach()).softmax(-1)
        target = int(probs.argmax()) if target is None else int(target)
        (g,) = torch.autograd.grad(logits[target], store["x"])
    pv, pi = probs.topk(min(top, probs.shape[-1]))
    return (_wide(store["x"].detach()[0]), _wide(g[0]), target, float(logits[target].detach()), float(probs[target]),
            tuple((int(i), float(v)) for v, i in zip(pv.tolist(), pi.tolist())),
            tuple((int(i), float(probs[int(i)])) for i in probs_of))


def attribute(model, saes: dict, hook_name: str, token_ids, position: int | None = None, target: int | None = None,
              top: int = 20, positions_per_feature: int = 5, sink_norm: float | None = None, probs_of=()) -> Attribution:
    """Rank the features of every SAE in `saes` by their attribution to the target logit at `position`
    (default: the last token; target default: the model's top next token there); `probs_of`: token ids whose
    next-token probability there is wanted too (a typed target's spaced twin)."""
    ids = list(token_ids)
    p = len(ids) - 1 if position is None else int(position)
    if not 0 <= p < len(ids):
        raise IndexError(f"position {p} outside 0..{len(ids) - 1}")
    ids = ids[:p + 1]
    x, g, target, logit, prob, top_next, also = logit_gradient(model, hook_name, ids, target, probs_of=probs_of)
    with torch.inference_mode():
        keep = steered_positions(0, x[None], len(ids), SteerOptions(sink_norm=sink_norm)).cpu()
        pos = torch.nonzero(keep).flatten()
        xk, gk = x[keep], g[keep]
        total = float((x * g).sum())
        terms = [TermAttribution("sink", None, float((x[~keep] * g[~keep]).sum()))]
        cands = []
        for name, sae in saes.items():
            W = sae.W_dec.to(xk.dtype)
            a = sae.encode(xk.to(sae.W_dec.dtype)).to(xk.dtype)  # [n, F]
            x_hat = sae.decode(a.to(sae.W_dec.dtype)).to(xk.dtype)
            per = a * (gk @ W.T)  # [n, F] attribution per (position, feature)
            terms.append(TermAttribution("error", name, float(((xk - x_hat) * gk).sum())))
            terms.append(TermAttribution("bias", name, float(((x_hat - a @ W) * gk).sum())))
            tot = per.sum(0)
            k = min(top, tot.shape[0])
            for f in tot.abs().topk(k).indices.tolist():
                if not bool((a[:, f] > 0).any()):
                    continue
                col = per[:, f]
                order = col.abs().argsort(descending=True)[:positions_per_feature]
                where = tuple((int(pos[i]), float(a[i, f]), float(col[i])) for i in order.tolist() if a[i, f] > 0)
                cands.append(FeatureAttribution(name, int(f), float(tot[f]), where))
    cands.sort(key=lambda fa: (-abs(fa.attribution), fa.sae, fa.index))
    return Attribution(tuple(ids), p, target, logit, prob, top_next, tuple(cands[:top]), tuple(terms), total,
                       tuple(int(i) for i in pos.tolist()), also=also)


def pearson(a, b) -> float:
    """Pearson correlation of two equal-length sequences (nan when fewer than 2 or either is constant)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.size < 2 or a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def validate_by_ablation(model, saes: dict, hook_name: str, att: Attribution, n: int = 10,
                         sink_norm: float | None = None) -> Attribution:
    """For the top n features: the target logit with the feature clamped to 0 (steering's clamp, same positions)
    minus the clean logit, next to the linear estimate -attribution; returns att with ablations + correlation."""
    opts = SteerOptions(sink_norm=sink_norm)
    ids = list(att.token_ids)
    clean = float(steered_next_token_logits(model, saes, hook_name, ids, [], opts)[att.target])
    abl = []
    for fa in att.features[:n]:
        logits = steered_next_token_logits(model, saes, hook_name, ids, [SteerFeature(fa.sae, fa.index, "clamp", 0.0)], opts)
        abl.append(Ablation(fa.sae, fa.index, -fa.attribution, float(logits[att.target]) - clean))
    corr = pearson([a.estimate for a in abl], [a.actual for a in abl])
    return Attribution(**{**att.__dict__, "ablations": tuple(abl), "correlation": corr})


def spaced_twin(text: str) -> str | None:
    """The same word with the leading space toggled ("Paris" <-> " Paris"): a byte-level tokenizer's tokens for a
    word mid-sentence carry the space, so a typed "Paris" is usually not the token meant."""
    if text.startswith(" "):
        return text[1:] or None
    return " " + text


def twin_is_meant(p_target: float, p_twin: float, ratio: float = 10.0, floor: float = 0.01) -> bool:
    """Warn when the twin is at least `ratio` times as likely as the typed token and not itself negligible."""
    return p_twin >= floor and p_twin >= ratio * p_target


def target_token_id(tokenizer, text: str) -> tuple[int, int]:
    """The first token of `text` (no specials) and how many tokens `text` has."""
    ids = tokenizer.encode(text, add_special_tokens=False)
    if not ids:
        raise ValueError("the target text has no tokens")
    return int(ids[0]), len(ids)


# ---------------------------------------------------------------- the report the issue asks for (embedded model)
ROME_PROMPT = "The capital of France is Paris, and the capital of Italy is"


def report(engine, prompt: str = ROME_PROMPT, target_text: str | None = " Rome", top: int = 15, validate: int = 10,
           labels=None) -> str:
    """A plain-text attribution report: top features (with what their cards promote and an atlas label if
    `labels(sae, index)` is given), error/bias/sink terms, the estimate-vs-ablation check."""
    from app.engine.analysis import feature_card

    tok = engine.tokenizer
    ids = tok.encode(prompt, add_special_tokens=False)
    lines = []
    with engine.session():
        target = None
        if target_text is not None:
            target, n_tok = target_token_id(tok, target_text)
            if n_tok > 1:
                lines.append(f"note: {target_text!r} is {n_tok} tokens; attributing its first, {token_text(tok, target)!r}")
        sink_norm = engine.profile.sink_norm
        att = attribute(engine.model, engine.saes, engine.hook_name, ids, target=target, top=top, sink_norm=sink_norm)
        att = validate_by_ablation(engine.model, engine.saes, engine.hook_name, att, validate, sink_norm)
        cards = {(f.sae, f.index): feature_card(engine.model, engine.saes[f.sae], f.sae, f.index, top=5) for f in att.features}
    dec = lambda i: token_text(tok, i)  # noqa: E731
    lines.append(f"profile {engine.profile.name}, hook {engine.hook_name}")
    lines.append(f"prompt {prompt!r} ({len(ids)} tokens); target {dec(att.target)!r} (id {att.target}) "
                 f"logit {att.logit:.3f} prob {att.prob:.3f}")
    lines.append("model's top next: " + ", ".join(f"{dec(i)!r} {p:.3f}" for i, p in att.top_next[:5]))
    lines.append(f"Σ x·g over all positions: {att.total:.3f}")
    for t in att.terms:
        lines.append(f"  {t.name:5s} {t.sae or '':6s} {t.attribution:+.3f}")
    ab = {(a.sae, a.index): a for a in att.ablations}
    lines.append(f"{'rank':>4} {'sae':6} {'feature':>7} {'attrib':>8} {'ablate':>8}  positions (token: act)  | promotes | label")
    for r, f in enumerate(att.features, 1):
        a = ab.get((f.sae, f.index))
        where = ", ".join(f"{dec(ids[p])!r}@{p}:{act:.1f}" for p, act, _ in f.positions[:3])
        promo = " ".join(repr(s) for s, _ in cards[(f.sae, f.index)].promoted[:4])
        label = labels(f.sae, f.index) if labels is not None else ""
        lines.append(f"{r:>4} {f.sae:6} {f.index:>7} {f.attribution:>+8.3f} "
                     f"{(f'{a.actual:+8.3f}' if a else ' ' * 8)}  {where} | {promo} | {label or ''}")
    lines.append(f"estimate (-attribution) vs actual clamp-to-0 change, top {len(att.ablations)}: "
                 f"Pearson r = {att.correlation:.3f}")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="Which SAE features drive a next-token logit (attribution report).")
    ap.add_argument("--profile", default="smollm2-135m")
    ap.add_argument("--prompt", default=ROME_PROMPT)
    ap.add_argument("--target", default=" Rome", help="target token text (default ' Rome'); '' = the model's top token")
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--validate", type=int, default=10)
    args = ap.parse_args(argv)
    from app.engine.engine import Engine

    with contextlib.redirect_stdout(sys.stderr):  # transformer-lens prints while loading; stdout is the report
        engine = Engine.build(args.profile, device="cpu")
    atlas = getattr(engine, "atlas", None)  # Engine.build loads the profile's atlas when it is current
    labels = atlas.label if atlas is not None else None
    print(report(engine, args.prompt, args.target or None, args.top, args.validate, labels))
    if labels is None:
        print(f"(no atlas labels: {getattr(engine, 'atlas_status', 'no atlas')})")


if __name__ == "__main__":
    main()
