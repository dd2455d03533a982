"""The independent reference for activation patching: plain torch forward(-pre) hooks on a Hugging Face causal LM
(no transformer-lens), one HF forward per patched cell. Used by tests/engine/test_patching.py and bench/patching.py."""
from __future__ import annotations

import numpy as np
import torch


def hf_logits(ref, ids, hooks=()) -> torch.Tensor:
    """Last-position logits (float64) of one HF forward with the given hook registrars attached."""
    handles = [h() for h in hooks]
    try:
        with torch.no_grad():
            return ref(torch.tensor([list(ids)])).logits[0, -1].double()
    finally:
        for h in handles:
            h.remove()


def hf_module(ref, site: str, layer: int):
    block = ref.model.layers[layer]
    return {"resid_pre": block, "attn_out": block.self_attn, "mlp_out": block.mlp}[site]


def _first(out):
    return out[0] if isinstance(out, tuple) else out


def hf_site_acts(ref, ids, site: str, layers) -> dict:
    """{layer: activation [pos, d]} of one HF run: a decoder layer's input (resid_pre) or a module's output."""
    saved: dict = {}

    def grab_pre(layer):
        def hook(m, args, kwargs):
            saved[layer] = (args[0] if args else kwargs["hidden_states"])[0].clone()
        return lambda: hf_module(ref, site, layer).register_forward_pre_hook(hook, with_kwargs=True)

    def grab_out(layer):
        def hook(m, args, out):
            saved[layer] = _first(out)[0].clone()
        return lambda: hf_module(ref, site, layer).register_forward_hook(hook)

    hf_logits(ref, ids, [(grab_pre if site == "resid_pre" else grab_out)(x) for x in layers])
    return saved


def hf_patched_ld(ref, corrupt, site: str, layer: int, pos: int, source: torch.Tensor, a: int, w: int) -> float:
    """LD of the corrupt run with source[pos] ([pos, d], from the clean run) written at (layer, pos) of `site`."""
    mod = hf_module(ref, site, layer)
    if site == "resid_pre":
        def put_pre(m, args, kwargs):
            hs = (args[0] if args else kwargs["hidden_states"]).clone()
            hs[0, pos] = source[pos]
            return ((hs,) + tuple(args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": hs})

        reg = lambda: mod.register_forward_pre_hook(put_pre, with_kwargs=True)  # noqa: E731
    else:
        def put_out(m, args, out):
            o = _first(out).clone()
            o[0, pos] = source[pos]
            return (o,) + tuple(out[1:]) if isinstance(out, tuple) else o

        reg = lambda: mod.register_forward_hook(put_out)  # noqa: E731
    lg = hf_logits(ref, corrupt, [reg])
    return float(lg[a] - lg[w])


def hf_patch_grid(ref, clean, corrupt, site: str, layers, a: int, w: int) -> tuple[np.ndarray, float, float]:
    """(patched LD [layer, pos], LD clean, LD corrupt), one HF forward per cell."""
    src = hf_site_acts(ref, clean, site, layers)
    lc, lk = (hf_logits(ref, ids) for ids in (clean, corrupt))
    grid = np.array([[hf_patched_ld(ref, corrupt, site, x, p, src[x], a, w) for p in range(len(clean))]
                     for x in layers])
    return grid, float(lc[a] - lc[w]), float(lk[a] - lk[w])
