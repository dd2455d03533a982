"""app.training.steering_suite: the measure's contrast preface, neutral sentences and another concept's set."""
from __future__ import annotations

import json
from collections import Counter

import pytest

from app.engine.experiment.zeroshot import make_zeroshot
from app.training import steering_suite as S


class Chars:
    """A tokenizer stand-in: one id per character."""

    def encode(self, text, add_special_tokens=False):
        return [ord(c) for c in text]


def test_measure_contrast_is_neutral_and_another_concept_half_and_half():
    for name, (cset, *_rest) in S.CONCEPTS.items():
        texts, label = S.measure_contrast(name)
        other = label.split(" + ")[1]
        assert label.split(" + ")[0] == S.MEASURE_BACKGROUND and other != cset and other in [c[0] for c in S.CONCEPTS.values()]
        neutral, theirs = S.read_set(S.MEASURE_BACKGROUND), S.read_set(other)
        assert sorted(texts) == sorted(neutral + theirs) and not set(texts) & set(S.read_set(cset))
        zs = make_zeroshot(Chars(), S.read_set(cset), texts, k=S.MEASURE_K)
        owner = Counter("neutral" if t in neutral else "other" for t in zs.contrast_examples)
        assert owner == {"neutral": S.MEASURE_K // 2, "other": S.MEASURE_K // 2}


# the shipped results are the last full run's, under the plain mean-difference measure (each JSON's measure says so);
# a re-scoring under the clipped measure failed France (random arm at norm 4, pushes, AUC 0.893), so it is not shipped
OPEN_26 = pytest.mark.xfail(strict=True, reason="issue 26 open: the zero-shot measure against neutral + france is raised "
                            "by the random arm for cooking (norm 8; AUC 0.85) and programming (norms 4 and 8)")


@pytest.mark.parametrize("concept", ["france", pytest.param("cooking", marks=OPEN_26),
                                     pytest.param("programming", marks=OPEN_26)])
def test_the_shipped_result_meets_issue_26s_bars(concept):
    """docs/steering-experiment-<concept>.json: >= 100 held-out prompts, >= 2 seeds, a measure with held-out AUC >= 0.9
    that no random-direction arm raises (recounted here from the table: each random row's interval holds the unsteered
    score), anchored by a Discover GO on the shipped pair."""
    from app.core.settings import ROOT

    r = json.loads((ROOT / "docs" / f"steering-experiment-{concept}.json").read_text())
    assert r["n_prompts"] >= 100 and r["n_seeds"] >= 2 and r["concept"] == concept
    assert r["discovery"]["go"] and r["anchor"] == r["discovery"]["anchor"]
    none = next(row for row in r["table"] if row["arm"] == "none")["concept"]
    rand = [row for row in r["table"] if row["arm"] == "random"]
    assert rand and all(row["concept_ci"][0] <= none <= row["concept_ci"][1] for row in rand)
    assert r["control"]["random_raises"] is False
    assert r["measure"]["auc"] >= 0.9
    assert not (r["measure"].get("pushes") or {}).get("raises")  # nor do pushes along other random directions
