"""A tiny engine of its own with a planted split (coarse feature C's direction written as two rotated halves
in the fine SAE) and an atlas built on it, for the split-map API / page / browser tests (never in data/)."""
from __future__ import annotations

import numpy as np
import torch

HALVES = (10, 11)  # fine rows that become C's children


def planted_engine():
    """-> (engine, C): a fresh tiny Engine (not the shared fixture) with the split planted and an atlas attached."""
    from app.engine.engine import Engine, weights_fingerprint
    from tests.atlas_fixtures import tiny_atlas

    eng = Engine.build("tiny", device="cpu", wait_timeout_s=10.0)
    probe = tiny_atlas(eng, n_windows=6)
    dens = np.asarray(probe.density["coarse"])
    C = int(np.argsort(-dens)[len(dens) // 8])  # a feature that fires often, but not the most common one
    cs, fs = eng.saes["coarse"], eng.saes["fine"]
    u = cs.W_dec[C].detach().float()
    u = u / u.norm()
    g = torch.Generator().manual_seed(5)
    v = torch.randn(u.shape, generator=g)
    v = v - (v @ u) * u
    v = v / v.norm()
    th = np.deg2rad(30)
    with torch.no_grad():
        for row, sign in zip(HALVES, (1.0, -1.0)):
            w = float(np.cos(th)) * u + sign * float(np.sin(th)) * v
            fs.W_dec[row] = w
            fs.W_enc[:, row] = w * 1.5  # tied encoder, a little stronger so the halves win their top-k
    eng.fingerprint = weights_fingerprint(*eng.saes.values())
    eng.atlas = tiny_atlas(eng)
    eng.atlas_status = "ok"
    return eng, C
