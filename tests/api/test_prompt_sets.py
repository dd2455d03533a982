"""Prompt-set fields shared by discovery and the experiment (app/api/discover/schemas.py): shipped names, pasted
prompts cleaned, each side resolved or a 422 naming the field."""
from __future__ import annotations

import pytest
from fastapi import HTTPException
from pydantic import ValidationError

from app.api.discover.schemas import DiscoverRequest, load_set
from app.api.experiment.schemas import ExperimentRequest


@pytest.mark.parametrize("model,extra", [(DiscoverRequest, {}), (ExperimentRequest, {"anchor": 1})])
def test_unknown_set_and_too_few_prompts_name_the_field(model, extra):
    with pytest.raises(ValidationError) as bad_set:
        model(concept_set="atlantis", **extra)
    err = bad_set.value.errors()[0]
    assert err["loc"] == ("concept_set",) and "unknown prompt set 'atlantis'; shipped: " in err["msg"]
    with pytest.raises(ValidationError) as few:
        model(contrast_prompts=["  one  ", " ", ""], **extra)
    err = few.value.errors()[0]
    assert err["loc"] == ("contrast_prompts",) and "give at least 2 non-empty prompts" in err["msg"]


def test_pasted_prompts_are_stripped_and_sides_resolved():
    req = DiscoverRequest(concept_prompts=[" a ", "", "b"], contrast_set="neutral")
    assert req.resolve() == (["a", "b"], load_set("neutral"))
    exp = ExperimentRequest(anchor=1, eval_prompts=["x ", " y", "z"], n_prompts=2)
    assert exp.resolve() == (load_set("france"), load_set("neutral"), ["x", "y"])
    with pytest.raises(ValidationError) as few_eval:
        ExperimentRequest(anchor=1, eval_prompts=["only one", "  "])
    assert few_eval.value.errors()[0]["loc"] == ("eval_prompts",)


def test_a_side_with_neither_prompts_nor_a_set_is_a_422():
    with pytest.raises(HTTPException) as missing:
        ExperimentRequest(anchor=1, eval_set=None).resolve()
    assert missing.value.status_code == 422
    assert missing.value.detail == [{"loc": ["body", "eval_prompts"], "msg": "give eval_prompts or a shipped eval_set",
                                     "type": "missing"}]
