"""The lens's unembedding kernel: residual rows -> top-k token probabilities under ln_final + W_U (+ b_U, soft cap),
chunk by chunk, never holding the [rows, vocab] logits (pure computation).

Two paths, same answer within the lens's bar (top-1 agreement with fp32 >= 0.999, |dp| <= 1e-3 on the shown
probabilities; tests/engine/test_lens_precision.py):
- exact fp32: one matmul per chunk, top-k, the normaliser from the row max;
- bf16 (CPUs with bf16 matmul units, `bf16_matmul_fast`): x split into a bf16 head and a bf16 remainder against
  [W_U; W_U] in bf16 (one matmul of 2d, fp32 accumulation inside oneDNN) gives every logit to ~1e-2; the top
  `top + CANDIDATES` of those are rescored in fp32 from W_U (the shown probabilities come from exact logits), the
  rest of the vocabulary only adds to the normaliser, where the bf16 errors are independent and average out.
Splitting x matters: rounding x alone to bf16 shifts every logit of a row together (errors correlated through x)
and moved the normaliser by up to 1 %, i.e. |dp| 4e-3; the split leaves only W_U's own rounding (independent).
"""
from __future__ import annotations

import torch

CANDIDATES = 27  # extra bf16 candidates rescored in fp32 beyond the top k asked (top 5 -> 32)
BF16_ROWS_PER_CHUNK = 64  # [64, vocab] logits (12 MB fp32) stay in cache between the top-k and the exp-sum passes


def bf16_matmul_fast(device) -> bool:
    """Whether bf16 matmuls beat fp32 here: a CPU whose oneDNN has bf16 units (AVX512-BF16 / AMX; this machine's
    bf16 unembedding ran 3-4x faster than fp32), never elsewhere (CUDA's fp32 unembedding is cheap already)."""
    if torch.device(device).type != "cpu" or not torch.backends.mkldnn.is_available():
        return False
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _split_weights(model) -> tuple[torch.Tensor, torch.Tensor]:
    """([W_U; W_U] in bf16 [2d, vocab], W_U^T fp32 contiguous [vocab, d] for the rescoring gathers: the embedding
    itself when tied), kept on the model and rebuilt only when W_U changed (data_ptr / version)."""
    W_U = model.W_U
    key = (W_U.data_ptr(), W_U._version)
    cached = getattr(model, "_asn_lens_bf16", None)
    if cached is not None and len(cached) == 3 and cached[0] == key:
        return cached[1], cached[2]
    with torch.no_grad():
        w = W_U.detach().to(torch.bfloat16)
        W2 = torch.cat([w, w], dim=0).contiguous()
        W_E = getattr(model, "W_E", None)
        tied = W_E is not None and W_E.shape == W_U.T.shape and W_E.dtype == W_U.dtype and W_E.is_contiguous() \
            and bool(torch.equal(W_E.detach(), W_U.detach().T))
        WT = W_E.detach() if tied and W_E is not None else W_U.detach().T.contiguous()
    model._asn_lens_bf16 = (key, W2, WT)
    return W2, WT


def _finish(logits: torch.Tensor, b_U, cap: float) -> torch.Tensor:
    """Bias and output soft cap, as the model's own forward applies them (in place on a float tensor)."""
    if b_U is not None:
        logits = logits.add_(b_U)
    if cap > 0:
        logits = logits.div_(cap).tanh_().mul_(cap)
    return logits


@torch.no_grad()  # display only; rows may be inference tensors (the residual cache) and W_U may require grad
def unembed_top(model, rows: torch.Tensor, top: int, chunk: int, low_precision: bool | None = None,
                ref: tuple[torch.Tensor, ...] | None = None) -> tuple[torch.Tensor, ...]:
    """Rows [N, d] -> (probabilities [N, top], token ids [N, top]), most probable first.

    low_precision: None picks bf16 where `bf16_matmul_fast` (and the model's W_U is fp32), False forces fp32.
    ref: `analysis.lens_reference(...)` of P positions, for rows laid out layer-major over them: a third tensor,
    KL(final || row) in nats [N] = sum p log p - p.logits + logsumexp, with the logsumexp the kernel's own (so the
    bf16 path carries the KL too) and p.logits = x.(W_U p) + b.p exact in fp32 ([chunk, d], no pass over the
    vocabulary). A soft-capped model's logits are not linear in x: there p.logits is read from the chunk's logits,
    so that case takes the exact fp32 path."""
    cfg = model.cfg
    W_U = model.W_U.detach()
    b_U = getattr(model, "b_U", None)
    b_U = None if b_U is None or not bool(b_U.detach().any()) else b_U.detach().float()
    cap = getattr(cfg, "output_logits_soft_cap", -1.0) or -1.0
    vocab = cfg.d_vocab_out
    top = min(top, vocab)
    if low_precision is None:
        low_precision = W_U.dtype == torch.float32 and bf16_matmul_fast(W_U.device)
    K = min(vocab, top + CANDIDATES)
    exact_only = not low_precision or K >= vocab or (ref is not None and cap > 0)
    W2, WT = (None, None) if exact_only else _split_weights(model)
    if W2 is not None:
        chunk = min(chunk, BF16_ROWS_PER_CHUNK)
    vals, idxs, kls = [], [], []
    for s0 in range(0, rows.shape[0], chunk):
        x = rows[s0: s0 + chunk].unsqueeze(0)
        if cfg.normalization_type is not None:
            x = model.ln_final(x)
        x = x[0].to(W_U.dtype)
        pos = None if ref is None else torch.arange(s0, s0 + x.shape[0], device=x.device) % ref[0].shape[0]
        dot = None
        if W2 is None:
            p = ref[0].index_select(0, pos) if ref is not None and pos is not None and cap > 0 else None
            v, i, lse, dot = _exact_chunk(x, W_U, b_U, cap, top, p)
        else:
            v, i, lse = _bf16_chunk(x, WT, W2, b_U, cap, top, K)
        vals.append((v - lse).exp_())
        idxs.append(i)
        if ref is not None and pos is not None:
            if dot is None:  # p . (x W_U + b) = x . (W_U p) + b . p
                dot = (x.float() * ref[2].index_select(0, pos)).sum(-1) + ref[3].index_select(0, pos)
            kls.append((ref[1].index_select(0, pos) - dot + lse[:, 0]).clamp_min_(0.0))
    if not vals:
        empty = (torch.zeros(0, top), torch.zeros(0, top, dtype=torch.int64))
        return empty if ref is None else (*empty, torch.zeros(0))
    out = (torch.cat(vals), torch.cat(idxs))
    return out if ref is None else (*out, torch.cat(kls))


def _exact_chunk(x, W_U, b_U, cap, top, p=None):
    """fp32: one matmul (bias fused), top-k, then the normaliser from the top-1 logit (the row max), exp in place.
    With p [n, vocab] (a soft-capped model's KL reference rows) also p . logits [n], read before the exp."""
    logits = (torch.addmm(b_U, x, W_U) if b_U is not None else x @ W_U).float()
    if cap > 0:
        logits = _finish(logits, None, cap)
    dot = None if p is None else torch.bmm(logits.unsqueeze(1), p.unsqueeze(2)).view(-1)
    v, i = logits.topk(top, dim=-1)
    m = v[:, :1]
    lse = m + logits.sub_(m).exp_().sum(-1, keepdim=True).log_()
    return v, i, lse, dot


def _bf16_chunk(x, WT, W2, b_U, cap, top, K):
    """bf16 logits of the whole vocabulary (split x, see the module docstring), the top K of them rescored in fp32."""
    xf = x.float()
    head = xf.to(torch.bfloat16)
    x2 = torch.cat([head, (xf - head.float()).to(torch.bfloat16)], dim=1)  # [n, 2d]
    approx = x2 @ W2  # [n, vocab] bf16
    if b_U is not None or cap > 0:
        approx = _finish(approx.float(), b_U, cap)
    cv, ci = approx.topk(K, dim=-1)  # candidates
    exact = torch.einsum("nd,nkd->nk", xf, WT.index_select(0, ci.reshape(-1)).view(*ci.shape, -1).float())
    if b_U is not None:
        exact = exact + b_U[ci]
    if cap > 0:
        exact = _finish(exact, None, cap)
    m = exact.max(-1, keepdim=True).values
    z = (approx.float().sub_(m).exp_().sum(-1, keepdim=True) - (cv.float() - m).exp().sum(-1, keepdim=True)
         + (exact - m).exp().sum(-1, keepdim=True))
    v, order = exact.topk(top, dim=-1)
    return v, ci.gather(1, order), m + z.clamp_min(1e-30).log()
