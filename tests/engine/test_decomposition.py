"""app/engine/decomposition.py against numpy: correlation, cosine, the chunked scan over all fine features."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from app.engine import decomposition as dec


def test_pearson_matches_numpy_and_constant_columns_are_zero():
    rng = np.random.default_rng(0)
    a = rng.random((40, 5))
    b = np.concatenate([rng.random((40, 6)), a[:, :2] * 3 + 1, np.zeros((40, 1))], axis=1)  # 2 exact copies, 1 constant
    a[:, 4] = 2.5  # a constant coarse column
    got = dec.pearson_columns(torch.tensor(a), torch.tensor(b)).numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        ref = np.corrcoef(a.T, b.T)[:5, 5:]
    ok = np.isfinite(ref)
    np.testing.assert_allclose(got[ok], ref[ok], atol=1e-6)
    assert np.all(got[4] == 0) and np.all(got[:, -1] == 0)  # nan in numpy -> 0 here
    assert got[0, 6] == pytest.approx(1.0) and got[1, 7] == pytest.approx(1.0)


def test_decoder_cosine_matches_numpy():
    rng = np.random.default_rng(1)
    wa, wb = rng.normal(size=(4, 16)), rng.normal(size=(9, 16)) * rng.random((9, 1)) * 5
    ref = (wa / np.linalg.norm(wa, axis=1, keepdims=True)) @ (wb / np.linalg.norm(wb, axis=1, keepdims=True)).T
    np.testing.assert_allclose(dec.decoder_cosine(torch.tensor(wa), torch.tensor(wb)).numpy(), ref, atol=1e-6)


@pytest.mark.parametrize("chunk", [7, 64, 10_000])
def test_scan_cosines_chunked_equals_dense_numpy(chunk):
    rng = np.random.default_rng(2)
    d, F = 12, 300
    W = rng.normal(size=(F, d)).astype(np.float32)
    coarse = rng.normal(size=(3, d)).astype(np.float32)
    W[17] = coarse[0] * 2 + 0.05 * rng.normal(size=d)  # a near copy
    scan = dec.scan_cosines(torch.tensor(coarse), [5, 6, 7], torch.tensor(W), chunk=chunk, floor=0.2, cap=1000, bins=50)
    ref = (coarse / np.linalg.norm(coarse, axis=1, keepdims=True)) @ (W / np.linalg.norm(W, axis=1, keepdims=True)).T
    assert scan.n_fine == F and scan.coarse == (5, 6, 7)
    for j in range(3):
        counts, _ = np.histogram(np.clip(ref[j], -1, 1 - 1e-9), bins=50, range=(-1, 1))
        assert sum(scan.counts[j]) == F
        assert np.abs(np.array(scan.counts[j]) - counts).sum() <= 2  # bin-edge rounding only
        want = sorted(((i, v) for i, v in enumerate(ref[j]) if v >= 0.2), key=lambda t: -t[1])
        assert [i for i, _ in scan.matches[j]] == [i for i, _ in want]
        np.testing.assert_allclose([v for _, v in scan.matches[j]], [v for _, v in want], atol=1e-5)
        assert scan.max_cosine[j] == pytest.approx(ref[j].max(), abs=1e-5)
    assert scan.matches[0][0][0] == 17 and scan.matches[0][0][1] > 0.99


class RecordingRows:
    """A decoder matrix that records how many rows each access reads (the scan must only slice chunks)."""

    def __init__(self, W):
        self.W, self.shape, self.device, self.reads = W, W.shape, W.device, []

    def __getitem__(self, key):
        out = self.W[key]
        self.reads.append(out.shape[0])
        return out


def test_scan_reads_the_fine_decoder_in_chunks():
    """Never more than chunk fine rows at a time: the [n_coarse, F] matrix is never built (262k case in miniature)."""
    d, F, chunk = 64, 50_000, 4096
    W = RecordingRows(torch.randn(F, d))
    scan = dec.scan_cosines(torch.randn(4, d), [0, 1, 2, 3], W, chunk=chunk, floor=0.5)
    assert max(W.reads) == chunk and sum(W.reads) == F and len(W.reads) == -(-F // chunk)
    assert all(sum(c) == F for c in scan.counts)
    assert all(len(m) < 50 for m in scan.matches)  # random directions in 64-d: few above 0.5


@pytest.mark.parametrize("corr,cos,kind", [
    (0.9, 0.8, "blue"), (0.3, 0.3, "blue"), (0.6, 0.05, "red"), (0.6, -0.05, "red"), (0.6, 0.2, "orange"),
    (0.1, 0.5, "orange"), (0.1, 0.1, "grey"), (-0.5, -0.5, "grey"), (0.29, 0.29, "grey"),
])
def test_classify(corr, cos, kind):
    assert dec.classify(corr, cos, cos_threshold=0.3, corr_threshold=0.3, cos_near_zero=0.1) == kind


def test_go_no_go_counts_from_scan():
    scan = dec.CosineScan((1, 2), 100, (), ((), ()), (((3, 0.8), (4, 0.42), (5, 0.34), (6, 0.2)), ((7, 0.47),)), 0.1, (0.8, 0.47))
    g = dec.go_no_go(scan, 0.3)
    assert [(x["coarse"], x["n_above"], x["go"]) for x in g] == [(1, 3, True), (2, 1, False)]
    assert [x["n_above"] for x in dec.go_no_go(scan, 0.4)] == [2, 1]
