"""Per-architecture KV-cache decoders over a HookedTransformer's own weights, and the dispatcher.

Each decoder has `step(new_ids) -> logits [vocab]` (last position), keeps `pos`, sets `position_state.start`, and
calls the model's HookPoints `hook_embed` (+ `hook_pos_embed` for learned positions) and every block's
`hook_resid_pre` / `hook_resid_mid` / `hook_resid_post`, so steering hooks fire exactly as in TL's forward.
Llama-style: `app.engine.generation.FastLlamaDecoder`; GPT-2: `gpt2.FastGPT2Decoder`; Gemma 2:
`gemma2.FastGemma2Decoder`.
"""
from __future__ import annotations


def fast_decoder_class(model):
    """The fast decoder class for the model's architecture and options, or None (-> transformer-lens's forward)."""
    from app.engine.decoders import gemma2, gpt2
    from app.engine.generation import FastLlamaDecoder, fast_path_supported

    if fast_path_supported(model):
        return FastLlamaDecoder
    for mod in (gpt2, gemma2):
        if mod.supported(model):
            return mod.DECODER
    return None


def common_flags_ok(cfg) -> bool:
    """Options none of the fast decoders implement (they fall back to transformer-lens's forward)."""
    return (not cfg.use_attn_result and not cfg.use_split_qkv_input and not cfg.use_attn_in
            and not cfg.use_hook_mlp_in and not cfg.parallel_attn_mlp and not cfg.attn_only
            and not getattr(cfg, "use_qk_norm", False) and not getattr(cfg, "load_in_4bit", False)
            and getattr(cfg, "n_devices", 1) == 1 and not getattr(cfg, "use_hook_tokens", False))
