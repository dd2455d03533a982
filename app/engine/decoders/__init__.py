"""Per-architecture KV-cache decoders over a HookedTransformer's own weights, and the dispatcher.

Each decoder has `step(new_ids) -> logits [vocab]` (last position), keeps `pos`, sets `position_state.start`, and
calls the model's HookPoints `hook_embed` (+ `hook_pos_embed` for learned positions) and every block's
`hook_resid_pre` / `hook_resid_mid` / `hook_resid_post`, so steering hooks fire exactly as in TL's forward.
The dispatcher `fast_decoder_class` lives in `app.engine.generation` (beside `make_decoder`, no import cycle)
and is re-exported here. Llama-style: `app.engine.generation.FastLlamaDecoder`; GPT-2: `gpt2.FastGPT2Decoder`; Gemma 2:
`gemma2.FastGemma2Decoder`.
"""
from __future__ import annotations

from app.engine.decoder_common import common_flags_ok
from app.engine.generation import fast_decoder_class

__all__ = ["common_flags_ok", "fast_decoder_class"]
