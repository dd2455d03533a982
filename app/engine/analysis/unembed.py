"""The lens's unembedding kernel: residual rows -> top-k token probabilities under ln_final + W_U (+ b_U, soft cap),
chunk by chunk, never holding the [rows, vocab] logits (pure computation).

Two paths, same answer within the lens's bar (top-1 agreement with fp32 >= 0.999, |dp| <= 1e-3 on the shown
probabilities; tests/engine/test_lens_precision.py):
- exact fp32: one matmul per chunk, top-k, the normaliser from the row max;
- bf16 (CPUs with bf16 matmul units, `bf16_matmul_fast`): x split into a bf16 head and a bf16 remainder against
  [W_U; W_U] in bf16 (one matmul of 2d, fp32 accumulation inside oneDNN) gives every logit to ~1e-2; the top
  `top + CANDIDATES` of those are rescored in fp32 from W_U (the shown probabilities come from exact logits), the
  rest of the vocabulary only adds to the normaliser, where the bf16 errors are independent and average out.
- int8 (x86 CPUs with VNNI, `int8_matmul_fast`; preferred there): W_U quantised per vocabulary entry (absmax / 127),
  x split the same way into an int8 head and an int8 remainder, each with its own row scale; one int8 matmul of
  the 2n rows with int32 accumulation (torch._int_mm) gives every logit to ~1e-2 again, and the same fp32 rescoring
  of the top candidates follows.
Splitting x matters: rounding x alone to bf16 shifts every logit of a row together (errors correlated through x)
and moved the normaliser by up to 1 %, i.e. |dp| 4e-3; the split leaves only W_U's own rounding (independent).
"""
from __future__ import annotations

import functools
from pathlib import Path

import torch

CANDIDATES = 59  # low-precision candidates rescored in fp32 beyond the top k (top 5 -> 64; with 32 the int8 KL missed its 2e-3 bar: 2.07e-3, with 64 9.8e-4)
BF16_ROWS_PER_CHUNK = 64  # [64, vocab] logits (12 MB fp32) stay in cache between the top-k and the exp-sum passes
# int8: the int32 products of 2 x 64 rows (25 MB) and their fp32 logits. A 64-token lens (1,984 rows) took 370-400 ms
# at 64 rows, 390-440 at 32, 400-430 at 96-128; with a combine that held two more fp32 [n, vocab] buffers, 64 rows
# took twice as long as 32 (fresh pages for every chunk's buffers)
INT8_ROWS_PER_CHUNK = 64


def bf16_matmul_fast(device) -> bool:
    """Whether bf16 matmuls beat fp32 here: a CPU whose oneDNN has bf16 units (AVX512-BF16 / AMX; this machine's
    bf16 unembedding ran 3-4x faster than fp32), never elsewhere (CUDA's fp32 unembedding is cheap already)."""
    if torch.device(device).type != "cpu" or not torch.backends.mkldnn.is_available():
        return False
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


@functools.cache  # a fact about the machine, read once
def _cpu_has_vnni() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return " avx512_vnni" in flags or " avx_vnni" in flags


def int8_matmul_fast(device) -> bool:
    """Whether int8 matmuls with int32 accumulation (torch._int_mm) are fast here: an x86 CPU with VNNI. On this
    machine (AVX512-VNNI and -BF16) one chunk's matmul took 7.9 ms in int8 against 18 ms in split bf16, and a
    64-token lens 370-400 ms against 436-456 ms."""
    return torch.device(device).type == "cpu" and hasattr(torch, "_int_mm") and _cpu_has_vnni()


def _rescoring_rows(model, W_U: torch.Tensor) -> torch.Tensor:
    """W_U^T fp32 contiguous [vocab, d] for the rescoring gathers: the embedding itself when tied."""
    W_E = getattr(model, "W_E", None)
    tied = W_E is not None and W_E.shape == W_U.T.shape and W_E.dtype == W_U.dtype and W_E.is_contiguous() \
        and bool(torch.equal(W_E.detach(), W_U.detach().T))
    return W_E.detach() if tied and W_E is not None else W_U.detach().T.contiguous()


def _cached_on_model(model, attr: str, build):
    """build(W_U) -> a tuple of tensors derived from W_U, kept on the model under attr and rebuilt only when W_U
    changed (data_ptr / version)."""
    W_U = model.W_U
    key = (W_U.data_ptr(), W_U._version)
    cached = getattr(model, attr, None)
    if cached is not None and cached[0] == key:
        return cached[1]
    with torch.no_grad():
        value = build(W_U.detach())
    setattr(model, attr, (key, value))
    return value


def _split_weights(model) -> tuple[torch.Tensor, torch.Tensor]:
    """([W_U; W_U] in bf16 [2d, vocab], W_U^T fp32 [vocab, d])."""
    def build(W_U):
        w = W_U.to(torch.bfloat16)
        return torch.cat([w, w], dim=0).contiguous(), _rescoring_rows(model, W_U)

    return _cached_on_model(model, "_asn_lens_bf16", build)


def _int8_weights(model) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(W_U in int8 [d, vocab], its per-entry scale [vocab] fp32, W_U^T fp32 [vocab, d])."""
    def build(W_U):
        W = W_U.float()
        scale = W.abs().amax(0).clamp_min(1e-30) / 127.0
        return torch.round(W / scale).to(torch.int8).contiguous(), scale, _rescoring_rows(model, W_U)

    return _cached_on_model(model, "_asn_lens_int8", build)


def pick_precision(W_U: torch.Tensor, low_precision: bool | str | None) -> str:
    """The unembedding path: "fp32", "bf16" or "int8". None picks the fastest this CPU has for an fp32 W_U (int8
    with VNNI, else bf16 with bf16 units, else fp32); False is fp32; True is bf16; "bf16" / "int8" force one."""
    if low_precision is None:
        if W_U.dtype != torch.float32:
            return "fp32"
        return "int8" if int8_matmul_fast(W_U.device) else "bf16" if bf16_matmul_fast(W_U.device) else "fp32"
    if low_precision is False:
        return "fp32"
    if low_precision is True:
        return "bf16"
    if low_precision not in ("bf16", "int8"):
        raise ValueError(f"low_precision: {low_precision!r}")
    return str(low_precision)


def _finish(logits: torch.Tensor, b_U, cap: float) -> torch.Tensor:
    """Bias and output soft cap, as the model's own forward applies them (in place on a float tensor)."""
    if b_U is not None:
        logits = logits.add_(b_U)
    if cap > 0:
        logits = logits.div_(cap).tanh_().mul_(cap)
    return logits


@torch.no_grad()  # display only; rows may be inference tensors (the residual cache) and W_U may require grad
def unembed_top(model, rows: torch.Tensor, top: int, chunk: int, low_precision: bool | str | None = None,
                ref: tuple[torch.Tensor, ...] | None = None) -> tuple[torch.Tensor, ...]:
    """Rows [N, d] -> (probabilities [N, top], token ids [N, top]), most probable first.

    low_precision: see `pick_precision` (None: the fastest path this CPU has; False: exact fp32).
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
    path = pick_precision(W_U, low_precision)
    K = min(vocab, top + CANDIDATES)
    if K >= vocab or (ref is not None and cap > 0):
        path = "fp32"
    W2 = WT = Wq = sw = None
    if path == "bf16":
        W2, WT = _split_weights(model)
    elif path == "int8":
        Wq, sw, WT = _int8_weights(model)
    if path != "fp32":
        chunk = min(chunk, INT8_ROWS_PER_CHUNK if path == "int8" else BF16_ROWS_PER_CHUNK)
    vals, idxs, kls = [], [], []
    for s0 in range(0, rows.shape[0], chunk):
        x = rows[s0: s0 + chunk].unsqueeze(0)
        if cfg.normalization_type is not None:
            x = model.ln_final(x)
        x = x[0].to(W_U.dtype)
        pos = None if ref is None else torch.arange(s0, s0 + x.shape[0], device=x.device) % ref[0].shape[0]
        dot = None
        if path == "fp32":
            p = ref[0].index_select(0, pos) if ref is not None and pos is not None and cap > 0 else None
            v, i, lse, dot = _exact_chunk(x, W_U, b_U, cap, top, p)
        elif path == "int8":
            v, i, lse = _int8_chunk(x, WT, Wq, sw, b_U, cap, top, K)
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
    return _rescored(approx, xf, WT, b_U, cap, top, K)


def _quantized_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[n, d] fp32 -> (int8 [n, d], scale [n, 1]): symmetric, per row (absmax / 127)."""
    s = x.abs().amax(1, keepdim=True).clamp_min(1e-30) / 127.0
    return torch.round(x / s).to(torch.int8), s


def _int8_chunk(x, WT, Wq, sw, b_U, cap, top, K):
    """int8 logits of the whole vocabulary, the top K rescored in fp32. x = s (q1 + q2 / a): q1 the int8 head at
    the row's absmax scale s, q2 the remainder at a step a times finer (|q2| <= a / 2); one int8 matmul of both with
    int32 accumulation, then q1 W a + q2 W combined in int32 (a as large as int32 allows for this d, at most 127)
    and scaled once: three passes over [n, vocab] instead of six for two float combines."""
    xf = x.float()
    n, d = xf.shape
    a = max(1, min(127, (2 ** 31 - 1) // (d * 127 * 127) - 1))  # |q1 W| a + |q2 W| < 2^31
    q1, s1 = _quantized_rows(xf)
    q2 = torch.round((xf - q1.float() * s1) * (a / s1)).to(torch.int8)
    acc = torch._int_mm(torch.cat([q1, q2]), Wq)  # [2n, vocab] int32
    approx = torch.add(acc[n:2 * n], acc[:n], alpha=a).mul(s1 / a).mul_(sw)  # int32 -> fp32 in the first mul
    if b_U is not None or cap > 0:
        approx = _finish(approx, b_U, cap)
    return _rescored(approx, xf, WT, b_U, cap, top, K)


def _rescored(approx, xf, WT, b_U, cap, top, K):
    """From approximate logits [n, vocab]: the top K candidates' exact fp32 logits, the top `top` of them with their
    ids, and the log normaliser (the exact candidates plus the approximate rest)."""
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
