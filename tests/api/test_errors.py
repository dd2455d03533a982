"""app/api/errors.py: one check and one wording for a feature index outside its SAE, wherever a route takes one."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
from fastapi import HTTPException


def saes(**widths):
    return {name: SimpleNamespace(cfg=SimpleNamespace(d_sae=w)) for name, w in widths.items()}


def test_in_range_gives_the_width_and_out_of_range_names_it():
    from app.api.errors import check_feature_index

    s = saes(coarse=64, fine=512)
    assert check_feature_index(s, "fine", 511, ["path", "index"]) == 512
    assert check_feature_index(s, "coarse", 0, ["path", "index"]) == 64
    for bad in (512, -1):
        with pytest.raises(HTTPException) as e:
            check_feature_index(s, "fine", bad, ["body", "steer", 0, "index"])
        assert e.value.status_code == 404
        assert e.value.detail == [{"loc": ["body", "steer", 0, "index"], "type": "out_of_range",
                                   "msg": f"feature index {bad} does not exist: SAE fine has 512 features (0..511)"}]
    with pytest.raises(HTTPException) as e:
        check_feature_index(s, "coarse", 64, ["body", "index"], status=422)
    assert e.value.status_code == 422 and e.value.detail[0]["loc"] == ["body", "index"]
    assert "(0..63)" in e.value.detail[0]["msg"]
    with pytest.raises(HTTPException) as e:
        check_feature_index(s, "middle", 1, ["path", "index"])
    assert e.value.status_code == 404 and e.value.detail == "no SAE named 'middle'; this profile has coarse, fine"
