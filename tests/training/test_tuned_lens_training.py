"""The tuned lens's training pieces: the least-squares fit recovers a planted affine map; the per-layer KL used for
the shrinkage choice and the shipped table equals plain torch on a random HF Llama; sinks are left out."""
from __future__ import annotations

import pytest
import torch

from app.engine import tuned_lens as TL
from app.engine.random_models import save_random_hf
from app.training import tuned_lens as T


def test_least_squares_recovers_a_planted_affine_map(monkeypatch):
    """Layer 0's residual maps exactly onto the target: its map comes back; every layer's fit equals numpy's lstsq
    (ridge off: it is 1e-4 of the mean diagonal, which shrinks the bias by ~0.2% here)."""
    import numpy as np

    monkeypatch.setattr(T, "RIDGE", 0.0)
    g = torch.Generator().manual_seed(0)
    n, d = 3, 6
    W, b = torch.randn(d, d, generator=g), torch.randn(d, generator=g)
    batches = []
    for _ in range(4):
        h = torch.randn(n, 50, d, generator=g) * 5
        batches.append(torch.cat([h, (h[0] @ W.T + b)[None]]))
    lens = T.fit_least_squares(((st, None) for st in batches), n, d)
    assert lens.weight[0].numpy() == pytest.approx(W.numpy(), abs=1e-4)
    assert lens.bias[0].numpy() == pytest.approx(b.numpy(), abs=1e-4)
    every = torch.cat(batches, 1).double().numpy()
    for layer in range(n):
        x = np.concatenate([every[layer], np.ones((every.shape[1], 1))], 1)
        sol = np.linalg.lstsq(x, every[n], rcond=None)[0]
        assert lens.weight[layer].numpy() == pytest.approx(sol[:d].T, abs=1e-4)
        assert lens.bias[layer].numpy() == pytest.approx(sol[d], abs=1e-4)


def test_layer_kls_equals_plain_torch_and_sinks_are_left_out(tmp_path):
    from transformers import AutoModelForCausalLM

    folder = save_random_hf("llama", tmp_path / "m")
    hf = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    n, d = hf.config.num_hidden_layers, hf.config.hidden_size
    seqs = [list(range(40, 60)), list(range(70, 82))]
    (stack, logits), = list(T.residuals(hf, seqs, sink_norm=None, batch=8))
    assert stack.shape == (n + 1, 19 + 11, d)  # position 0 of each sequence left out, padding never counted
    g = torch.Generator().manual_seed(1)
    lens = TL.TunedLens(torch.eye(d) + 0.2 * torch.randn(n, d, d, generator=g), torch.randn(n, d, generator=g))
    got = T.layer_kls(hf, stack, logits, lens, 0.5)
    with torch.no_grad():
        out = hf(torch.tensor([seqs[0]]), output_hidden_states=True)
        final = out.logits[0, 1:].log_softmax(-1)
        for layer in range(n):
            A = 0.5 * (lens.weight[layer] - torch.eye(d))
            h = out.hidden_states[layer][0, 1:]
            q = hf.lm_head(hf.model.norm(h + h @ A.T + 0.5 * lens.bias[layer])).log_softmax(-1)
            first = (final.exp() * (final - q)).sum(-1)  # the first sequence's 19 positions
            assert float(first.sum()) == pytest.approx(float(T.layer_kls(hf, stack[:, :19], logits[:19], lens, 0.5)[layer]) * 19, rel=1e-4)
    assert got.shape == (n,) and bool((got > 0).all())
    norms = stack[:n].norm(dim=-1).amax(0)
    cut = float(norms.median())
    (few, _), = list(T.residuals(hf, seqs, sink_norm=cut, batch=8))
    assert few.shape[1] == int((norms <= cut).sum())
