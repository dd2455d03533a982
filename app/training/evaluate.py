"""Held-out SAE metrics: explained variance, relative MSE, L0, dead fraction, CE loss recovered."""
from __future__ import annotations

import numpy as np
import torch


@torch.inference_mode()
def reconstruction_metrics(sae, acts: np.ndarray, batch: int = 4096) -> dict:
    """EV = 1 - sum||x - x_hat||^2 / sum||x - mean||^2; rel MSE = sum||x - x_hat||^2 / sum||x||^2; L0; dead."""
    n = acts.shape[0]
    mean = torch.from_numpy(np.asarray(acts[: min(n, 100_000)], dtype=np.float32)).mean(0)
    sse = sst = ss = 0.0
    l0 = 0
    fired = torch.zeros(sae.cfg.d_sae, dtype=torch.bool)
    for s in range(0, n, batch):
        x = torch.from_numpy(np.asarray(acts[s: s + batch], dtype=np.float32)).to(sae.W_dec.dtype)
        f = sae.encode(x)
        x_hat = sae.decode(f)
        sse += ((x - x_hat) ** 2).sum().item()
        sst += ((x - mean) ** 2).sum().item()
        ss += (x ** 2).sum().item()
        nz = f > 0
        l0 += nz.sum().item()
        fired |= nz.any(0)
    return {
        "explained_variance": 1 - sse / sst,
        "relative_mse": sse / ss,
        "mean_l0": l0 / n,
        "dead_fraction": 1 - fired.float().mean().item(),
        "eval_tokens": int(n),
    }


def splice(resid: torch.Tensor, replace_fn, skip_first: int = 1, max_norm: float | None = None) -> torch.Tensor:
    """resid [batch, pos, d] with replace_fn applied at positions >= skip_first whose norm <= max_norm."""
    out = resid.clone()
    mask = torch.zeros(resid.shape[:2], dtype=torch.bool, device=resid.device)
    mask[:, skip_first:] = True
    if max_norm is not None:
        mask &= resid.norm(dim=-1) <= max_norm
    out[mask] = replace_fn(resid[mask])
    return out


@torch.inference_mode()
def ce_loss_recovered(model, windows: list[list[int]], hook_name: str, saes: dict, mean_act: torch.Tensor,
                      batch_size: int = 8, skip_first: int = 1, max_norm: float | None = None) -> dict:
    """CE with each SAE's reconstruction spliced at the hook vs clean and mean-ablated; frac recovered.

    Runs the layers up to the hook once per batch and the rest once per variant (start_at_layer).
    Loss is over next-token predictions from positions >= skip_first.
    """
    layer = int(hook_name.split(".")[1])
    totals = {"clean": 0.0, "mean_ablation": 0.0, **{k: 0.0 for k in saes}}
    count = 0
    for s in range(0, len(windows), batch_size):
        toks = torch.tensor(windows[s: s + batch_size], device=model.cfg.device)
        _, cache = model.run_with_cache(toks, names_filter=hook_name, stop_at_layer=layer + 1)
        resid = cache[hook_name]
        variants = {"clean": resid,
                    "mean_ablation": splice(resid, lambda r: mean_act.to(r).expand_as(r), skip_first, max_norm)}
        for name, sae in saes.items():
            variants[name] = splice(resid, lambda r, sae=sae: sae.decode(sae.encode(r.to(sae.W_dec.dtype))).to(r.dtype),
                                    skip_first, max_norm)
        targets = toks[:, skip_first + 1:]
        for name, r in variants.items():
            logits = model(r, start_at_layer=layer + 1)[:, skip_first:-1]
            lp = torch.log_softmax(logits.float(), -1)
            totals[name] += -lp.gather(-1, targets.unsqueeze(-1)).sum().item()
        count += targets.numel()
    ce = {k: v / count for k, v in totals.items()}
    out = {"ce_clean": ce["clean"], "ce_mean_ablation": ce["mean_ablation"], "ce_tokens": count}
    for name in saes:
        out[name] = {"ce_with_sae": ce[name],
                     "ce_loss_recovered": (ce["mean_ablation"] - ce[name]) / (ce["mean_ablation"] - ce["clean"])}
    return out
