"""What the analysis is made of: per-token SAE views, sinks, explained variance, the capturing forward, the
residual cache the lens reads (pure computation)."""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import torch

from app.engine.tokens import token_text


@dataclass(frozen=True)
class SAETokenView:
    """One SAE at one token: top features and how well the SAE reconstructs the residual there."""

    indices: tuple[int, ...]
    values: tuple[float, ...]
    rel_error: float  # ||x - x_hat|| / ||x||
    cosine: float  # cos(x, x_hat)
    l0: int


@dataclass(frozen=True)
class Analysis:
    token_ids: tuple[int, ...]
    tokens: tuple[str, ...]
    sink: tuple[bool, ...]  # position 0, special tokens and massive-norm positions
    resid_norm: tuple[float, ...]
    per_sae: dict  # name -> tuple[SAETokenView, ...] (one per position)
    explained_variance: dict  # name -> EV over non-sink positions
    next_token_top: tuple[tuple[str, float], ...]  # top next tokens after the prompt, (token, prob)
    next_token_ids: tuple[int, ...] = ()  # their ids, in the same order


@dataclass(frozen=True)
class LogitLens:
    layers: tuple[str, ...]  # "embed", "0", ..., "n_layers-1"
    top_tokens: tuple[tuple[tuple[str, ...], ...], ...]  # [layer][pos] -> top-5 token strings
    top_probs: tuple[tuple[tuple[float, ...], ...], ...]  # [layer][pos] -> top-5 probabilities
    kind: str = "logit"  # "logit" or "tuned" (each row translated by the tuned lens first)
    kl: tuple[tuple[float, ...], ...] = ()  # [layer][pos] -> KL(model's output || this readout), nats
    kl_mean: tuple[float, ...] | None = None  # [layer] -> mean KL over non-sink positions (None: all are sinks)
    sink: tuple[bool, ...] = ()  # [pos] left out of kl_mean


@dataclass(frozen=True)
class FeatureCard:
    sae: str
    index: int
    decoder_norm: float
    promoted: tuple[tuple[str, float], ...]  # tokens whose logits W_dec[f] @ W_U raises most
    suppressed: tuple[tuple[str, float], ...]
    activations: tuple[float, ...] | None  # on the given prompt, per position
    max_activation: float | None


def sink_mask(model, token_ids, resid: torch.Tensor, sink_norm: float | None) -> torch.Tensor:
    """[pos] bool: position 0, special tokens, and positions whose residual norm exceeds sink_norm."""
    ids = torch.as_tensor(token_ids)
    mask = torch.zeros(len(ids), dtype=torch.bool)
    mask[0] = True
    special = set(getattr(model.tokenizer, "all_special_ids", []) or [])
    if special:
        mask |= torch.tensor([int(i) in special for i in ids])
    if sink_norm is not None:
        mask |= resid.norm(dim=-1).cpu() > sink_norm
    return mask


def sae_token_views(sae, resid: torch.Tensor, top_k: int) -> tuple[tuple[SAETokenView, ...], torch.Tensor, torch.Tensor]:
    """Encode resid [pos, d] -> (views per position, feature acts [pos, F], reconstruction [pos, d])."""
    x = resid.to(sae.W_dec.dtype)
    acts = sae.encode(x)
    x_hat = sae.decode(acts)
    k = min(top_k, acts.shape[-1])
    vals, idx = acts.topk(k, dim=-1)
    rel = (x - x_hat).norm(dim=-1) / x.norm(dim=-1).clamp_min(1e-12)
    cos = torch.nn.functional.cosine_similarity(x, x_hat, dim=-1)
    l0 = (acts > 0).sum(-1)
    views = []
    for vr, ir, r, c, n in zip(vals.float().tolist(), idx.tolist(), rel.float().tolist(), cos.float().tolist(), l0.tolist()):
        kept = [(i, v) for i, v in zip(ir, vr) if v > 0]
        views.append(SAETokenView(tuple(i for i, _ in kept), tuple(v for _, v in kept), r, c, n))
    return tuple(views), acts, x_hat


def explained_variance(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    """1 - sum||x - x_hat||^2 / sum||x - mean(x)||^2 over the rows given (nan for < 2 rows)."""
    if x.shape[0] < 2:
        return float("nan")
    return float(1 - ((x - x_hat) ** 2).sum() / ((x - x.mean(0)) ** 2).sum())


def make_store_hook(store: dict, key: str):
    """Forward hook that keeps the activation it sees (no copy, no change)."""
    def hook_fn(act, hook):
        store[key] = act
    return hook_fn


def _forward_capture(model, token_ids, names) -> tuple[torch.Tensor, dict]:
    """One forward through every block capturing `names` -> (final resid [1, pos, d], acts).

    The architecture's fast decoder runs it where it calls every hook point asked for (plain fused matmuls and
    scaled_dot_product_attention: half transformer-lens's time on SmolLM2, the same residuals to ~1e-6 relative);
    transformer-lens's forward (no unembedding) otherwise."""
    from app.engine.generation import FAST_HOOKS, fast_decoder_class, hooks_outside_fast_path

    ids = [int(t) for t in token_ids]
    store: dict = {}
    last = f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"
    cls = fast_decoder_class(model)
    fast = cls is not None and all(n.startswith("blocks.") and n.rsplit(".", 1)[-1] in FAST_HOOKS for n in names)
    if fast and not hooks_outside_fast_path(model, getattr(cls, "extra_hooks", ())):
        hooks = [(n, make_store_hook(store, n)) for n in dict.fromkeys([*names, last])]
        try:
            with torch.no_grad(), model.hooks(fwd_hooks=hooks):  # plain tensors (not inference ones): callers may need grad later
                cls(model, len(ids)).step(ids)
            return store[last], store
        except ValueError:  # e.g. a rotary table shorter than the prompt: transformer-lens's forward below
            store.clear()
    toks = torch.tensor([ids], device=model.cfg.device)
    with model.hooks(fwd_hooks=[(n, make_store_hook(store, n)) for n in names]):
        resid = model(toks, stop_at_layer=model.cfg.n_layers)
    return resid, store


def _final_logits(model, resid: torch.Tensor) -> torch.Tensor:
    """What the model's forward does after the last block: ln_final, unembed, output soft cap."""
    if model.cfg.normalization_type is not None:
        resid = model.ln_final(resid)
    logits = model.unembed(resid)
    cap = getattr(model.cfg, "output_logits_soft_cap", -1.0) or -1.0
    if cap > 0:
        logits = cap * torch.tanh(logits / cap)
    return logits


def _decoder(tok):
    """token id -> its string, memoised for one call (lens grids repeat the same ids many times)."""
    memo: dict[int, str] = {}

    def decode(i) -> str:
        i = int(i)
        if i not in memo:
            memo[i] = token_text(tok, i)
        return memo[i]
    return decode


def lens_hook_names(n_layers: int) -> list[str]:
    """The residuals the lens reads: the embedding (resid_pre of block 0), then each block's resid_post."""
    return ["blocks.0.hook_resid_pre"] + [f"blocks.{i}.hook_resid_post" for i in range(n_layers)]


def lens_stack(model, store: dict, final: torch.Tensor) -> torch.Tensor:
    """[n_layers+1, pos, d] float32: the embedding and each block's resid_post of one prompt."""
    names = lens_hook_names(model.cfg.n_layers)
    return torch.stack([store[nm][0] for nm in names[:-1]] + [final[0]]).float()


class ResidualCache:
    """Bounded, thread-safe LRU of one prompt's every-layer residuals [n_layers+1, pos, d], kept by the analysis
    forward so the follow-up lens request needs no forward of its own. Key: (SAE fingerprint, token ids).

    It also keeps the last few finished lenses (small: top-k ids and probabilities per cell): the unembedding of
    every layer is the costly part, and a feature click or a save asks for the same prompt's lens again."""

    def __init__(self, max_bytes: int = 256 * 2 ** 20, max_entries: int = 32):
        self.max_bytes, self.max_entries = max_bytes, max_entries
        self._items: OrderedDict = OrderedDict()
        self._lenses: OrderedDict = OrderedDict()
        self._lock = threading.Lock()
        self.nbytes = 0

    def get_lens(self, key):
        with self._lock:
            lens = self._lenses.get(key)
            if lens is not None:
                self._lenses.move_to_end(key)
            return lens

    def put_lens(self, key, lens) -> None:
        with self._lock:
            self._lenses[key] = lens
            self._lenses.move_to_end(key)
            while len(self._lenses) > self.max_entries:
                self._lenses.popitem(last=False)

    @staticmethod
    def key(fingerprint: str, token_ids) -> tuple:
        return (fingerprint, tuple(int(t) for t in token_ids))

    def get(self, key) -> torch.Tensor | None:
        with self._lock:
            stack = self._items.get(key)
            if stack is not None:
                self._items.move_to_end(key)
            return stack

    def put(self, key, stack: torch.Tensor) -> None:
        size = stack.numel() * stack.element_size()
        if size > self.max_bytes:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self.nbytes -= old.numel() * old.element_size()
            self._items[key] = stack
            self.nbytes += size
            while self._items and (self.nbytes > self.max_bytes or len(self._items) > self.max_entries):
                _, ev = self._items.popitem(last=False)
                self.nbytes -= ev.numel() * ev.element_size()

    def __len__(self) -> int:
        return len(self._items)
