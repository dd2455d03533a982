"""Any local Hugging Face folder or GGUF file, converted to a HookedTransformer; the tiny profile's random model."""
from __future__ import annotations

import time
from pathlib import Path

import torch

from app.engine import compat
from app.engine.loading.base import LoadedModel, ProfileUnavailable
from app.engine.profiles import Profile


# ---------------------------------------------------------------- any local HF folder / GGUF file
def _rope_theta(hf_cfg, default: float = 10000.0) -> float:
    theta = getattr(hf_cfg, "rope_theta", None)
    if theta is None:
        params = getattr(hf_cfg, "rope_parameters", None) or {}
        theta = params.get("rope_theta", default) if isinstance(params, dict) else default
    return float(theta)


def tl_config_dict_from_hf(hf_cfg, max_ctx: int = 4096) -> dict:
    """transformer-lens config fields for an HF config (Llama, Mistral, Qwen2, GPT-2, Gemma 2), read from the
    config itself, never from the model's name (TL's own table keys on names; local folders have none)."""
    arch = (hf_cfg.architectures or [type(hf_cfg).__name__.replace("Config", "ForCausalLM")])[0]
    if arch == "GPT2LMHeadModel":
        return dict(
            d_model=hf_cfg.n_embd, d_head=hf_cfg.n_embd // hf_cfg.n_head, n_heads=hf_cfg.n_head,
            d_mlp=hf_cfg.n_inner or 4 * hf_cfg.n_embd, n_layers=hf_cfg.n_layer, n_ctx=min(hf_cfg.n_positions, max_ctx),
            eps=hf_cfg.layer_norm_epsilon, d_vocab=hf_cfg.vocab_size, act_fn=hf_cfg.activation_function,
            use_attn_scale=getattr(hf_cfg, "scale_attn_weights", True), use_local_attn=False,
            scale_attn_by_inverse_layer_idx=hf_cfg.scale_attn_by_inverse_layer_idx, normalization_type="LN",
            original_architecture=arch)
    d_head = getattr(hf_cfg, "head_dim", None) or hf_cfg.hidden_size // hf_cfg.num_attention_heads
    common = dict(
        d_model=hf_cfg.hidden_size, d_head=d_head, n_heads=hf_cfg.num_attention_heads,
        n_key_value_heads=(hf_cfg.num_key_value_heads if hf_cfg.num_key_value_heads != hf_cfg.num_attention_heads else None),
        d_mlp=hf_cfg.intermediate_size, n_layers=hf_cfg.num_hidden_layers,
        n_ctx=min(hf_cfg.max_position_embeddings, max_ctx), eps=hf_cfg.rms_norm_eps, d_vocab=hf_cfg.vocab_size,
        normalization_type="RMS", positional_embedding_type="rotary", rotary_adjacent_pairs=False, rotary_dim=d_head,
        rotary_base=_rope_theta(hf_cfg), final_rms=True, gated_mlp=True, original_architecture=arch)
    if arch in ("LlamaForCausalLM", "MistralForCausalLM"):
        out = {**common, "act_fn": hf_cfg.hidden_act}
        compat.apply_llama3_rope_scaling(out, hf_cfg)
        if arch == "MistralForCausalLM" and getattr(hf_cfg, "sliding_window", None):
            out.update(window_size=hf_cfg.sliding_window, use_local_attn=True, attn_types=["local"] * hf_cfg.num_hidden_layers)
        return out
    if arch == "Qwen2ForCausalLM":
        return {**common, "act_fn": hf_cfg.hidden_act, "n_key_value_heads": hf_cfg.num_key_value_heads}
    if arch == "Gemma2ForCausalLM":
        layer_types = getattr(hf_cfg, "layer_types", None) or (
            ["sliding_attention", "full_attention"] * ((hf_cfg.num_hidden_layers + 1) // 2))[: hf_cfg.num_hidden_layers]
        return {**common, "act_fn": hf_cfg.hidden_activation, "n_key_value_heads": hf_cfg.num_key_value_heads,
                "rotary_base": int(_rope_theta(hf_cfg)), "use_attn_scale": True,
                "attn_scale": float(hf_cfg.query_pre_attn_scalar) ** 0.5, "window_size": hf_cfg.sliding_window,
                "use_local_attn": True,
                "attn_types": ["local" if t == "sliding_attention" else "global" for t in layer_types],
                "attn_scores_soft_cap": float(hf_cfg.attn_logit_softcapping or -1.0),
                "output_logits_soft_cap": float(hf_cfg.final_logit_softcapping or -1.0),
                "use_normalization_before_and_after": True}
    raise ProfileUnavailable(
        f"architecture {arch} is not mapped for local folders (Llama, Mistral, Qwen2, GPT-2, Gemma 2 are); "
        f"use its transformer-lens name with source = \"pretrained\"")


def hooked_from_hf(hf, tokenizer, device: str = "cpu", dtype: torch.dtype = torch.float32, max_ctx: int = 4096,
                   prepend_bos: bool = False):
    """A HookedTransformer holding an HF causal LM's weights (TL's own weight converter for the architecture)."""
    d = tl_config_dict_from_hf(hf.config, max_ctx)
    cfg = compat.HookedTransformerConfig(**d, device=device, dtype=dtype, tokenizer_prepends_bos=False,
                                         default_prepend_bos=prepend_bos)
    state = compat.convert_hf_weights(hf, cfg)
    model = compat.HookedTransformer(cfg, tokenizer=tokenizer, move_to_device=False)
    model.load_and_process_state_dict(state, fold_ln=False, center_writing_weights=False, center_unembed=False,
                                      fold_value_biases=False)
    model.to(device).eval()
    compat.speed_up_cpu_matmuls(model)
    return model


def _local_model(profile: Profile, device: str) -> LoadedModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.perf_counter()
    path = Path(profile.model_name)
    dtype = getattr(torch, profile.dtype_for(device))
    if not path.exists():
        raise ProfileUnavailable(f"profile {profile.name}: model {'file' if profile.loader == 'gguf_file' else 'folder'} "
                                 f"{path} does not exist")
    folder, kw = (path.parent, {"gguf_file": path.name}) if profile.loader == "gguf_file" else (path, {})
    try:
        tok = AutoTokenizer.from_pretrained(folder, **kw)
    except Exception as exc:
        raise ProfileUnavailable(f"profile {profile.name}: no tokenizer at {path} ({type(exc).__name__}); "
                                 f"save one there with tokenizer.save_pretrained") from None
    try:
        hf = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, **kw).eval()
    except Exception as exc:
        raise ProfileUnavailable(f"profile {profile.name}: cannot load {path} with transformers "
                                 f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]})") from None
    model = hooked_from_hf(hf, tok, device, dtype, max_ctx=int(profile.options.get("n_ctx", 4096)),
                           prepend_bos=profile.prepend_bos)
    del hf
    return LoadedModel(model, tok, getattr(tok, "chat_template", None), time.perf_counter() - t0, profile.loader)


def _random_model(profile: Profile, device: str) -> LoadedModel:
    from app.engine.tiny import tiny_model

    t0 = time.perf_counter()
    model = tiny_model(profile.options, device=device)
    return LoadedModel(model, model.tokenizer, getattr(model.tokenizer, "chat_template", None), time.perf_counter() - t0, "random")
