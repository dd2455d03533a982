"""Token-by-token generation over the HookedTransformer with a KV cache, seeded sampling and a cancel flag.

Two decoders share one interface (`step(new_ids) -> logits [vocab]` for the last position):

- `FastLlamaDecoder`: Llama-style models (RMSNorm, rotary, gated MLP, grouped-query attention): plain
  matmuls over the model's own weights (Q/K/V fused once, cached per weights version), a preallocated KV
  cache and `scaled_dot_product_attention`. It calls the model's HookPoints `hook_embed` and every block's
  `hook_resid_pre` / `hook_resid_mid` / `hook_resid_post`, so hooks attached with `model.hooks(...)` on
  those points (steering lives at `blocks.L.hook_resid_post`) fire on the prompt and on every decode step.
- `FastGPT2Decoder` / `FastGemma2Decoder` (app/engine/decoders/): the same for GPT-2 and Gemma 2, picked by
  `make_decoder` through `decoders.fast_decoder_class`.
- `TLDecoder`: transformer-lens's own forward with its key-value cache; used for every other architecture
  and whenever a hook is attached to a hook point the fast path does not call (so no hook is ever skipped).

Both see the same weights; tests check their logits against each other and against HF transformers.
"""
from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn.functional as F

from app.engine import compat
from app.engine.decoder_common import KVCacheDecoder
from app.engine.decoders import gemma2, gpt2
from app.engine.sampling import SamplingParams, make_generator, sample_next
from app.engine.tokens import token_text

FAST_HOOKS = ("hook_resid_pre", "hook_resid_mid", "hook_resid_post")


@dataclass
class PositionState:
    """Absolute position of the first token of the forward pass in flight (hooks read it)."""

    start: int = 0
    prompt_len: int = 0


@dataclass(frozen=True)
class GenToken:
    id: int
    text: str
    prob: float  # probability of this token under the model's softmax at temperature 1


@dataclass(frozen=True)
class Generation:
    prompt_ids: tuple[int, ...]
    tokens: tuple[GenToken, ...]
    text: str
    finish_reason: str  # "length" | "stop" | "cancelled"
    seconds: float
    decoder: str  # "fast" | "transformer-lens"

    @property
    def ids(self) -> tuple[int, ...]:
        return tuple(t.id for t in self.tokens)

    @property
    def tokens_per_s(self) -> float:
        return len(self.tokens) / self.seconds if self.seconds > 0 else float("nan")


def stop_token_ids(tokenizer) -> tuple[int, ...]:
    """EOS plus the chat end-of-turn / end-of-text specials the tokenizer knows."""
    ids = []
    if getattr(tokenizer, "eos_token_id", None) is not None:
        ids.append(int(tokenizer.eos_token_id))
    vocab = tokenizer.get_vocab()
    for s in ("<|im_end|>", "<|endoftext|>", "<end_of_turn>", "<eos>"):
        if s in vocab and vocab[s] not in ids:
            ids.append(int(vocab[s]))
    return tuple(ids)


# ---------------------------------------------------------------- decoders
def fast_path_supported(model) -> bool:
    cfg = model.cfg
    return (
        cfg.normalization_type == "RMS" and cfg.final_rms and cfg.gated_mlp and cfg.act_fn == "silu"
        and cfg.positional_embedding_type == "rotary" and not cfg.rotary_adjacent_pairs
        and cfg.rotary_dim == cfg.d_head and cfg.original_architecture in ("LlamaForCausalLM", "Qwen2ForCausalLM")
        and not getattr(cfg, "use_local_attn", False)
        and not cfg.use_attn_result and not cfg.use_split_qkv_input and not cfg.use_attn_in
        and not cfg.use_hook_mlp_in and not cfg.parallel_attn_mlp and not cfg.attn_only
        and cfg.output_logits_soft_cap <= 0 and cfg.attn_scores_soft_cap <= 0
        and not getattr(cfg, "use_qk_norm", False) and not getattr(cfg, "load_in_4bit", False)
        and getattr(cfg, "n_devices", 1) == 1
    )


def hooks_outside_fast_path(model, extra: tuple[str, ...] = ()) -> list[str]:
    """Names of hook points with hooks attached that the fast decoder would not call (extra: further top-level
    hook points a decoder calls, e.g. GPT-2's hook_pos_embed)."""
    out = []
    for name, hp in model.hook_dict.items():
        if (hp._forward_hooks or hp._backward_hooks) and not (
            name == "hook_embed" or name in extra
            or (name.startswith("blocks.") and name.rsplit(".", 1)[-1] in FAST_HOOKS)
        ):
            out.append(name)
    return out


def _rms(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    return x / (x.pow(2).mean(-1, keepdim=True) + eps).sqrt() * w


class FastLlamaDecoder(KVCacheDecoder):
    """KV-cached decode over a Llama-style HookedTransformer's weights (see the module docstring)."""

    def __init__(self, model, max_len: int, position_state: PositionState | None = None):
        super().__init__(model, max_len, position_state)
        attn0 = model.blocks[0].attn
        if attn0.rotary_cos.shape[0] < max_len:
            attn0._extend_rotary_embeddings(max_len) if hasattr(attn0, "_extend_rotary_embeddings") else None
        self.cos, self.sin = attn0.rotary_cos, attn0.rotary_sin
        if self.cos.shape[0] < max_len:
            raise ValueError(f"rotary table has {self.cos.shape[0]} positions; {max_len} needed")
        self.scale = 1.0 / attn0.attn_scale

    def step(self, new_ids) -> torch.Tensor:
        m = self.model
        p0, n, toks = self._begin(new_ids)
        x = m.hook_embed(m.embed(toks))
        H, K, dh = self.n_heads, self.n_kv, self.d_head
        cos = self.cos[p0:p0 + n][None, :, None, :]
        sin = self.sin[p0:p0 + n][None, :, None, :]
        T = p0 + n
        mask = None
        if n > 1 and p0 > 0:
            mask = torch.ones(n, T, dtype=torch.bool, device=x.device).tril(diagonal=p0)
        for i, blk in enumerate(m.blocks):
            x = blk.hook_resid_pre(x)
            h = _rms(x, blk.ln1.w, blk.ln1.eps)
            qkv = torch.addmm(self.w.b_qkv[i], h.reshape(n, -1), self.w.qkv[i])
            q = qkv[:, : H * dh].view(1, n, H, dh)
            k = qkv[:, H * dh: (H + K) * dh].view(1, n, K, dh)
            v = qkv[:, (H + K) * dh:].view(1, n, K, dh)
            q = self._rope(q, cos, sin).transpose(1, 2)  # [1, H, n, dh]
            k = self._rope(k, cos, sin)
            self.k[i, :, p0:T] = k[0].transpose(0, 1)
            self.v[i, :, p0:T] = v[0].transpose(0, 1)
            kk, vv = self.k[i, :, :T].unsqueeze(0), self.v[i, :, :T].unsqueeze(0)
            z = F.scaled_dot_product_attention(q, kk, vv, attn_mask=mask, is_causal=(n > 1 and p0 == 0),
                                               scale=self.scale, enable_gqa=(H != K))
            z = z.transpose(1, 2).reshape(n, H * dh)
            a = blk.attn
            attn_out = torch.addmm(a.b_O, z, a.W_O.reshape(H * dh, -1)).view(1, n, -1)
            x = blk.hook_resid_mid(x + attn_out)
            h = _rms(x, blk.ln2.w, blk.ln2.eps).reshape(n, -1)
            mlp = blk.mlp
            post = F.silu(h @ mlp.W_gate) * (h @ mlp.W_in) + mlp.b_in
            x = blk.hook_resid_post(x + torch.addmm(mlp.b_out, post, mlp.W_out).view(1, n, -1))
        self.pos = T
        last = _rms(x[:, -1], m.ln_final.w, m.ln_final.eps)
        return (last @ m.W_U + m.b_U)[0]


class TLDecoder:
    """transformer-lens's own forward with its key-value cache (every hook point fires)."""

    name = "transformer-lens"

    def __init__(self, model, max_len: int, position_state: PositionState | None = None):
        self.model = model
        self.cache = compat.kv_cache(model, batch_size=1)
        self.pos = 0
        self.state = position_state

    def step(self, new_ids) -> torch.Tensor:
        if self.state is not None:
            self.state.start = self.pos
        toks = torch.as_tensor([list(new_ids)], device=self.model.cfg.device)
        # An explicit all-ones mask: TL would otherwise mask tokens equal to the pad token (SmolLM2's <|im_end|>).
        logits = self.model(toks, past_kv_cache=self.cache, attention_mask=torch.ones_like(toks))
        self.pos += len(new_ids)
        return logits[0, -1]


def fast_decoder_class(model):
    """The fast decoder class for the model's architecture and options, or None (-> transformer-lens's forward)."""
    if fast_path_supported(model):
        return FastLlamaDecoder
    for mod in (gpt2, gemma2):
        if mod.supported(model):
            return mod.DECODER
    return None


def make_decoder(model, max_len: int, position_state: PositionState | None = None, prefer_fast: bool = True):
    """The architecture's fast decoder (Llama-style, GPT-2, Gemma 2: app/engine/decoders/) unless a hook sits on a
    point it does not call; transformer-lens's forward otherwise."""
    if prefer_fast:
        cls = fast_decoder_class(model)
        if cls is not None and not hooks_outside_fast_path(model, getattr(cls, "extra_hooks", ())):
            return cls(model, max_len, position_state)
    return TLDecoder(model, max_len, position_state)


# ---------------------------------------------------------------- generation
@dataclass
class GenerationRun:
    """Mutable record of a run in progress (the iterator fills it): logits at the end of the prompt,
    finish reason, timing."""

    first_logits: torch.Tensor | None = None
    finish_reason: str = "length"
    decoder: str = ""
    seconds: float = 0.0


def iter_generate(model, prompt_ids, max_new_tokens: int, params: SamplingParams, stop_ids=(),
                  cancel: threading.Event | None = None, position_state: PositionState | None = None,
                  run: GenerationRun | None = None, prefer_fast: bool = True) -> Iterator[GenToken]:
    """Yield generated tokens one at a time; checks `cancel` before each token (and stops at a stop id)."""
    run = run if run is not None else GenerationRun()
    prompt_ids = [int(i) for i in prompt_ids]
    if position_state is not None:
        position_state.prompt_len = len(prompt_ids)
    t0 = time.perf_counter()
    tok = model.tokenizer
    stop = set(int(s) for s in stop_ids)
    with torch.inference_mode():
        dec = make_decoder(model, len(prompt_ids) + max_new_tokens, position_state, prefer_fast)
        run.decoder = dec.name
        gen = None if params.greedy else make_generator(params.seed)
        if cancel is not None and cancel.is_set():
            run.finish_reason = "cancelled"
            return
        logits = dec.step(prompt_ids).float().cpu()
        run.first_logits = logits
        for i in range(max_new_tokens):
            if cancel is not None and cancel.is_set():
                run.finish_reason = "cancelled"
                break
            tid = sample_next(logits, params, gen)
            prob = math.exp(float(logits[tid] - torch.logsumexp(logits, -1)))
            run.seconds = time.perf_counter() - t0
            yield GenToken(tid, token_text(tok, tid), prob)
            if tid in stop:
                run.finish_reason = "stop"
                break
            if i + 1 < max_new_tokens:
                logits = dec.step([tid]).float().cpu()
    run.seconds = time.perf_counter() - t0


def generate(model, prompt_ids, max_new_tokens: int, params: SamplingParams, stop_ids=(),
             cancel: threading.Event | None = None, position_state: PositionState | None = None,
             run: GenerationRun | None = None, prefer_fast: bool = True) -> Generation:
    """Run iter_generate to the end; `run.first_logits` holds the logits at the end of the prompt."""
    run = run if run is not None else GenerationRun()
    toks = tuple(iter_generate(model, prompt_ids, max_new_tokens, params, stop_ids, cancel, position_state, run, prefer_fast))
    text = model.tokenizer.decode([t.id for t in toks])
    return Generation(tuple(int(i) for i in prompt_ids), toks, text, run.finish_reason, run.seconds, run.decoder)


def next_token_logits(model, prompt_ids, position_state: PositionState | None = None, prefer_fast: bool = True) -> torch.Tensor:
    """Logits [vocab] at the end of the prompt through the same decoder generation uses (one forward pass)."""
    if position_state is not None:
        position_state.prompt_len = len(prompt_ids)
    with torch.inference_mode():
        dec = make_decoder(model, len(prompt_ids), position_state, prefer_fast)
        return dec.step(list(prompt_ids)).float().cpu()
