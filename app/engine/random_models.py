"""Small random HF causal LMs of each supported architecture (tests, benchmarks, profile checks without a hub)."""
from __future__ import annotations

from pathlib import Path

import torch

ARCHS = ("llama", "gpt2", "gemma2", "qwen2")


def random_hf_model(arch: str, d_model: int = 64, n_layers: int = 4, n_heads: int = 4, n_kv: int = 2,
                    vocab: int = 259, n_ctx: int = 512, window: int = 8, seed: int = 0, spread: bool = True):
    """A seeded random transformers model (eager attention, fp32); vocab 259 fits the byte tokenizer.

    spread: norms get random gains and Gemma 2's attention/logit soft caps are reached, so every option matters."""
    import transformers as T

    d_head = d_model // n_heads
    if arch in ("llama", "qwen2"):  # the same config fields; Qwen2's usual norm epsilon
        config_cls, cls, eps = ((T.LlamaConfig, T.LlamaForCausalLM, 1e-5) if arch == "llama"
                                else (T.Qwen2Config, T.Qwen2ForCausalLM, 1e-6))
        cfg = config_cls(vocab_size=vocab, hidden_size=d_model, intermediate_size=2 * d_model,
                         num_hidden_layers=n_layers, num_attention_heads=n_heads, num_key_value_heads=n_kv,
                         max_position_embeddings=n_ctx, rms_norm_eps=eps, tie_word_embeddings=False,
                         bos_token_id=256, eos_token_id=258, pad_token_id=256)
    elif arch == "gpt2":
        cfg = T.GPT2Config(vocab_size=vocab, n_embd=d_model, n_layer=n_layers, n_head=n_heads, n_positions=n_ctx,
                           bos_token_id=256, eos_token_id=258, pad_token_id=256, tie_word_embeddings=False)
        cls = T.GPT2LMHeadModel
    elif arch == "gemma2":
        cfg = T.Gemma2Config(vocab_size=vocab, hidden_size=d_model, intermediate_size=2 * d_model,
                             num_hidden_layers=n_layers, num_attention_heads=n_heads, num_key_value_heads=n_kv,
                             head_dim=d_head, query_pre_attn_scalar=d_head, sliding_window=window,
                             max_position_embeddings=n_ctx, attn_logit_softcapping=50.0, final_logit_softcapping=30.0,
                             hidden_activation="gelu_pytorch_tanh", pad_token_id=0, bos_token_id=256, eos_token_id=258,
                             tie_word_embeddings=False)
        cls = T.Gemma2ForCausalLM
    else:
        raise ValueError(f"arch {arch!r}; expected one of {ARCHS}")
    cfg._attn_implementation = "eager"
    torch.manual_seed(seed)
    hf = cls(cfg).eval()
    if spread:
        with torch.no_grad():
            for name, p in hf.named_parameters():
                if "norm" in name or name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")):
                    p.normal_(0.0 if arch == "gemma2" else 1.0, 0.3)  # Gemma stores norm gains as w - 1
                elif arch == "gemma2" and ("q_proj" in name or "k_proj" in name):
                    p.mul_(12.0)  # attention scores reach the soft cap
            # untied output head, scaled so logits spread (Gemma 2: up to the output soft cap); tied heads with a
            # loud embedding just echo the last token
            hf.get_input_embeddings().weight.mul_(1.0 if arch == "gemma2" else 20.0)
            hf.lm_head.weight.mul_(250.0 if arch == "gemma2" else 20.0)
    return hf


def save_random_hf(arch: str, folder: Path, **kw) -> Path:
    """random_hf_model saved with save_pretrained, plus the byte tokenizer, into folder (an HF model folder)."""
    from app.engine.tiny import byte_tokenizer

    folder = Path(folder)
    hf = random_hf_model(arch, **kw)
    hf.save_pretrained(folder)
    tok = byte_tokenizer()
    tok.save_pretrained(folder)
    return folder
