"""`python -m app map --names-only`: a stored map's regions named again from its atlas, positions untouched."""
from __future__ import annotations

import numpy as np

from app.cli.map import rename
from app.engine import atlas as at
from app.engine.layout import Layout, Region, load_layout, save_layout
from tests.atlas_fixtures import tiny_atlas


def test_names_only_renames_regions_and_keeps_the_map(tiny_engine, tmp_path):
    atlas = tiny_atlas(tiny_engine)
    at.save_atlas(atlas, tmp_path)
    widths = tuple(int(tiny_engine.saes[n].W_dec.shape[0]) for n in ("coarse", "fine"))
    n = sum(widths)
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 10, (n, 2)).astype(np.float32)
    cl = np.where(np.arange(n) < 40, 0, np.where(np.arange(n) < 80, 1, -1)).astype(np.int32)
    old = (Region(0, "the · a · is", 40, 40, (5.0, 5.0), (), (("the", 9),)),
           Region(1, "the · a · is", 40, 24, (5.0, 5.0), (), (("the", 9),)))
    save_layout(tmp_path, Layout(("coarse", "fine"), widths, xy, cl, old, 0.5, {"seed": 0}, atlas.fingerprint, 1.0))
    new, folder = rename("tiny", out=tmp_path, log=lambda *a: None)
    got = load_layout(tmp_path)
    assert np.array_equal(got.xy, xy) and np.array_equal(got.cluster, cl) and got.preservation == 0.5
    names = [r.label for r in got.regions]
    assert names == [r.label for r in new.regions] and len(set(names)) == 2 and "the · a · is" not in names
