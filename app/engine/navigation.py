"""A prompt on the map: each token placed at the activation-weighted position of its active features, the path
through the tokens, and how a system prompt, steering or a longer conversation moves it (pure computation).

Placement: pos_t = sum_f a_tf * xy_f / sum_f a_tf over the features of both SAEs active at token t (xy from the
stored layout). No UMAP at request time; a token whose features sit in two regions lands between them, which
is a property of the method, not of the model (the page says so). Sinks (position 0, special tokens, massive
norms) get no place: their activations say nothing about content.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from app.engine.analysis import make_store_hook, sink_mask
from app.engine.layout import Layout, token_positions
from app.engine.tokens import token_texts


@dataclass(frozen=True)
class PathPoint:
    """One token on the map."""

    position: int
    token: str
    xy: tuple[float, float] | None  # None: a sink, or no active feature
    sink: bool
    top: tuple[tuple[str, int, float], ...]  # (sae, index, activation), strongest first (both SAEs; HOVER_POOL)


@dataclass(frozen=True)
class PromptPath:
    token_ids: tuple[int, ...]
    points: tuple[PathPoint, ...]


@dataclass(frozen=True)
class Moved:
    """A feature whose activation at the last token changes most with the system prompt."""

    sae: str
    index: int
    without: float
    with_system: float

    @property
    def delta(self) -> float:
        return self.with_system - self.without


@dataclass(frozen=True)
class SystemPull:
    without: PromptPath  # the user prompt alone (chat template, no system turn)
    with_system: PromptPath  # the same user prompt after the system prompt
    moved: tuple[Moved, ...]  # largest |delta| at the last token, both SAEs
    feature_shift: float  # 1 - cos(last-token feature activations with vs without), both SAEs concatenated
    resid_shift: float  # 1 - cos(last-token residuals at the hook)
    map_shift: float  # distance between the two last-token places on the map (layout units; not a cosine)


@dataclass(frozen=True)
class DriftPoint:
    k: int  # filler turn pairs between the system prompt and the user prompt
    n_tokens: int  # tokens of the with-system conversation
    feature_shift: float
    resid_shift: float


@dataclass(frozen=True)
class SteeredPaths:
    unsteered: PromptPath  # prompt + greedy continuation, no hook
    steered: PromptPath  # prompt + steered greedy continuation, features read with the steering hook on
    prompt_len: int
    marked: tuple[tuple[str, int, tuple[float, float]], ...]  # steered features and their places


FILLERS = (("What time is it?", "I cannot see a clock, sorry."),
           ("Name a colour.", "Blue."),
           ("Count to three.", "One, two, three."),
           ("Say hello.", "Hello!"))


def hook_features(model, saes: dict, hook_name: str, token_ids, fwd_hooks=()) -> tuple[torch.Tensor, dict]:
    """(resid [pos, d] at the hook, {sae -> acts [pos, d_sae] float32 numpy}); forward stopped after the hook.

    Extra fwd_hooks (steering) run before the capture, so the features are those of the edited residual."""
    layer = int(hook_name.split(".")[1])
    toks = torch.tensor([list(token_ids)], device=model.cfg.device)
    store: dict = {}
    with model.hooks(fwd_hooks=[*fwd_hooks, (hook_name, make_store_hook(store, hook_name))]):
        model(toks, stop_at_layer=layer + 1)
    resid = store[hook_name][0].detach().float()
    acts = {n: sae.encode(resid.to(sae.W_dec.dtype)).detach().float().cpu().numpy() for n, sae in saes.items()}
    return resid, acts


HOVER_POOL = 12  # strongest features kept per token: the hover ranks them (ranking.rank_mixed) and shows the first 3


def path_from_acts(layout: Layout, token_ids, tokens, acts: dict, sink, top: int = HOVER_POOL) -> PromptPath:
    """Place every non-sink token (token_positions) and keep its `top` strongest features (both SAEs) for the hover."""
    keep = {n: np.where(np.asarray(sink)[:, None], 0.0, a) for n, a in acts.items() if n in layout.sae_names}
    xy = token_positions(layout, keep)
    points = []
    for t, tokstr in enumerate(tokens):
        cands = []
        for n, a in acts.items():
            row = a[t]
            k = min(top, row.shape[0])
            idx = np.argpartition(-row, k - 1)[:k]
            cands += [(n, int(i), float(row[i])) for i in idx if row[i] > 0]
        cands.sort(key=lambda c: (-c[2], c[0], c[1]))
        p = None if sink[t] or not np.isfinite(xy[t]).all() else (round(float(xy[t, 0]), 5), round(float(xy[t, 1]), 5))
        points.append(PathPoint(t, tokstr, p, bool(sink[t]), tuple((n, i, round(v, 5)) for n, i, v in cands[:top])))
    return PromptPath(tuple(int(i) for i in token_ids), tuple(points))


def prompt_path(model, saes: dict, hook_name: str, token_ids, layout: Layout, sink_norm: float | None = None,
                fwd_hooks=()) -> tuple[PromptPath, torch.Tensor, dict]:
    """(path, resid [pos, d], acts) for one prompt."""
    resid, acts = hook_features(model, saes, hook_name, token_ids, fwd_hooks)
    sink = sink_mask(model, token_ids, resid, sink_norm).tolist()
    tokens = token_texts(model.tokenizer, token_ids)
    return path_from_acts(layout, token_ids, tokens, acts, sink), resid, acts


def one_minus_cos(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        return float("nan") if na == nb else 1.0
    return float(1.0 - a @ b / (na * nb))


def last_shift(acts_a: dict, acts_b: dict, resid_a: torch.Tensor, resid_b: torch.Tensor) -> tuple[float, float]:
    """(feature shift, residual shift) between two runs' last tokens (1 - cosine each)."""
    names = sorted(acts_a)
    fa = np.concatenate([acts_a[n][-1] for n in names])
    fb = np.concatenate([acts_b[n][-1] for n in names])
    return one_minus_cos(fa, fb), one_minus_cos(resid_a[-1].cpu().numpy(), resid_b[-1].cpu().numpy())


def chat_ids(tokenizer, user: str, system: str | None = None, turns=()) -> list[int]:
    """Chat-template ids: optional system turn, (user, assistant) filler pairs, the user prompt, the answer cue."""
    msgs = ([{"role": "system", "content": system}] if system else [])
    for u, a in turns:
        msgs += [{"role": "user", "content": u}, {"role": "assistant", "content": a}]
    msgs.append({"role": "user", "content": user})
    text = tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    return list(tokenizer.encode(text, add_special_tokens=False))


def system_pull(model, saes: dict, hook_name: str, layout: Layout, user_ids, system_ids,
                sink_norm: float | None = None, top_moved: int = 10) -> SystemPull:
    """The same user prompt without / with a system prompt: both paths and what moved at the last token."""
    p0, r0, a0 = prompt_path(model, saes, hook_name, user_ids, layout, sink_norm)
    p1, r1, a1 = prompt_path(model, saes, hook_name, system_ids, layout, sink_norm)
    cands = []
    for n in sorted(a0):
        d = a1[n][-1] - a0[n][-1]
        k = min(top_moved, d.shape[0])
        for i in np.argpartition(-np.abs(d), k - 1)[:k]:
            if d[i] != 0:
                cands.append(Moved(n, int(i), round(float(a0[n][-1, i]), 5), round(float(a1[n][-1, i]), 5)))
    cands.sort(key=lambda m: (-abs(m.delta), m.sae, m.index))
    fs, rs = last_shift(a0, a1, r0, r1)
    q0, q1 = p0.points[-1].xy, p1.points[-1].xy
    ms = float(np.hypot(q1[0] - q0[0], q1[1] - q0[1])) if q0 is not None and q1 is not None else float("nan")
    return SystemPull(p0, p1, tuple(cands[:top_moved]), fs, rs, ms)


def drift(model, saes: dict, hook_name: str, tokenizer, user: str, system: str, ks, max_tokens: int) -> tuple[DriftPoint, ...]:
    """Size of the system prompt's shift at the last token as k filler turn pairs come between it and the user
    prompt (the k fillers are in both runs; only the system turn differs). Conversations over max_tokens stop."""
    out = []
    for k in ks:
        turns = [FILLERS[j % len(FILLERS)] for j in range(k)]
        ids_sys = chat_ids(tokenizer, user, system, turns)
        if len(ids_sys) > max_tokens:
            break
        ids_plain = chat_ids(tokenizer, user, None, turns)
        r0, a0 = hook_features(model, saes, hook_name, ids_plain)
        r1, a1 = hook_features(model, saes, hook_name, ids_sys)
        fs, rs = last_shift(a0, a1, r0, r1)
        out.append(DriftPoint(int(k), len(ids_sys), fs, rs))
    return tuple(out)


def steered_paths(model, saes: dict, hook_name: str, layout: Layout, prompt_ids, features, max_new_tokens: int,
                  sink_norm: float | None = None, stop_ids=()) -> SteeredPaths:
    """Greedy continuation without and with steering; both sequences placed on the map (the steered one read
    through the same steering hook generation used, so its features are those the model actually saw)."""
    from app.engine.generation import PositionState, generate
    from app.engine.sampling import SamplingParams
    from app.engine.steering import SteerOptions, make_steering_hook, steered_generate

    prompt_ids = [int(i) for i in prompt_ids]
    params = SamplingParams()
    opts = SteerOptions(sink_norm=sink_norm)
    plain = generate(model, prompt_ids, max_new_tokens, params, stop_ids)
    steer = steered_generate(model, saes, hook_name, prompt_ids, features, params, max_new_tokens, stop_ids, opts)
    p0, _, _ = prompt_path(model, saes, hook_name, prompt_ids + list(plain.ids), layout, sink_norm)
    state = PositionState(start=0, prompt_len=len(prompt_ids))
    hook = (hook_name, make_steering_hook(saes, features, state, opts))
    p1, _, _ = prompt_path(model, saes, hook_name, prompt_ids + list(steer.ids), layout, sink_norm, fwd_hooks=[hook])
    marked = []
    for f in features:
        x, y = layout.xy[layout.offset(f.sae) + f.index]
        marked.append((f.sae, int(f.index), (round(float(x), 5), round(float(y), 5))))
    return SteeredPaths(p0, p1, len(prompt_ids), tuple(marked))
