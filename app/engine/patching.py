"""Activation patching: where does the model decide between an answer and a wrong token?

LD(run) = logit[answer] - logit[wrong] at the last position. A patched run is the corrupt prompt with the clean
activation at one (layer, position) of one site written in; its normalised score is
    (LD_patched - LD_corrupt) / (LD_clean - LD_corrupt)      (0: as corrupt, 1: as clean).
Exact patching is batched, many cells per forward. A cell (L, p) leaves positions < p and layers < L as in the
corrupt run, so (patching_runs) each forward holds the cells of one position p, each row joining at its layer from
the cached corrupt residual and running positions p.. only, attending to the corrupt run's cached keys / values of
the positions before; a cell whose clean activation equals the corrupt one is not run (LD_corrupt). Models whose
attention cannot take that (local windows, QK norm, shortformer) run whole-prompt rows in layer-major chunks.
Only the two logits that LD needs are unembedded.
Attribution patching: LD_patched - LD_corrupt ≈ (clean - corrupt) · dLD/dact at the corrupt run, for every cell
from one backward pass. SAE-feature patching: one feature's clean activation (times its decoder row) replaces
its corrupt one at every decomposed position of the SAE's hook, the SAE error kept.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from app.engine.patching_runs import (  # make_patch_rows_hook re-exported: tests and callers use it here
    kv_names,
    make_patch_rows_hook,  # noqa: F401
    prefix_patching,
    supports_prefix,
    whole_prompt_patching,
)

SITES = {"resid_pre": "hook_resid_pre", "attn_out": "hook_attn_out", "mlp_out": "hook_mlp_out"}


class PatchingInputError(ValueError):
    """Bad patching input; `field` names the request field it is about."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class PatchGrid:
    site: str
    layers: tuple[int, ...]
    grid: tuple[tuple[float, ...], ...]  # [layer][position] normalised LD (0 as corrupt, 1 as clean)
    patched: tuple[tuple[float, ...], ...]  # [layer][position] LD of the patched run, logit units
    ld_clean: float
    ld_corrupt: float
    runs: int  # patched cells
    batches: int  # forward passes they took
    work: int = 0  # positions x blocks run for them (every row's every position and block counted once)


@dataclass(frozen=True)
class FeaturePatch:
    sae: str
    index: int
    effect: float  # normalised LD with this feature alone patched to its clean activation
    delta: tuple[float, ...]  # [position] clean minus corrupt activation (0 at positions not decomposed)


def site_hook(site: str, layer: int) -> str:
    if site not in SITES:
        raise PatchingInputError("site", f"site {site!r}; expected one of {', '.join(SITES)}")
    return f"blocks.{layer}.{SITES[site]}"


def sae_grid_layer(hook_name: str, site: str) -> int | None:
    """The grid row of `site` that is the SAE's hook (blocks.L.hook_resid_post is resid_pre of L+1), else None."""
    parts = hook_name.split(".")
    if len(parts) != 3 or parts[0] != "blocks" or not parts[1].isdigit():
        return None
    layer, point = int(parts[1]), parts[2]
    if point == "hook_resid_post" and site == "resid_pre":
        return layer + 1
    return layer if point == SITES.get(site) else None


def single_token(tokenizer, word: str, field: str) -> int:
    """The one token id of `word`; PatchingInputError naming the token it would use when it is several tokens or
    lacks the leading space a word after another word has (" Paris", not "Paris")."""
    ids = tokenizer.encode(word, add_special_tokens=False)
    if not ids:
        raise PatchingInputError(field, f"{word!r} has no tokens")
    show = lambda i: repr(tokenizer.decode([int(i)]))  # noqa: E731
    if len(ids) > 1:
        parts = ", ".join(show(i) for i in ids)
        raise PatchingInputError(field, f"{word!r} is {len(ids)} tokens ({parts}), not one: the patching would use "
                                        f"its first, {show(ids[0])} (id {ids[0]}); pick a single-token word")
    if not word[:1].isspace():
        spaced = tokenizer.encode(" " + word, add_special_tokens=False)
        if len(spaced) == 1:
            raise PatchingInputError(field, f"{word!r} lacks the leading space the model expects after a word: it "
                                            f"would use {show(ids[0])} (id {ids[0]}); write {show(spaced[0])} "
                                            f"(id {spaced[0]}) instead")
    return int(ids[0])


def check_same_length(clean_tokens: list[str], corrupt_tokens: list[str]) -> None:
    if len(clean_tokens) != len(corrupt_tokens):
        raise PatchingInputError("corrupt", f"clean and corrupt must tokenise to the same length: clean has "
                                            f"{len(clean_tokens)} tokens {clean_tokens}, corrupt has "
                                            f"{len(corrupt_tokens)} tokens {corrupt_tokens}")


def answer_logits(model, resid_last: torch.Tensor, token_ids) -> torch.Tensor:
    """Final norm, unembedding and soft cap for a few token columns only: [rows, 1, d] -> [rows, len(token_ids)]."""
    x = model.ln_final(resid_last) if model.cfg.normalization_type is not None else resid_last
    cols = torch.tensor(list(token_ids), device=x.device)
    logits = x[:, -1] @ model.W_U[:, cols] + model.b_U[cols]
    cap = getattr(model.cfg, "output_logits_soft_cap", -1.0) or -1.0
    return cap * torch.tanh(logits / cap) if cap > 0 else logits


def logit_diff(model, resid: torch.Tensor, answer: int, wrong: int) -> torch.Tensor:
    """[rows] LD at the last position from the residual after the last block [rows, pos, d]."""
    lg = answer_logits(model, resid[:, -1:], (answer, wrong)).double()
    return lg[:, 0] - lg[:, 1]


def make_store_hook(store: dict, key):
    def store_hook(act: torch.Tensor, hook=None) -> torch.Tensor:
        store[key] = act.detach()
        return act

    return store_hook


def make_add_hook(delta: torch.Tensor):
    """Adds delta [rows, pos, d] to the activation."""

    def add_hook(act: torch.Tensor, hook=None) -> torch.Tensor:
        return act + delta.to(act.dtype)

    return add_hook


def make_delta_leaf_hook(store: dict, key):
    """act + d, d a zero leaf that requires grad (kept with the activation in store[key]): dLD/dd = dLD/dact,
    and the graph between layers stays whole (a detached leaf per layer would cut it)."""

    def delta_leaf_hook(act: torch.Tensor, hook=None) -> torch.Tensor:
        d = torch.zeros_like(act, requires_grad=True)
        store[key] = (act.detach(), d)
        return act + d

    return delta_leaf_hook


def cached_run(model, token_ids, names: list[str]) -> tuple[dict, torch.Tensor]:
    """One forward: {hook name: activation [pos, ...]} and the residual after the last block [1, pos, d]."""
    store: dict = {}
    toks = torch.tensor([list(token_ids)], device=model.cfg.device)
    with model.hooks(fwd_hooks=[(n, make_store_hook(store, n)) for n in names]):
        resid = model(toks, stop_at_layer=model.cfg.n_layers, attention_mask=torch.ones_like(toks))
    return {k: v[0] for k, v in store.items()}, resid


def _check_run(model, clean_ids, corrupt_ids, layers):
    n_layers = model.cfg.n_layers
    if len(clean_ids) != len(corrupt_ids):
        check_same_length([str(i) for i in clean_ids], [str(i) for i in corrupt_ids])
    layers = list(range(n_layers)) if layers is None else [int(x) for x in layers]
    bad = [x for x in layers if not 0 <= x < n_layers]
    if bad:
        raise PatchingInputError("layers", f"layers {bad} do not exist: the model has {n_layers} (0..{n_layers - 1})")
    return layers


def normalise(ld, ld_clean: float, ld_corrupt: float):
    """(LD - LD_corrupt) / (LD_clean - LD_corrupt); nan when clean and corrupt agree (no difference to explain)."""
    span = ld_clean - ld_corrupt
    return (np.asarray(ld, dtype=np.float64) - ld_corrupt) / span if abs(span) > 1e-12 else np.full_like(
        np.asarray(ld, dtype=np.float64), np.nan)


def _grid(values: np.ndarray) -> tuple[tuple[float, ...], ...]:
    return tuple(tuple(float(v) for v in row) for row in values)


def exact_patching(model, clean_ids, corrupt_ids, answer: int, wrong: int, site: str = "resid_pre",
                   layers=None, batch_rows: int | None = None, batch_tokens: int = 4096) -> PatchGrid:
    """Patch every (layer, position) of `site` from clean into corrupt, many cells per forward batch
    (batch_rows rows, default batch_tokens // tokens)."""
    layers = _check_run(model, clean_ids, corrupt_ids, layers)
    n, n_layers, first = len(clean_ids), model.cfg.n_layers, min(layers)
    names = [site_hook(site, x) for x in layers]
    prefix = supports_prefix(model)  # then the corrupt run's keys / values serve every position's prefix
    keep = set(names) | {f"blocks.{x}.hook_resid_pre" for x in range(first, n_layers)}
    clean, clean_out = cached_run(model, clean_ids, names)
    corrupt, corrupt_out = cached_run(model, corrupt_ids, sorted(keep | set(kv_names(range(first, n_layers)) if prefix else ())))
    ld_clean, ld_corrupt = (float(logit_diff(model, o, answer, wrong)[0]) for o in (clean_out, corrupt_out))
    cells = [(x, p) for x in layers for p in range(n)]
    hook_of, ld = (lambda x: site_hook(site, x)), (lambda final: logit_diff(model, final, answer, wrong))
    if prefix:
        out, batches, work = prefix_patching(model, cells, n, clean, corrupt, hook_of, ld, batch_tokens, batch_rows)
        out[np.isnan(out)] = ld_corrupt  # cells whose clean activation is the corrupt one: the corrupt run
    else:
        out, batches, work = whole_prompt_patching(model, corrupt_ids, cells, clean, corrupt, hook_of, ld,
                                                   batch_rows or max(1, batch_tokens // max(n, 1)))
    raw = out.reshape(len(layers), n)
    return PatchGrid(site, tuple(layers), _grid(normalise(raw, ld_clean, ld_corrupt)), _grid(raw), ld_clean,
                     ld_corrupt, len(cells), batches, work)


def attribution_patching(model, clean_ids, corrupt_ids, answer: int, wrong: int, site: str = "resid_pre",
                         layers=None) -> PatchGrid:
    """The linear estimate of every cell of exact_patching from one forward and one backward of the corrupt run
    (`patched` holds LD_corrupt + (clean - corrupt) · dLD/dact)."""
    layers = _check_run(model, clean_ids, corrupt_ids, layers)
    names = [site_hook(site, x) for x in layers]
    clean, clean_out = cached_run(model, clean_ids, names)
    ld_clean = float(logit_diff(model, clean_out, answer, wrong)[0])
    store: dict = {}
    with torch.inference_mode(False), torch.enable_grad():
        toks = torch.tensor([list(corrupt_ids)], device=model.cfg.device)
        with model.hooks(fwd_hooks=[(nm, make_delta_leaf_hook(store, nm)) for nm in names]):
            final = model(toks, stop_at_layer=model.cfg.n_layers, attention_mask=torch.ones_like(toks))
        ld = logit_diff(model, final, answer, wrong)[0]
        grads = torch.autograd.grad(ld, [store[nm][1] for nm in names])
    ld_corrupt = float(ld.detach())
    est = np.stack([((clean[nm].double() - store[nm][0][0].double()) * g[0].double()).sum(-1).cpu().numpy()
                    for nm, g in zip(names, grads)])
    raw = ld_corrupt + est
    return PatchGrid(site, tuple(layers), _grid(normalise(raw, ld_clean, ld_corrupt)), _grid(raw), ld_clean,
                     ld_corrupt, 0, 1)


def correlation(a, b) -> float:
    """Pearson correlation of two grids' finite cells (nan when fewer than 3 or one is constant)."""
    x, y = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if len(x) < 3 or x.std() == 0 or y.std() == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def feature_patching(model, saes: dict, hook_name: str, clean_ids, corrupt_ids, answer: int, wrong: int,
                     keep=None, candidates: int = 16, top: int = 10) -> tuple[FeaturePatch, ...]:
    """Per SAE, the `candidates` features whose activation differs most between clean and corrupt (Σ_pos |Δa| ·
    ‖W_dec‖), each patched alone (all positions in `keep`, default all but 0); the `top` by |effect| first."""
    _check_run(model, clean_ids, corrupt_ids, [])
    n = len(clean_ids)
    clean, clean_out = cached_run(model, clean_ids, [hook_name])
    corrupt, corrupt_out = cached_run(model, corrupt_ids, [hook_name])
    ld_clean = float(logit_diff(model, clean_out, answer, wrong)[0])
    ld_corrupt = float(logit_diff(model, corrupt_out, answer, wrong)[0])
    mask = torch.arange(n) > 0 if keep is None else torch.as_tensor(keep, dtype=torch.bool)
    mask = mask.to(clean[hook_name].device)
    rows: list[tuple[str, int, torch.Tensor]] = []
    for name, sae in saes.items():
        W = sae.W_dec.float()
        diff = (sae.encode(clean[hook_name].float()) - sae.encode(corrupt[hook_name].float())) * mask[:, None]
        score = diff.abs().sum(0) * W.norm(dim=-1)
        k = min(candidates, int((score > 0).sum()))
        for f in score.topk(k).indices.tolist() if k else []:
            rows.append((name, int(f), diff[:, f]))
    if not rows:
        return ()
    delta = torch.stack([d[:, None] * saes[s].W_dec[f].float()[None] for s, f, d in rows])  # [rows, pos, d]
    toks = torch.tensor([list(corrupt_ids)] * len(rows), device=model.cfg.device)
    with model.hooks(fwd_hooks=[(hook_name, make_add_hook(delta))]):
        final = model(toks, stop_at_layer=model.cfg.n_layers, attention_mask=torch.ones_like(toks))
    eff = normalise(logit_diff(model, final, answer, wrong).cpu().numpy(), ld_clean, ld_corrupt)
    out = [FeaturePatch(s, f, float(e), tuple(float(v) for v in d.cpu().tolist())) for (s, f, d), e in zip(rows, eff)]
    out.sort(key=lambda r: -abs(r.effect) if np.isfinite(r.effect) else 0.0)
    return tuple(out[:top])
