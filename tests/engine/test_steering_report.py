"""docs/steering-experiment.md from per-concept results (app/training/steering_report.py): the answer never says
"no difference" without the smallest detectable one, and the figure has a panel per concept."""
from __future__ import annotations

import json

from app.training import steering_report as R


def _result(concept, detectable, best="fine", mde=0.2):
    table = [{"condition": "none", "arm": "none", "scale": "-", "strength": 0.0, "concept": 0.0, "logprob": -2.0}]
    for arm in ("coarse", "fine", "coarse+fine", "random"):
        for s in (4.0, 8.0):
            table.append({"condition": f"{arm}|add|norm|{s:g}", "arm": arm, "scale": "norm", "strength": s,
                          "concept": 0.1 * s if arm != "random" else 0.0, "logprob": -2.0 - 0.1 * s})
    return {"concept": concept, "concept_name": concept, "contrast_name": "neutral", "anchor": 1, "children": [2, 3],
            "measure": {"name": "zeroshot", "auc": 0.95, "n_validation": [100, 100]}, "table": table,
            "control": {"random_raises": False, "per_strength": [{}, {}]}, "n_prompts": 100, "n_seeds": 2,
            "verdicts": [{"text": f"{concept} verdict", "detectable": detectable, "best": best, "mde": mde}],
            "discovery": {"n_above": 5}, "n_generations": 10, "n_tokens": 100, "wall_s": 1.0, "seconds_sets": 1.0,
            "seconds_generate": 1.0, "seconds_score": 1.0, "tokens_per_s": 10.0, "label": ""}


def test_report_answer_and_figure(tmp_path):
    for c, d, b in (("france", False, "fine"), ("cooking", True, "coarse+fine"), ("programming", False, "coarse")):
        r = _result(c, d, b)
        if c == "cooking":  # generations read back from an earlier run's checkpoint: no generation rate claimed
            r["n_generations_from_checkpoint"] = 10
            r["measure"]["description"] = "zero-shot: a rule only this run used"  # each line quotes its own run's measure
        if c == "programming":  # the measure's own push check fails: not a validated measure
            r["measure"]["pushes"] = {"n_prompts": 16, "raises": True, "per_norm": [
                {"vector_norm": 9.0, "rise": 0.05, "ci": [0.01, 0.09]}, {"vector_norm": 18.0, "rise": 0.0, "ci": [-0.02, 0.02]}]}
        (tmp_path / f"steering-experiment-{c}.json").write_text(json.dumps(r))
    (tmp_path / "steering-experiment-old.json").write_text(json.dumps({"table": []}))  # an old probe-only run: skipped
    assert R.main(["--docs", str(tmp_path)]) == 0
    md = (tmp_path / "steering-experiment.md").read_text()
    assert "coarse+fine is detectably best in 1 (cooking)" in md
    assert "not detectable at this sample size (smallest detectable differences in log-prob 0.200, 0.200" in md
    assert "for 2 of 3 concepts (cooking, france)" in md and "or, where checked, from pushes" in md
    assert "Measure: zero-shot: a rule only this run used; contrast prefaces" in md and "Measure: zeroshot; contrast" in md
    assert "10 of the generations read back from the checkpoint" in md and "generate 1 s at 10.0 tok/s" in md
    assert "pushes along 32 other random directions raise it: yes (+0.050 [+0.010, +0.090], +0.000 [-0.020, +0.020])" in md
    assert "no difference" not in md and "interpolated" in md and "steering-experiment.svg" in md
    svg = (tmp_path / "steering-experiment.svg").read_text()
    assert svg.count("<polyline") == 3 * 4 and ">france<" in svg and ">programming<" in svg
