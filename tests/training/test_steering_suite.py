"""app.training.steering_suite: the measure's contrast preface, neutral sentences and another concept's set."""
from __future__ import annotations

from collections import Counter

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
