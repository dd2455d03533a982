"""Fixtures for the training tests: a small random HF Llama and the same weights as a HookedTransformer."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def llama_pair():
    """(HF LlamaForCausalLM, HookedTransformer) with the same random weights (4 layers, d_model 64, vocab 97)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from app.engine import compat
    from app.engine.loading import llama_tl_config

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=97, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      rope_theta=10000.0, rms_norm_eps=1e-5, tie_word_embeddings=True)
    hf = LlamaForCausalLM(cfg).eval()
    tl_cfg = llama_tl_config(hf.config)
    tl = compat.HookedTransformer(tl_cfg, move_to_device=False)
    tl.load_and_process_state_dict(compat.convert_llama_weights(hf, tl_cfg), fold_ln=False,
                                   center_writing_weights=False, center_unembed=False, fold_value_biases=False)
    return hf, tl.eval()
