"""Re-run comparison (app/explorations_registry.compare_results): what counts as the same result."""
from __future__ import annotations

from app.explorations.registry import compare_results


def test_null_and_missing_fields_compare_equal():
    saved = {"a": 1, "card": None, "rows": [{"x": 1.0, "note": None}]}
    rerun = {"a": 1, "rows": [{"x": 1.0}]}
    assert compare_results(saved, rerun).match and compare_results(rerun, saved).match


def test_a_missing_field_with_a_value_still_differs():
    c = compare_results({"a": 1, "card": {"i": 3}}, {"a": 1})
    assert not c.match and c.first_difference == "result (keys)"
    # a field the re-run has and the snapshot lacks is one a newer app added: what was saved is compared
    assert compare_results({"rows": [{"x": 1.0}]}, {"rows": [{"x": 1.0, "n_above": 0}]}).match
    c = compare_results({"rows": [{"x": 1.0}]}, {"rows": [{"x": 2.0, "n_above": 0}]})
    assert not c.match and c.first_difference == "result.rows[0].x"
    c = compare_results({"g": [{"n_above": 2}]}, {"g": [{"n_above": 3}]})
    assert c.first_difference == "result.g[0].n_above"
