"""The map layout: determinism, the honesty figure against scikit-learn, planted clusters, token placement."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score
from sklearn.neighbors import NearestNeighbors

from app.engine import layout as L

D, C = 32, 6  # tiny profile's d_model; planted clusters
WORDS = ["france", "code", "legal", "music", "sport", "food"]


def planted(seed: int = 0, n_coarse: int = 64, n_fine: int = 512, spread: float = 0.15):
    """Decoder rows drawn around C random directions: (decoders, planted cluster of every row in map order)."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((C, D))
    lab_c, lab_f = rng.integers(0, C, n_coarse), rng.integers(0, C, n_fine)
    dec = {"coarse": centers[lab_c] + spread * rng.standard_normal((n_coarse, D)),
           "fine": centers[lab_f] + spread * rng.standard_normal((n_fine, D))}
    return dec, np.concatenate([lab_c, lab_f])


@pytest.fixture(scope="module")
def built():
    dec, truth = planted()
    labels = {"coarse": [], "fine": []}
    for name, lab in (("coarse", truth[:64]), ("fine", truth[64:])):
        # atlas-like labels: the planted word on 2 of 3 features, a unique token on the others
        labels[name] = [f" {WORDS[c]}" if i % 3 else f"tok{i}" for i, c in enumerate(lab)]
    lay = L.build_layout(dec, seed=0, n_epochs=150, label_fn=lambda s, i: labels[s][i], fingerprint="fp")
    return dec, truth, lay


def test_layout_shape_and_determinism(built):
    dec, _, lay = built
    assert lay.sae_names == ("coarse", "fine") and lay.widths == (64, 512)
    assert lay.xy.shape == (576, 2) and lay.cluster.shape == (576,)
    assert np.isfinite(lay.xy).all()
    again = L.build_layout(dec, seed=0, n_epochs=150)
    np.testing.assert_array_equal(again.xy, lay.xy)
    np.testing.assert_array_equal(again.cluster, lay.cluster)
    other = L.build_layout(dec, seed=1, n_epochs=150)
    assert not np.allclose(other.xy, lay.xy)


def test_preservation_equals_sklearn(built):
    dec, _, lay = built
    X = np.vstack([dec["coarse"], dec["fine"]])
    k = 10
    hi = NearestNeighbors(n_neighbors=k + 1, metric="cosine", algorithm="brute").fit(X).kneighbors(X, return_distance=False)
    lo = NearestNeighbors(n_neighbors=k + 1).fit(lay.xy.astype(np.float64)).kneighbors(lay.xy.astype(np.float64), return_distance=False)
    share = np.mean([len(set(h[1:]) & set(lw[1:])) / k for h, lw in zip(hi, lo)])
    assert lay.preservation == pytest.approx(share, abs=1e-9)
    assert 0.0 < lay.preservation < 1.0


def test_cosine_knn_equals_sklearn():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((300, 24))
    idx, dist = L.cosine_knn(X, 7, block=64)  # several blocks
    nn = NearestNeighbors(n_neighbors=8, metric="cosine", algorithm="brute").fit(X)
    d_ref, i_ref = nn.kneighbors(X)
    np.testing.assert_array_equal(idx, i_ref[:, 1:])
    np.testing.assert_allclose(dist, d_ref[:, 1:], atol=1e-5)


def test_regions_recover_planted_clusters(built):
    _, truth, lay = built
    clustered = lay.cluster >= 0
    assert clustered.mean() > 0.9
    assert adjusted_rand_score(truth[clustered], lay.cluster[clustered]) > 0.95
    assert len(lay.regions) == C
    for r in lay.regions:
        members = np.flatnonzero(lay.cluster == r.id)
        planted_word = WORDS[np.bincount(truth[members]).argmax()]
        assert r.label.split(" · ")[0] == planted_word  # commonest label word of the members
        assert r.size == len(members) and r.n_coarse == int((members < 64).sum())
        assert len(r.hull) >= 4 and r.hull[0] == r.hull[-1]
    assert [r.size for r in lay.regions] == sorted((r.size for r in lay.regions), reverse=True)


def test_region_labels_skip_the_atlas_labels_own_wording():
    """Atlas labels say "(no selective token)" or "(never fires ...)" for features without a name and wrap topic tokens
    in "(in: ...)": those words named most regions ("no · selective · token", "in") instead of what the members share."""
    labels = (["(no selective token)"] * 5 + ["(no selective token) (in: france · paris)"] * 3 + [" cat · dog (in: pets)"] * 2
              + ["(never fires on the atlas corpus)"] * 4 + ["( · the · )"] * 2) + [" the · of"] * 16
    n = len(labels)
    xy = np.random.default_rng(0).uniform(0, 1, (n, 2))
    cl = np.repeat(np.arange(2, dtype=np.int32), 16)
    regs = L.regions(cl, xy, np.zeros(n, dtype=np.int64), lambda r: labels[r])
    assert regs[0].label == "france · paris · cat"
    assert L.label_words("( · the · )") == ["the"] and L.label_words("au · French (in: France)") == ["au", "french", "france"]


def test_region_labels_are_words_the_region_has_more_than_the_map():
    """"the" on every feature's label names no region; a word twice as common in a region as on the map does."""
    words = [["the", "france"], ["the", "paris", "france"], ["the", "france"], ["the", "code"],
             ["the", "code", "def"], ["the", "code"], ["the", "music"], ["the", "music", "france"]]
    cl = np.array([0, 0, 0, 1, 1, 1, 2, 2], dtype=np.int32)
    xy = np.random.default_rng(0).uniform(0, 1, (8, 2))
    regs = L.regions(cl, xy, np.zeros(8, dtype=np.int64), lambda r: " · ".join(words[r]))
    assert [r.label for r in regs] == ["france", "code", "music"]  # 'paris', 'def': on one member only
    assert regs[0].words == (("france", 3),)
    assert L.telling_words(Counter({"the": 3, "france": 3}), 3, Counter({"the": 8, "france": 4}), 8) == {"france": 3}


def test_regions_without_labels_are_numbered():
    dec, _ = planted(seed=2, n_coarse=32, n_fine=200)
    lay = L.build_layout(dec, seed=0, n_epochs=100)
    assert [r.label for r in lay.regions] == [f"cluster {i}" for i in range(len(lay.regions))]


def test_save_load_roundtrip(built, tmp_path):
    _, _, lay = built
    L.save_layout(tmp_path, lay)
    back = L.load_layout(tmp_path)
    np.testing.assert_array_equal(back.xy, lay.xy)
    np.testing.assert_array_equal(back.cluster, lay.cluster)
    assert back.regions == lay.regions and back.preservation == lay.preservation
    assert back.widths == lay.widths and back.fingerprint == "fp" and back.params == lay.params
    assert L.load_layout(tmp_path / "none") is None


def test_token_positions_equal_numpy(built):
    _, _, lay = built
    rng = np.random.default_rng(5)
    acts = {"coarse": np.maximum(rng.standard_normal((7, 64)) - 1.5, 0),
            "fine": np.maximum(rng.standard_normal((7, 512)) - 2.0, 0)}
    acts["coarse"][3] = 0
    acts["fine"][3] = 0  # a token with no active feature has no place
    got = L.token_positions(lay, acts)
    for t in range(7):
        ws, pts = [], []
        for name, off in (("coarse", 0), ("fine", 64)):
            for f in np.flatnonzero(acts[name][t] > 0):
                ws.append(acts[name][t, f])
                pts.append(lay.xy[off + f].astype(np.float64))
        if not ws:
            assert np.isnan(got[t]).all()
            continue
        want = (np.array(ws)[:, None] * np.array(pts)).sum(0) / np.sum(ws)
        np.testing.assert_allclose(got[t], want, rtol=1e-10)
    sparse = {n: [[(int(f), float(a[t, f])) for f in np.flatnonzero(a[t])] for t in range(7)] for n, a in acts.items()}
    sp = L.sparse_token_positions(lay, sparse)
    assert sp[3] is None
    np.testing.assert_allclose([p for p in sp if p is not None], got[[t for t in range(7) if t != 3]], rtol=1e-10)
    only_fine = L.token_positions(lay, {"fine": acts["fine"]})
    f0 = np.flatnonzero(acts["fine"][0])
    np.testing.assert_allclose(only_fine[0], (acts["fine"][0, f0] @ lay.xy[64 + f0]) / acts["fine"][0, f0].sum(), rtol=1e-6)


def test_cosine_to_equals_numpy(built):
    dec, _, _ = built
    got = L.cosine_to(dec, "fine", 17)
    X = np.vstack([dec["coarse"], dec["fine"]])
    v = dec["fine"][17]
    want = X @ v / (np.linalg.norm(X, axis=1) * np.linalg.norm(v))
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert got[64 + 17] == pytest.approx(1.0, abs=1e-6)


def test_region_names_skip_function_words_and_never_repeat():
    """The shipped map named two regions "the · a · is" (function words: more common in those regions than on the map,
    yet naming nothing one can look for). Function words and lone letters never name a region, and two regions whose
    best words are the same get different names: the larger keeps the plain one, the other swaps in its next word."""
    rows = ([" the · a · is · verb · noun · adj"] * 6 + [" the · a · is · verb · noun · adj · past"] * 4  # region 0 (10)
            + [" the · a · is · verb · noun · adj · tense"] * 2 + [" the · a · is · verb · noun · adj"] * 6  # region 1
            + [" x · n · of · paris · france"] * 6  # region 2: lone letters and "of"
            + [" code · def"] * 20)  # the rest of the map (no region)
    n = len(rows)
    cl = np.array([0] * 10 + [1] * 8 + [2] * 6 + [-1] * 20, dtype=np.int32)
    xy = np.random.default_rng(0).uniform(0, 1, (n, 2))
    regs = L.regions(cl, xy, np.zeros(n, dtype=np.int64), lambda r: rows[r])
    names = [r.label for r in regs]
    for r in regs:
        assert not {"the", "a", "is", "of", "x", "n"} & set(r.label.split(" · ")), r.label
        assert all(L.content_word(w) for w, _ in r.words)
    assert names[0] == "adj · noun · verb" and names[1] == "adj · noun · tense", names  # same best three words
    assert names[2] == "france · paris"
    assert len(set(names)) == len(names)
    # words run out: the region id tells them apart
    rows = [" alpha · zeta"] * 6 + [" code"] * 10
    regs = L.regions(np.array([0] * 3 + [1] * 3 + [-1] * 10, dtype=np.int32), np.random.default_rng(1).uniform(0, 1, (16, 2)),
                     np.zeros(16, dtype=np.int64), lambda r: rows[r])
    assert [r.label for r in regs] == ["alpha · zeta", "alpha · zeta (1)"]


def test_search_map_finds_regions_by_word_and_features_by_id(built):
    """A word flies to the regions it names (prefix of a name word), an id like 'fine:12' / 'F-12' to that feature;
    every box holds what it shows."""
    from app.engine.layout import search as S

    _, _, lay = built
    target = next(r for r in lay.regions if not r.label.startswith("cluster"))
    word = target.label.split(" · ")[0]
    got = S.search_map(lay, word[:4].upper() + "  ")
    assert target.id in [r.id for r in got.regions]
    want = sorted((r for r in lay.regions if any(w.startswith(word[:4]) for w in r.label.split(" · ") + [w for w, _ in r.words])),
                  key=lambda r: (-r.size, r.id))
    assert [r.id for r in got.regions] == [r.id for r in want]
    for h in got.regions:  # the box holds the region's drawn shape (its soft hull)
        pts = np.asarray(lay.regions[h.id].hull)
        assert ((pts[:, 0] >= h.box.x0) & (pts[:, 0] <= h.box.x1) & (pts[:, 1] >= h.box.y0) & (pts[:, 1] <= h.box.y1)).all()
    for q in ("fine:12", "F-12", "fine 12", "f#12"):
        hit = S.search_map(lay, q).features[0]
        row = lay.offset("fine") + 12
        assert (hit.sae, hit.index) == ("fine", 12) and (hit.x, hit.y) == pytest.approx(tuple(lay.xy[row]), abs=1e-4)
        assert hit.box.x0 < hit.x < hit.box.x1 and hit.box.y0 < hit.y < hit.box.y1
        assert hit.region == int(lay.cluster[row])
        assert S.search_map(lay, q).regions == ()
    assert S.search_map(lay, "fine:99999").features == ()  # outside the SAE: nothing, no error
    assert S.parse_feature_id("C-1332", ("coarse", "fine")) == ("coarse", 1332) and S.parse_feature_id("paris", ("coarse",)) is None
    # feature hits from elsewhere (the atlas search) keep their order, duplicates and bad ids dropped
    got = S.search_map(lay, "zzz", [("coarse", 5), ("fine", 3), ("coarse", 5), ("fine", 10_000)])
    assert [(f.sae, f.index) for f in got.features] == [("coarse", 5), ("fine", 3)] and got.regions == ()


def test_rename_regions_keeps_the_map_and_names_it_again(built):
    _, _, lay = built
    new = L.rename_regions(lay, lambda s, i: f" the · of · {s}{i % 2}")
    assert np.array_equal(new.xy, lay.xy) and np.array_equal(new.cluster, lay.cluster)
    assert [r.hull for r in new.regions] == [r.hull for r in lay.regions]
    assert all("the" not in r.label.split(" · ") for r in new.regions)


def test_the_shipped_map_names_no_region_by_function_words_and_none_twice():
    """data/atlas/smollm2-135m/layout.npz as shipped had "the · a · is" twice, "to · the · in", "be · have · will"."""
    from pathlib import Path

    lay = L.load_layout(Path(__file__).resolve().parents[2] / "data" / "atlas" / "smollm2-135m")
    if lay is None:
        pytest.skip("no shipped map")
    names = [r.label for r in lay.regions]
    assert len(set(names)) == len(names), names
    for n in names:
        assert all(L.content_word(w) for w in n.split(" · ")), n


