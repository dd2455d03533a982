"""KV-cache decoder for Gemma 2: embedding scale (folded into W_E by TL's converter), RMSNorm with the +1 offset
(folded into the gains), pre- and post-norms around attention and MLP, grouped-query attention with rotary,
attention-score soft-capping, alternating local (sliding-window) / global layers, GELU-tanh gated MLP, and
output-logit soft-capping."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from app.engine.decoder_common import KVCacheDecoder, common_flags_ok

ACTS = {"gelu_pytorch_tanh": "tanh", "gelu_new": "tanh", "gelu": "none"}


def supported(model) -> bool:
    cfg = model.cfg
    return (
        cfg.original_architecture == "Gemma2ForCausalLM" and cfg.normalization_type == "RMS" and cfg.final_rms
        and cfg.gated_mlp and cfg.act_fn in ACTS and cfg.positional_embedding_type == "rotary"
        and not cfg.rotary_adjacent_pairs and cfg.rotary_dim == cfg.d_head and cfg.use_normalization_before_and_after
        and common_flags_ok(cfg)
    )


def _rms(x: torch.Tensor, ln) -> torch.Tensor:
    return x / (x.pow(2).mean(-1, keepdim=True) + ln.eps).sqrt() * ln.w


def _softcap(x: torch.Tensor, cap: float) -> torch.Tensor:
    return cap * torch.tanh(x / cap) if cap > 0 else x


class FastGemma2Decoder(KVCacheDecoder):
    """Gemma 2 over the model's weights; calls hook_embed and the residual hook points of every block."""

    def __init__(self, model, max_len: int, position_state=None):
        super().__init__(model, max_len, position_state)
        cfg = model.cfg
        attn0 = model.blocks[0].attn
        if attn0.rotary_cos.shape[0] < max_len:
            raise ValueError(f"rotary table has {attn0.rotary_cos.shape[0]} positions; {max_len} needed")
        self.cos, self.sin = attn0.rotary_cos, attn0.rotary_sin
        self.scale = 1.0 / attn0.attn_scale
        types = cfg.attn_types or ["global"] * cfg.n_layers
        self.window = [cfg.window_size if (cfg.use_local_attn and t == "local") else None for t in types]
        self.attn_cap, self.out_cap = float(cfg.attn_scores_soft_cap), float(cfg.output_logits_soft_cap)
        self.approx = ACTS[cfg.act_fn]

    def _masks(self, p0: int, n: int, device):
        """Additive masks [n, T] for global and for each distinct window (None where nothing is masked)."""
        T = p0 + n
        qpos = torch.arange(p0, T, device=device)[:, None]
        kpos = torch.arange(T, device=device)[None, :]
        out = {}
        for w in set(self.window):
            allowed = kpos <= qpos
            if w is not None:
                allowed = allowed & (kpos > qpos - w)
            out[w] = None if bool(allowed.all()) else torch.zeros(n, T, device=device).masked_fill(~allowed, float("-inf"))
        return out

    def step(self, new_ids) -> torch.Tensor:
        m = self.model
        p0, n, toks = self._begin(new_ids)
        T = p0 + n
        x = m.hook_embed(m.embed(toks))
        H, K, dh = self.n_heads, self.n_kv, self.d_head
        G = H // K
        cos = self.cos[p0:T][:, None, :]  # [n, 1, dh]
        sin = self.sin[p0:T][:, None, :]
        masks = self._masks(p0, n, x.device)
        for i, blk in enumerate(m.blocks):
            x = blk.hook_resid_pre(x)
            h = _rms(x, blk.ln1).reshape(n, -1)
            qkv = torch.addmm(self.w.b_qkv[i], h, self.w.qkv[i])
            q = self._rope(qkv[:, : H * dh].view(n, H, dh), cos, sin)
            k = self._rope(qkv[:, H * dh: (H + K) * dh].view(n, K, dh), cos, sin)
            self.k[i, :, p0:T] = k.transpose(0, 1)
            self.v[i, :, p0:T] = qkv[:, (H + K) * dh:].view(n, K, dh).transpose(0, 1)
            # [K, G*n, dh] queries grouped by their key-value head
            qg = q.view(n, K, G, dh).permute(1, 2, 0, 3).reshape(K, G * n, dh)
            scores = torch.bmm(qg, self.k[i, :, :T].transpose(1, 2)) * self.scale  # [K, G*n, T]
            scores = _softcap(scores, self.attn_cap)
            mask = masks[self.window[i]]
            if mask is not None:
                scores = (scores.view(K, G, n, T) + mask).view(K, G * n, T)
            z = torch.bmm(scores.softmax(-1), self.v[i, :, :T])  # [K, G*n, dh]
            z = z.view(K, G, n, dh).permute(2, 0, 1, 3).reshape(n, H * dh)
            a = blk.attn
            attn_out = torch.addmm(a.b_O, z, a.W_O.reshape(H * dh, -1))
            x = blk.hook_resid_mid(x + _rms(attn_out, blk.ln1_post).view(1, n, -1))
            h = _rms(x, blk.ln2).reshape(n, -1)
            mlp = blk.mlp
            post = F.gelu(h @ mlp.W_gate, approximate=self.approx) * (h @ mlp.W_in) + mlp.b_in
            mlp_out = torch.addmm(mlp.b_out, post, mlp.W_out)
            x = blk.hook_resid_post(x + _rms(mlp_out, blk.ln2_post).view(1, n, -1))
        self.pos = T
        last = _rms(x[:, -1], m.ln_final)
        return _softcap(last @ m.W_U + m.b_U, self.out_cap)[0]


DECODER = FastGemma2Decoder
