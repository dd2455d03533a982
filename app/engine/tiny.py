"""The tiny random profile: a scaled-down Llama-style HookedTransformer, a byte tokenizer, random TopK SAEs."""
from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from app.engine import compat
from app.engine.topk_sae import make_topk_sae

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def byte_tokenizer():
    """A real HF fast tokenizer over bytes (vocab 256 + 3 specials), no hub needed."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    for s in SPECIALS:
        vocab[s] = len(vocab)
    tk = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tk.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|im_end|>", bos_token="<|endoftext|>",
                                  pad_token="<|endoftext|>", additional_special_tokens=SPECIALS)
    tok.chat_template = CHAT_TEMPLATE
    # transformer-lens re-loads the tokenizer by name_or_path, so give it a folder to load from.
    folder = Path(tempfile.gettempdir()) / "asn-tiny-tokenizer"
    if not (folder / "tokenizer.json").exists():
        tmp = Path(tempfile.mkdtemp(dir=tempfile.gettempdir()))
        tok.save_pretrained(tmp)
        try:
            tmp.rename(folder)
        except OSError:  # another process won the race
            pass
    return PreTrainedTokenizerFast.from_pretrained(folder)


def tiny_config(options: dict, device: str = "cpu") -> "compat.HookedTransformerConfig":
    d = options.get("d_model", 32)
    return compat.HookedTransformerConfig(
        d_model=d, d_head=8, n_heads=d // 8, n_key_value_heads=max(1, d // 16), d_mlp=2 * d,
        n_layers=options.get("n_layers", 3), n_ctx=512, d_vocab=259, act_fn="silu",
        normalization_type="RMS", final_rms=True, gated_mlp=True, positional_embedding_type="rotary",
        rotary_dim=8, rotary_base=10000, rotary_adjacent_pairs=False, eps=1e-5,
        original_architecture="LlamaForCausalLM", tokenizer_prepends_bos=False, default_prepend_bos=False,
        seed=options.get("seed", 0), device=device, dtype=torch.float32, init_weights=True,
    )


def tiny_model(options: dict, device: str = "cpu"):
    """Random-weight HookedTransformer with the byte tokenizer (weights fixed by the seed)."""
    if options.get("arch") == "gemma2":
        return tiny_gemma2_model(options, device)
    torch.manual_seed(options.get("seed", 0))
    cfg = tiny_config(options, device)
    model = compat.HookedTransformer(cfg, tokenizer=byte_tokenizer(), move_to_device=True)
    with torch.no_grad():  # TL's init leaves a tiny residual; scale up so features and lens have structure
        model.W_E.mul_(20.0)
    model.eval()
    return model


def tiny_sae(profile, spec, device: str = "cpu"):
    """Random TopK SAE (unit-norm decoder rows, tied encoder) of the width the profile names."""
    d = profile.options.get("d_model", 32)
    width = profile.options[f"{spec.name}_width"]
    g = torch.Generator().manual_seed(profile.options.get("seed", 0) + (1 if spec.name == "fine" else 2))
    W_dec = torch.randn(width, d, generator=g)
    W_dec /= W_dec.norm(dim=-1, keepdim=True)
    sae = make_topk_sae(W_dec.T.clone(), torch.zeros(width), W_dec, torch.zeros(d), k=4 if spec.name == "coarse" else 8,
                        hook_name=profile.hook_name)
    return sae.to(device)


# ---------------------------------------------------------------- Gemma 2, scaled down (the gemma-2-2b path in tests)
GEMMA2_SCALED = {"d_model": 64, "d_head": 16, "n_heads": 4, "n_key_value_heads": 2, "d_mlp": 128, "n_ctx": 512,
                 "window_size": 8, "d_vocab": 259}


def tiny_gemma2_hf(options: dict):
    """A random transformers Gemma2ForCausalLM with Gemma 2 2B's options and layer count, narrow (seeded)."""
    from transformers import Gemma2Config, Gemma2ForCausalLM

    s = {**GEMMA2_SCALED, **options.get("scaled", {})}
    tl = compat.tl_official_config("gemma-2-2b")
    cfg = Gemma2Config(
        vocab_size=s["d_vocab"], hidden_size=s["d_model"], intermediate_size=s["d_mlp"], num_hidden_layers=tl["n_layers"],
        num_attention_heads=s["n_heads"], num_key_value_heads=s["n_key_value_heads"], head_dim=s["d_head"],
        query_pre_attn_scalar=s["d_head"], sliding_window=s["window_size"], max_position_embeddings=s["n_ctx"],
        rms_norm_eps=tl["eps"], attn_logit_softcapping=tl["attn_scores_soft_cap"],
        final_logit_softcapping=tl["output_logits_soft_cap"], hidden_activation=tl["act_fn"],
        rope_theta=tl["rotary_base"], pad_token_id=0, bos_token_id=256, eos_token_id=258,
    )
    cfg._attn_implementation = "eager"
    torch.manual_seed(options.get("seed", 0))
    hf = Gemma2ForCausalLM(cfg).eval()
    with torch.no_grad():  # HF initialises norms at 0 (weights are 1 + w): give them some spread
        for name, p in hf.named_parameters():
            if "norm" in name:
                p.normal_(0.0, 0.3)
            elif "q_proj" in name or "k_proj" in name:  # scores large enough for the attention soft cap to bite
                p.mul_(12.0)
        hf.model.embed_tokens.weight.mul_(60.0)  # tied unembedding: logits reach the output soft cap
    return hf


def tiny_gemma2_config(options: dict, device: str = "cpu") -> "compat.HookedTransformerConfig":
    """transformer-lens's own gemma-2-2b config (soft caps, local/global attention, pre+post norms, GELU-tanh,
    GQA), with the widths of GEMMA2_SCALED."""
    cfg = {**compat.tl_official_config("gemma-2-2b"), **GEMMA2_SCALED, **options.get("scaled", {})}
    cfg.pop("quantization_method", None)
    cfg.pop("tokenizer_name", None)
    cfg.update(rotary_dim=cfg["d_head"], device=device, dtype=torch.float32, seed=options.get("seed", 0),
               default_prepend_bos=True, tokenizer_prepends_bos=False)
    return compat.HookedTransformerConfig(**cfg)


def tiny_gemma2_model(options: dict, device: str = "cpu"):
    """The random HF Gemma 2 converted by transformer-lens's Gemma converter, with the byte tokenizer."""
    hf = tiny_gemma2_hf(options)
    cfg = tiny_gemma2_config(options, device)
    model = compat.HookedTransformer(cfg, tokenizer=byte_tokenizer(), move_to_device=False)
    model.load_and_process_state_dict(compat.convert_gemma_weights(hf, cfg), fold_ln=False, center_writing_weights=False,
                                      center_unembed=False, fold_value_biases=False)
    return model.to(device).eval()


def gemma2_scaled_profile(widths: tuple[int, int] = (128, 512)):
    """The gemma-2-2b profile (same hook, same Gemma Scope release ids) on the scaled-down random model;
    the SAEs load through sae-lens's Gemma Scope converter with d_in / d_sae overridden."""
    import dataclasses

    from app.engine.profiles import get_profile

    g = get_profile("gemma-2-2b")
    d = GEMMA2_SCALED["d_model"]
    return dataclasses.replace(g, loader="random", options={
        **g.options, "arch": "gemma2",
        "sae_cfg_overrides": {"coarse": {"d_in": d, "d_sae": widths[0]}, "fine": {"d_in": d, "d_sae": widths[1]}}})
