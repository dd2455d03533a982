"""Stitching on a prompt: the coarse reconstruction with a feature's term replaced by its children's."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Stitching:
    """Coarse reconstruction vs the same with coarse feature c's term swapped for its children's fine terms."""

    coarse: int
    children: tuple[int, ...]
    positions: tuple[int, ...]  # prompt positions spliced (non-sink)
    coarse_act: tuple[float, ...]  # c's activation per spliced position
    children_act: tuple[float, ...]  # Σ children activations per spliced position
    rel_error_coarse: float  # Σ||x - x_hat||² / Σ||x||² over spliced positions
    rel_error_stitched: float
    rel_error_per_pos: tuple[tuple[float, float], ...]  # (coarse, stitched) ||x - x_hat|| / ||x|| per spliced position
    next_clean: tuple[tuple[int, float], ...]  # top next tokens after the prompt (id, prob)
    next_coarse: tuple[tuple[int, float], ...]  # with the coarse reconstruction spliced in
    next_stitched: tuple[tuple[int, float], ...]
    kl_coarse: float  # KL(clean || spliced) at the last position, nats
    kl_stitched: float


def stitched_reconstruction(x: torch.Tensor, coarse_sae, fine_sae, c: int, children) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """x [n, d] -> (coarse x_hat, stitched x_hat, c's activation [n], children's activations [n, k]).

    stitched = coarse x_hat - a_c · W_dec_coarse[c] + Σ_children a_f · W_dec_fine[f] (fine SAE's own encoding)."""
    a = coarse_sae.encode(x.to(coarse_sae.W_dec.dtype))
    x_hat = coarse_sae.decode(a).float()
    idx = torch.as_tensor(list(children), dtype=torch.long)
    b = fine_sae.encode(x.to(fine_sae.W_dec.dtype))[:, idx].float() if idx.numel() else torch.zeros(x.shape[0], 0)
    stitched = x_hat - a[:, c:c + 1].float() * coarse_sae.W_dec[c].float()
    if idx.numel():
        stitched = stitched + b @ fine_sae.W_dec[idx].float()
    return x_hat, stitched, a[:, c].float(), b


def make_splice_hook(replacements: dict[int, torch.Tensor], mask: torch.Tensor):
    """Forward hook: batch row b's masked positions are replaced by replacements[b] ([n_masked, d])."""

    def splice_hook(resid: torch.Tensor, hook=None) -> torch.Tensor:
        out = resid.clone()
        for b, rep in replacements.items():
            out[b, mask] = rep.to(out.dtype)
        return out

    return splice_hook


def stitch_on_prompt(model, coarse_sae, fine_sae, hook_name: str, token_ids, c: int, children,
                     sink_norm: float | None = None, top: int = 5) -> Stitching:
    """Splice the coarse reconstruction and the stitched one into the residual at the hook (non-sink positions:
    analysis.sink_mask) and compare the next-token distributions after the prompt with the clean run."""
    from app.engine.analysis.core import _final_logits, make_store_hook, sink_mask

    toks = torch.tensor([list(token_ids)] * 3, device=model.cfg.device)
    store: dict = {}
    layer = int(hook_name.split(".")[1])
    with model.hooks(fwd_hooks=[(hook_name, make_store_hook(store, "x"))]):
        model(toks[:1], stop_at_layer=layer + 1, attention_mask=torch.ones_like(toks[:1]))
    x = store["x"][0].float()
    keep = ~sink_mask(model, token_ids, x, sink_norm).to(x.device)
    xk = x[keep]
    x_hat, stitched, a_c, b = stitched_reconstruction(xk, coarse_sae, fine_sae, c, children)
    den = (xk ** 2).sum().clamp_min(1e-12)
    err_c = float(((xk - x_hat) ** 2).sum() / den)
    err_s = float(((xk - stitched) ** 2).sum() / den)
    xn = xk.norm(dim=-1).clamp_min(1e-12)
    per_pos = tuple((float(p), float(q)) for p, q in zip((xk - x_hat).norm(dim=-1) / xn, (xk - stitched).norm(dim=-1) / xn))
    hook = make_splice_hook({1: x_hat, 2: stitched}, keep)
    with model.hooks(fwd_hooks=[(hook_name, hook)]):
        final = model(toks, stop_at_layer=model.cfg.n_layers, attention_mask=torch.ones_like(toks))
    logp = _final_logits(model, final[:, -1:])[:, -1].float().log_softmax(-1)  # [3, vocab]
    p0 = logp[0].exp()
    kl = [float((p0 * (logp[0] - logp[i])).sum()) for i in (1, 2)]

    def topn(lp):
        v, i = lp.exp().topk(min(top, lp.shape[-1]))
        return tuple((int(t), float(p)) for p, t in zip(v.tolist(), i.tolist()))

    return Stitching(c, tuple(int(f) for f in children), tuple(int(p) for p in torch.nonzero(keep).flatten().tolist()),
                     tuple(a_c.tolist()), tuple(b.sum(-1).tolist()) if b.numel() else tuple(0.0 for _ in range(xk.shape[0])),
                     err_c, err_s, per_pos, topn(logp[0]), topn(logp[1]), topn(logp[2]), kl[0], kl[1])
