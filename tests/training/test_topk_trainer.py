"""app.training.topk_trainer: the hand-written sparse gradients against torch autograd."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from app.training.topk_trainer import TrainConfig, dead_mask, make_topk_sae, sae_grads, train_topk_sae


def autograd_loss(x, params, k, var, dead, k_aux, aux_coeff):
    """The loss sae_grads differentiates, written directly (MSE / var + aux_coeff * AuxK)."""
    W_enc, b_enc, W_dec, b_dec = params
    B = x.shape[0]
    xc = x - b_dec
    pre = xc @ W_enc + b_enc
    vals, idx = pre.topk(k, dim=-1)
    x_hat = (vals.relu().unsqueeze(-1) * W_dec[idx]).sum(1) + b_dec
    loss = ((x_hat - x) ** 2).sum() / (B * var)
    if int(dead.sum()) > 0 and aux_coeff > 0:
        resid = (x - x_hat).detach()
        av, ai = pre.masked_fill(~dead, float("-inf")).topk(min(k_aux, int(dead.sum())), dim=-1)
        e_aux = (av.relu().unsqueeze(-1) * W_dec[ai]).sum(1) - resid
        denom = ((resid - resid.mean(0)) ** 2).sum() / B + 1e-8
        loss = loss + aux_coeff * (e_aux ** 2).sum() / (B * denom)
    return loss


@pytest.mark.parametrize("n_dead", [0, 40])
def test_sparse_grads_match_autograd(n_dead):
    g = torch.Generator().manual_seed(1)
    B, d, F, k = 64, 16, 96, 6
    x = torch.randn(B, d, generator=g) * 3 + 1
    W_dec = torch.randn(F, d, generator=g)
    W_dec /= W_dec.norm(dim=-1, keepdim=True)
    params = [W_dec.T.clone() * 0.7, torch.randn(F, generator=g) * 0.1, W_dec, torch.randn(d, generator=g) * 0.2]
    dead = torch.zeros(F, dtype=torch.bool)
    dead[torch.randperm(F, generator=g)[:n_dead]] = True
    var = float(((x - x.mean(0)) ** 2).sum(-1).mean())

    grads, (fvu, fired, nd) = sae_grads(x, [p.clone() for p in params], k, var, dead, k_aux=8, aux_coeff=1 / 32)
    leaves = [p.clone().requires_grad_(True) for p in params]
    autograd_loss(x, leaves, k, var, dead, 8, 1 / 32).backward()

    assert nd == n_dead
    for name, mine, ref in zip(("W_enc", "b_enc", "W_dec", "b_dec"), grads, leaves):
        assert mine.shape == ref.grad.shape, name
        err = (mine - ref.grad).abs().max().item()
        assert err < 1e-4 * max(1.0, ref.grad.abs().max().item()), (name, err)
        assert ref.grad.abs().max().item() > 1e-4, name  # the comparison is not vacuous
    # fvu: the main term alone, recomputed
    pre = (x - params[3]) @ params[0] + params[1]
    v, i = pre.topk(k, dim=-1)
    x_hat = (v.relu().unsqueeze(-1) * params[2][i]).sum(1) + params[3]
    assert fvu == pytest.approx(float(((x_hat - x) ** 2).sum() / B / var), rel=1e-4)
    assert set(fired.tolist()) == set(i[v > 0].unique().tolist())


def test_dead_mask():
    last = torch.tensor([0, 100, 900, 1000])
    assert dead_mask(last, 1000, 500).tolist() == [True, True, False, False]


def test_training_reduces_error_and_keeps_unit_decoder():
    rng = np.random.default_rng(0)
    # data = sparse combination of 32 directions + a large mean (like a residual stream)
    dirs = rng.standard_normal((32, 16)).astype(np.float32)
    codes = (rng.random((6000, 32)) < 0.1) * rng.exponential(2.0, (6000, 32))
    acts = (codes @ dirs + 5.0).astype(np.float16)
    res = train_topk_sae(acts, TrainConfig(d_sae=64, k=4, lr=3e-3, batch_size=256, total_tokens=60_000, warmup_steps=5),
                         "blocks.0.hook_resid_post")
    first, last = res.history[0][1], res.history[-1][1]
    assert last < 0.5 * first, res.history
    norms = res.sae.W_dec.norm(dim=-1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-4)
    # the sae-lens TopKSAE computes what the trainer trained: relu(topk((x - b_dec) W_enc + b_enc))
    x = torch.from_numpy(acts[:100].astype(np.float32))
    pre = (x - res.sae.b_dec) @ res.sae.W_enc + res.sae.b_enc
    v, i = pre.topk(4, dim=-1)
    expect = torch.zeros_like(pre).scatter(-1, i, v.relu())
    torch.testing.assert_close(res.sae.encode(x), expect, atol=1e-5, rtol=1e-5)


def test_make_topk_sae_roundtrip():
    W_dec = torch.randn(8, 4)
    sae = make_topk_sae(W_dec.T.clone(), torch.zeros(8), W_dec, torch.ones(4), k=2, hook_name="blocks.1.hook_resid_post")
    assert sae.cfg.metadata.hook_name == "blocks.1.hook_resid_post"
    assert sae.cfg.k == 2 and sae.cfg.d_sae == 8 and sae.cfg.d_in == 4
    torch.testing.assert_close(sae.W_dec, W_dec)


def test_bf16_selection_gives_the_fp32_gradients_when_it_picks_the_same_latents():
    """select_dtype=bfloat16 only picks the top-k; values and gradients are fp32, so with clear winners they match."""
    g = torch.Generator().manual_seed(3)
    B, d, F, k = 128, 64, 48, 4
    W_dec = torch.linalg.qr(torch.randn(d, d, generator=g))[0][:F].contiguous()  # orthonormal rows: clear winners
    planted = torch.stack([torch.randperm(F, generator=g)[:k] for _ in range(B)])
    coef = 6 + 4 * torch.rand(B, k, generator=g)
    x = (coef.unsqueeze(-1) * W_dec[planted]).sum(1) + 0.01 * torch.randn(B, d, generator=g)
    params = [W_dec.T.clone() * 0.8, torch.zeros(F), W_dec, 0.05 * torch.randn(d, generator=g)]  # imperfect: nonzero grads
    var = float(((x - x.mean(0)) ** 2).sum(-1).mean())
    dead = torch.zeros(F, dtype=torch.bool)
    ref, (fvu_ref, fired_ref, _) = sae_grads(x, [p.clone() for p in params], k, var, dead, 8, 1 / 32)
    low, (fvu_low, fired_low, _) = sae_grads(x, [p.clone() for p in params], k, var, dead, 8, 1 / 32,
                                             select_dtype=torch.bfloat16)
    assert set(fired_ref.tolist()) == set(fired_low.tolist()) == set(planted.unique().tolist())
    assert fvu_low == pytest.approx(fvu_ref, rel=1e-5)
    for a, b in zip(ref, low):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
    assert ref[0].abs().max() > 1e-4  # not vacuous
