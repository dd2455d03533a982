"""Per-architecture KV-cache decoders over a HookedTransformer's own weights.

Each decoder has `step(new_ids) -> logits [vocab]` (last position), keeps `pos`, sets `position_state.start`, and
calls the model's HookPoints `hook_embed` (+ `hook_pos_embed` for learned positions) and every block's
`hook_resid_pre` / `hook_resid_mid` / `hook_resid_post`, so steering hooks fire exactly as in TL's forward.
Llama-style: `app.engine.generation.FastLlamaDecoder`; GPT-2: `gpt2.FastGPT2Decoder`; Gemma 2:
`gemma2.FastGemma2Decoder`. The dispatcher is `app.engine.generation.fast_decoder_class` (beside `make_decoder`):
this package imports nothing from generation, so generation may import it (no cycle through this `__init__`).
"""
