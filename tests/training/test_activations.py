"""app.training.activations: the HF collector equals transformer-lens's run_with_cache at the hook."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from app.training.activations import collect_activations, collect_activations_hf


def windows(n: int, ctx: int = 32, seed: int = 1) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 97, (n, ctx), generator=g).tolist()


@pytest.mark.parametrize("layer", [0, 2])
def test_hf_collector_equals_transformer_lens(llama_pair, layer, tmp_path):
    hf, tl = llama_pair
    wins = windows(10)
    ref, dropped_ref = collect_activations(tl, wins, f"blocks.{layer}.hook_resid_post", layer, batch_size=3)
    n, dropped = collect_activations_hf(hf, wins, layer, tmp_path / "a.npy", batch_size=4)
    got = np.load(tmp_path / "a.npy")
    assert (n, dropped) == (ref.shape[0], dropped_ref) == (10 * 31, 0)  # position 0 of each window skipped
    assert got.shape == (10 * 31, 64)
    np.testing.assert_allclose(got.astype(np.float32), ref.astype(np.float32), rtol=2e-3, atol=2e-3)
    assert len(hf.model.layers) == 4 and not isinstance(hf.model.norm, torch.nn.Identity)  # model restored


def test_hf_collector_drops_rows_over_max_norm_and_runs_bf16(llama_pair, tmp_path):
    hf, tl = llama_pair
    wins = windows(6, seed=2)
    ref, _ = collect_activations(tl, wins, "blocks.3.hook_resid_post", 3)
    norms = np.linalg.norm(ref.astype(np.float32), axis=1)
    # Cut in the widest gap between the 70th and 90th percentile norms, so fp16 rounding cannot flip a row.
    s = np.sort(norms)
    lo, hi = int(0.7 * len(s)), int(0.9 * len(s))
    j = lo + int(np.argmax(np.diff(s[lo:hi + 1])))
    cut = float((s[j] + s[j + 1]) / 2)
    n, dropped = collect_activations_hf(hf, wins, 3, tmp_path / "a.npy", max_norm=cut)
    assert dropped == int((norms > cut).sum()) and n == ref.shape[0] - dropped
    kept = np.load(tmp_path / "a.npy")[:n].astype(np.float32)
    np.testing.assert_allclose(kept, ref[norms <= cut].astype(np.float32), rtol=2e-3, atol=2e-3)
    n16, _ = collect_activations_hf(hf, wins, 3, tmp_path / "b.npy", dtype=torch.bfloat16)
    b = np.load(tmp_path / "b.npy")[:n16].astype(np.float32)
    rel = np.linalg.norm(b - ref.astype(np.float32), axis=1) / np.linalg.norm(ref.astype(np.float32), axis=1)
    assert np.median(rel) < 0.03  # bf16 compute: ~1% per row
    hf.to(torch.float32)


def test_hf_collector_resumes_where_a_killed_run_checkpointed(llama_pair, tmp_path):
    """A run killed after its first checkpoint, resumed from that checkpoint, writes the rows an unbroken run writes."""
    hf, tl = llama_pair
    wins = windows(11, seed=3)
    ref, _ = collect_activations(tl, wins, "blocks.2.hook_resid_post", 2)
    norms = np.linalg.norm(ref.astype(np.float32), axis=1)
    cut = float(np.sort(norms)[int(0.8 * len(norms))] + 1e-3)  # some rows dropped, so kept != windows * 31
    seen = []

    class Killed(Exception):
        pass

    def checkpoint(done, kept, dropped):
        seen.append((done, kept, dropped))
        raise Killed

    with pytest.raises(Killed):
        collect_activations_hf(hf, wins, 2, tmp_path / "a.npy", batch_size=2, max_norm=cut, checkpoint=checkpoint,
                               checkpoint_every=2)
    assert seen[0][0] == 4 and seen[0][1] + seen[0][2] == 4 * 31
    n, dropped = collect_activations_hf(hf, wins, 2, tmp_path / "a.npy", batch_size=2, max_norm=cut, start=seen[0])
    assert dropped == int((norms > cut).sum()) and n == ref.shape[0] - dropped
    np.testing.assert_allclose(np.load(tmp_path / "a.npy")[:n].astype(np.float32),
                               ref[norms <= cut].astype(np.float32), rtol=2e-3, atol=2e-3)
