"""app.training.compare_pairs: the HF + plain-torch numbers equal the project's own evaluation (sae-lens encode on
transformer-lens activations) on the same weights and windows."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from app.training import compare_pairs as C
from app.training.evaluate import ce_loss_recovered, reconstruction_metrics


def random_topk_sae(d_in: int, d_sae: int, k: int, seed: int):
    from sae_lens import TopKSAE, TopKSAEConfig

    torch.manual_seed(seed)
    sae = TopKSAE(TopKSAEConfig(d_in=d_in, d_sae=d_sae, k=k, dtype="float32", device="cpu"))
    with torch.no_grad():  # unit decoder rows, tied encoder: reconstructions of the right scale
        sae.W_dec.copy_(torch.nn.functional.normalize(torch.randn_like(sae.W_dec), dim=-1))
        sae.W_enc.copy_(sae.W_dec.T)
        sae.b_enc.copy_(torch.randn_like(sae.b_enc) * 0.1)
        sae.b_dec.zero_()
    return sae


def test_hf_plain_torch_numbers_equal_the_projects_evaluation(llama_pair, tmp_path):
    hf, tl = llama_pair
    hf.to(torch.float32)
    g = torch.Generator().manual_seed(4)
    windows = torch.randint(0, 97, (6, 32), generator=g).tolist()
    layer, hook = 2, "blocks.2.hook_resid_post"
    saes = {"a": random_topk_sae(64, 48, 4, 1), "b": random_topk_sae(64, 96, 8, 2)}
    for name, sae in saes.items():
        sae.save_model(tmp_path / name)
    pairs = {name: C.topk_weights(tmp_path / name) for name in saes}
    with torch.inference_mode():  # fp32 rows at positions >= 1 (the collector's fp16 rounding would blur the check)
        _, cache = tl.run_with_cache(torch.tensor(windows), names_filter=hook, stop_at_layer=layer + 1)
    acts = cache[hook][:, 1:].reshape(-1, 64).numpy()
    norms = np.linalg.norm(acts, axis=1)
    s = np.sort(norms)
    sink = float((s[-3] + s[-2]) / 2)  # the two largest rows count as sinks: left out of both
    got = C.evaluate_set(hf, windows, layer, pairs, special=set(), sink_norm=sink)
    kept = acts[norms <= sink]
    assert got["tokens"] == kept.shape[0] == 6 * 31 - 2
    mean = torch.from_numpy(kept).mean(0)
    ce = ce_loss_recovered(tl, windows, hook, saes, mean, max_norm=sink)
    assert got["ce_clean"] == pytest.approx(ce["ce_clean"], abs=1e-4)
    assert got["ce_mean_ablation"] == pytest.approx(ce["ce_mean_ablation"], abs=2e-3)
    for name, sae in saes.items():
        m = reconstruction_metrics(sae, kept)
        assert got[name]["explained_variance"] == pytest.approx(m["explained_variance"], abs=2e-3)
        assert np.isfinite(got[name]["ce_loss_recovered"])
        assert got[name]["mean_l0"] == pytest.approx(m["mean_l0"], abs=0.05)
        assert got[name]["ce_with_sae"] == pytest.approx(ce[name]["ce_with_sae"], abs=2e-3)
        assert got[name]["ce_loss_recovered"] == pytest.approx(ce[name]["ce_loss_recovered"], abs=5e-3)
    assert got["a"]["explained_variance"] != pytest.approx(got["b"]["explained_variance"], abs=1e-3)
