"""app/engine/layout/values.py (the map's colourings, once in the engine) and app/engine/map_cache.py (the map's
caches on the Engine, not in a module): checked against plain numpy, and per engine."""
from __future__ import annotations

import numpy as np
import pytest

from app.api.map.service import layout_status
from app.engine.layout.values import decoder_cosines, selectivity_vector
from app.engine.map_cache import MAX_FIGURES, MapCache


@pytest.fixture(scope="module")
def lay(tiny_engine):
    got, status = layout_status(tiny_engine)
    assert got is not None, status
    return got


def test_decoder_cosines_match_numpy(tiny_engine, lay):
    w = {n: tiny_engine.saes[n].W_dec.detach().double().numpy() for n in lay.sae_names}
    target = w["fine"][7]
    want = np.concatenate([m @ target / (np.linalg.norm(m, axis=1) * np.linalg.norm(target)) for m in w.values()])
    got = decoder_cosines(lay, tiny_engine.saes, "fine", 7)
    assert got.shape == (lay.n,)
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert decoder_cosines(lay, tiny_engine.saes, "fine", int(w["fine"].shape[0])) is None
    assert decoder_cosines(lay, tiny_engine.saes, "nope", 0) is None


def test_selectivity_vector_places_each_row(lay):
    tables = {"coarse": [{"index": 2, "selectivity": 0.5}, {"index": 10**6, "selectivity": 9.0}],
              "fine": [{"index": 0, "selectivity": -1.25}], "other": [{"index": 0, "selectivity": 3.0}]}
    v = selectivity_vector(lay, tables)
    assert v[lay.offset("coarse") + 2] == 0.5 and v[lay.offset("fine")] == -1.25
    assert np.isnan(v).sum() == lay.n - 2


def test_the_map_caches_live_on_each_engine(tiny_engine, lay):
    from app.web.map_pages import figure_for

    fig = figure_for(tiny_engine, None, lay, "cluster", "both", None, None)
    assert figure_for(tiny_engine, None, lay, "cluster", "both", None, None) is fig  # kept on this engine
    assert any(k[0] == "memory" for k in tiny_engine.map_cache.layouts) and tiny_engine.map_cache.figures
    assert MapCache().figures == {} and MapCache().layouts == {}  # a new engine's cache starts empty


def test_only_the_last_figures_are_kept():
    c = MapCache()
    for i in range(MAX_FIGURES + 3):
        c.figure(i, lambda i=i: {"i": i})
    assert list(c.figures) == list(range(3, MAX_FIGURES + 3))
    assert c.figure(3, lambda: {"new": True}) == {"i": 3}  # a kept one is reused, not rebuilt
