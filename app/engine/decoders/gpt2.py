"""KV-cache decoder for GPT-2-style models: learned positions, LayerNorm, fused QKV with biases, GELU MLP."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from app.engine.decoder_common import KVCacheDecoder, common_flags_ok

ACTS = {"gelu_new": "tanh", "gelu_pytorch_tanh": "tanh", "gelu_fast": "tanh", "gelu": "none"}


def supported(model) -> bool:
    cfg = model.cfg
    return (
        cfg.normalization_type == "LN" and cfg.positional_embedding_type == "standard" and not cfg.gated_mlp
        and cfg.act_fn in ACTS and not cfg.scale_attn_by_inverse_layer_idx and cfg.n_key_value_heads is None
        and not getattr(cfg, "use_local_attn", False) and cfg.output_logits_soft_cap <= 0
        and cfg.attn_scores_soft_cap <= 0 and common_flags_ok(cfg)
    )


def _ln(x: torch.Tensor, ln) -> torch.Tensor:
    """TL's LayerNorm (LN: centred, scaled, then w and b)."""
    return F.layer_norm(x, (x.shape[-1],), ln.w, ln.b, ln.eps)


class FastGPT2Decoder(KVCacheDecoder):
    """GPT-2 over the model's weights; calls hook_embed, hook_pos_embed and the residual hook points."""

    extra_hooks = ("hook_pos_embed",)

    def __init__(self, model, max_len: int, position_state=None):
        if max_len > model.cfg.n_ctx:
            raise ValueError(f"GPT-2 has {model.cfg.n_ctx} learned positions; {max_len} needed")
        super().__init__(model, max_len, position_state)  # no grouped heads (supported): n_kv = n_heads
        self.scale = 1.0 / model.blocks[0].attn.attn_scale
        self.approx = ACTS[model.cfg.act_fn]

    def step(self, new_ids) -> torch.Tensor:
        m = self.model
        p0, n, toks = self._begin(new_ids)
        T = p0 + n
        x = m.hook_embed(m.embed(toks)) + m.hook_pos_embed(m.pos_embed.W_pos[p0:T].unsqueeze(0))
        H, dh = self.n_heads, self.d_head
        mask = torch.ones(n, T, dtype=torch.bool, device=x.device).tril(diagonal=p0) if (n > 1 and p0 > 0) else None
        for i, blk in enumerate(m.blocks):
            x = blk.hook_resid_pre(x)
            h = _ln(x, blk.ln1).reshape(n, -1)
            qkv = torch.addmm(self.w.b_qkv[i], h, self.w.qkv[i])
            q = qkv[:, : H * dh].view(1, n, H, dh).transpose(1, 2)
            self.k[i, :, p0:T] = qkv[:, H * dh: 2 * H * dh].view(n, H, dh).transpose(0, 1)
            self.v[i, :, p0:T] = qkv[:, 2 * H * dh:].view(n, H, dh).transpose(0, 1)
            z = F.scaled_dot_product_attention(q, self.k[i, :, :T].unsqueeze(0), self.v[i, :, :T].unsqueeze(0),
                                               attn_mask=mask, is_causal=(n > 1 and p0 == 0), scale=self.scale)
            a = blk.attn
            attn_out = torch.addmm(a.b_O, z.transpose(1, 2).reshape(n, H * dh), a.W_O.reshape(H * dh, -1))
            x = blk.hook_resid_mid(x + attn_out.view(1, n, -1))
            h = _ln(x, blk.ln2).reshape(n, -1)
            mlp = blk.mlp
            post = F.gelu(torch.addmm(mlp.b_in, h, mlp.W_in), approximate=self.approx)
            x = blk.hook_resid_post(x + torch.addmm(mlp.b_out, post, mlp.W_out).view(1, n, -1))
        self.pos = T
        last = _ln(x[:, -1], m.ln_final)
        return (last @ m.W_U + m.b_U)[0]


DECODER = FastGPT2Decoder
