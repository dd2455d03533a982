"""A sae-lens TopK SAE from raw tensors (the tiny profile's random SAEs and the trainer's result share it)."""
from __future__ import annotations

import torch

from app.engine import compat


def make_topk_sae(W_enc, b_enc, W_dec, b_dec, k: int, hook_name: str):
    """Wrap raw tensors (W_enc [d, F], W_dec [F, d]) as a sae-lens TopKSAE."""
    d, F = W_enc.shape
    sae_cfg = compat.TopKSAEConfig(d_in=d, d_sae=F, k=k, dtype="float32", device="cpu", apply_b_dec_to_input=True)
    sae_cfg.metadata.hook_name = hook_name
    sae = compat.TopKSAE(sae_cfg)
    with torch.no_grad():
        sae.W_enc.copy_(W_enc)
        sae.b_enc.copy_(b_enc)
        sae.W_dec.copy_(W_dec)
        sae.b_dec.copy_(b_dec)
    return sae
