"""TopK SAE trainer with sparse backward passes (CPU-friendly), producing a sae-lens TopKSAE.

Only the encoder's forward matmul is dense: the TopK gradient reaches k latents per token, so
the encoder and decoder gradients are sparse (k x d_in per token) and computed with sparse mm.
Maths follows Gao et al. 2024 (TopK, unit-norm decoder rows, AuxK loss on dead latents).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from app.engine.topk_sae import make_topk_sae


@dataclass(frozen=True)
class TrainConfig:
    d_sae: int
    k: int = 32
    lr: float = 4e-4
    batch_size: int = 2048
    total_tokens: int = 4_000_000
    k_aux: int = 128
    aux_coeff: float = 1 / 32
    dead_after_tokens: int = 250_000
    warmup_steps: int = 50
    decay_frac: float = 0.2
    seed: int = 0
    # dtype of the dense encoder matmul that only *selects* the top-k latents; the selected pre-activations are
    # then recomputed exactly in fp32. bfloat16 runs the matmul ~2.3x faster on CPUs with avx512_bf16.
    select_dtype: str = "float32"


@dataclass
class TrainResult:
    sae: object  # compat.TopKSAE
    tokens: int
    seconds: float
    history: list = field(default_factory=list)  # (tokens, fvu, dead_frac)


def _sparse_t_mm(idx: torch.Tensor, vals: torch.Tensor, dense: torch.Tensor, n_rows: int) -> torch.Tensor:
    """S^T @ dense where S is [B, n_rows] with k nonzeros per row (idx, vals: [B, k]); -> [n_rows, d]."""
    B, k = idx.shape
    cols = torch.arange(B).repeat_interleave(k)
    S_t = torch.sparse_coo_tensor(torch.stack([idx.reshape(-1), cols]), vals.reshape(-1), (n_rows, B), check_invariants=False)
    return torch.sparse.mm(S_t, dense)



def dead_mask(last_fired: torch.Tensor, tokens: int, window: int) -> torch.Tensor:
    """Latents that have not fired in the last `window` tokens."""
    return (tokens - last_fired) > window


def _gather_dot(W: torch.Tensor, idx: torch.Tensor, g: torch.Tensor, chunk: int = 512) -> torch.Tensor:
    """out[b, j] = W[idx[b, j]] . g[b] for W [F, d], idx [B, k], g [B, d]; chunked to bound memory."""
    out = torch.empty(idx.shape, dtype=g.dtype)
    for s in range(0, idx.shape[0], chunk):
        out[s: s + chunk] = torch.bmm(W[idx[s: s + chunk]], g[s: s + chunk].unsqueeze(-1)).squeeze(-1)
    return out


def _sparse_mm(idx: torch.Tensor, vals: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """S @ W where S is [B, F] with k nonzeros per row (idx, vals: [B, k]) and W [F, d]; -> [B, d]."""
    B, k = idx.shape
    rows = torch.arange(B).repeat_interleave(k)
    S = torch.sparse_coo_tensor(torch.stack([rows, idx.reshape(-1)]), vals.reshape(-1), (B, W.shape[0]),
                                check_invariants=False)
    return torch.sparse.mm(S, W)


def sae_grads(x, params, k: int, var: float, dead: torch.Tensor, k_aux: int, aux_coeff: float,
              select_dtype: torch.dtype = torch.float32):
    """Loss gradients for a TopK SAE (MSE / var + aux_coeff * AuxK), computed sparsely.

    x: [B, d]; params: (W_enc [d, F], b_enc [F], W_dec [F, d], b_dec [d]).
    select_dtype: dtype of the dense matmul that picks the top-k (and AuxK) latents; their values are exact fp32.
    Returns ((gW_enc, gb_enc, gW_dec, gb_dec), (fvu, latents that fired, n_dead)).
    """
    W_enc, b_enc, W_dec, b_dec = params
    B = x.shape[0]
    F = W_dec.shape[0]
    xc = x - b_dec
    if select_dtype == torch.float32:
        pre = torch.addmm(b_enc, xc, W_enc)  # [B, F] dense: the one expensive matmul
        vals, idx = pre.topk(k, dim=-1, sorted=False)
    else:
        pre = torch.addmm(b_enc.to(select_dtype), xc.to(select_dtype), W_enc.to(select_dtype))
        _, idx = pre.topk(k, dim=-1, sorted=False)
        W_enc_t = W_enc.T.contiguous()
        vals = _gather_dot(W_enc_t, idx, xc) + b_enc[idx]  # exact pre-activations of the selected latents
    a = vals.relu()
    x_hat = _sparse_mm(idx, a, W_dec) + b_dec
    err = x_hat - x
    fvu = ((err ** 2).sum() / B).item() / var
    fired = idx[a > 0].unique()

    g_xhat = 2 * err / (B * var)  # d(mse/var)/dx_hat
    g_pre = _gather_dot(W_dec, idx, g_xhat) * (vals > 0)
    gW_dec = _sparse_t_mm(idx, a, g_xhat, F)  # [F, d]
    gW_enc = _sparse_t_mm(idx, g_pre, xc, F).T  # [d, F]
    gb_enc = torch.zeros(F).index_add_(0, idx.reshape(-1), g_pre.reshape(-1))

    n_dead = int(dead.sum())
    if n_dead > 0 and aux_coeff > 0:
        ka = min(k_aux, n_dead)
        av, ai = pre.masked_fill(~dead, float("-inf")).topk(ka, dim=-1, sorted=False)
        if select_dtype != torch.float32:
            av = _gather_dot(W_enc_t, ai, xc) + b_enc[ai]
        aa = av.relu()
        resid = (x - x_hat).detach()  # what the main latents missed
        e_aux = _sparse_mm(ai, aa, W_dec) - resid
        denom = ((resid - resid.mean(0)) ** 2).sum() / B + 1e-8
        g_eaux = aux_coeff * 2 * e_aux / (B * denom)
        g_aa = _gather_dot(W_dec, ai, g_eaux) * (av > 0)
        gW_dec = gW_dec + _sparse_t_mm(ai, aa, g_eaux, F)
        gW_enc = gW_enc + _sparse_t_mm(ai, g_aa, xc, F).T
        gb_enc.index_add_(0, ai.reshape(-1), g_aa.reshape(-1))
    # b_dec enters the encoder as x - b_dec: its gradient there is -W_enc @ (summed pre-activation grads) = -W_enc @ gb_enc.
    gb_dec = g_xhat.sum(0) - W_enc @ gb_enc
    return (gW_enc, gb_enc, gW_dec, gb_dec), (fvu, fired, n_dead)


def train_topk_sae(acts: np.ndarray, cfg: TrainConfig, hook_name: str, progress=None, init=None) -> TrainResult:
    """Train a TopK SAE on activations [n_tokens, d_in] (fp16/fp32 array) -> sae-lens TopKSAE (fp32).

    `init`: an SAE (same width) to continue training from, with a fresh learning-rate schedule.
    """
    g = torch.Generator().manual_seed(cfg.seed)
    n, d = acts.shape
    F = cfg.d_sae
    # Data statistics from a sample: b_dec at the mean (the mean is most of the residual's norm here).
    sample = torch.from_numpy(np.asarray(acts[torch.randperm(n, generator=g)[: min(n, 50_000)].sort().values.numpy()], dtype=np.float32))
    mean = sample.mean(0)
    var = ((sample - mean) ** 2).sum(-1).mean().item()  # E||x - mean||^2: FVU denominator

    W_dec = torch.randn(F, d, generator=g)
    W_dec /= W_dec.norm(dim=-1, keepdim=True)
    W_enc = W_dec.T.clone().contiguous()  # [d, F]
    b_enc = torch.zeros(F)
    b_dec = mean.clone()
    # Scale the tied init so the initial reconstruction has about the data's norm.
    with torch.no_grad():
        xc = sample[:4096] - b_dec
        pre = xc @ W_enc
        v, i = pre.topk(cfg.k, dim=-1)
        rec = (v.relu().unsqueeze(-1) * W_dec[i]).sum(1)
        scale = (xc.norm(dim=-1).mean() / rec.norm(dim=-1).mean().clamp_min(1e-6)).item()
        W_enc *= scale
    if init is not None:
        with torch.no_grad():
            W_enc, b_enc = init.W_enc.detach().float().clone(), init.b_enc.detach().float().clone()
            W_dec, b_dec = init.W_dec.detach().float().clone(), init.b_dec.detach().float().clone()
            W_dec /= W_dec.norm(dim=-1, keepdim=True)
    params = [W_enc, b_enc, W_dec, b_dec]
    m = [torch.zeros_like(p) for p in params]
    v2 = [torch.zeros_like(p) for p in params]
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    last_fired = torch.zeros(F, dtype=torch.long)  # token count when each latent last fired

    steps = max(1, cfg.total_tokens // cfg.batch_size)
    history = []
    t0 = time.perf_counter()
    tokens = 0
    perm = torch.randperm(n, generator=g)
    pos = 0
    for step in range(steps):
        if pos + cfg.batch_size > n:
            perm, pos = torch.randperm(n, generator=g), 0
        idx_rows = perm[pos: pos + cfg.batch_size].sort().values.numpy()
        pos += cfg.batch_size
        x = torch.from_numpy(np.asarray(acts[idx_rows], dtype=np.float32))
        B = x.shape[0]

        grads, stats = sae_grads(x, params, cfg.k, var, dead_mask(last_fired, tokens + B, cfg.dead_after_tokens),
                                 cfg.k_aux, cfg.aux_coeff, select_dtype=getattr(torch, cfg.select_dtype))
        gW_enc, gb_enc, gW_dec, gb_dec = grads
        fvu, idx_fired, n_dead = stats
        tokens += B
        last_fired[idx_fired] = tokens

        # Remove the gradient component parallel to each (unit-norm) decoder row.
        gW_dec -= (gW_dec * W_dec).sum(-1, keepdim=True) * W_dec

        # ---- Adam with warmup and linear decay at the end
        lr = cfg.lr * min(1.0, (step + 1) / cfg.warmup_steps)
        decay_start = int(steps * (1 - cfg.decay_frac))
        if step >= decay_start:
            lr *= max(0.0, (steps - step) / max(1, steps - decay_start))
        for j, (p, gp) in enumerate(zip(params, (gW_enc, gb_enc, gW_dec, gb_dec))):
            m[j].mul_(beta1).add_(gp, alpha=1 - beta1)
            v2[j].mul_(beta2).addcmul_(gp, gp, value=1 - beta2)
            bc1, bc2 = 1 - beta1 ** (step + 1), 1 - beta2 ** (step + 1)
            p.addcdiv_(m[j] / bc1, (v2[j] / bc2).sqrt_().add_(eps), value=-lr)
        W_dec /= W_dec.norm(dim=-1, keepdim=True)

        if step % 20 == 0 or step == steps - 1:
            history.append((tokens, fvu, n_dead / F))
        if progress is not None:
            progress.update(B)
            progress.set_postfix(fvu=f"{fvu:.3f}", dead=f"{n_dead / F:.2%}", refresh=False)

    sae = make_topk_sae(W_enc, b_enc, W_dec, b_dec, cfg.k, hook_name)
    return TrainResult(sae, tokens, time.perf_counter() - t0, history)
