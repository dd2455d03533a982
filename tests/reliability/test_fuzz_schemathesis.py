"""Property-based API fuzzing (schemathesis, in process) over every operation in the app's OpenAPI schema.

Figures (test-artifacts/reliability/fuzz_*.json): cases run, statuses seen, failures. Both runs require
0 responses >= 500 (other than 503 + Retry-After, which is the documented "busy" answer) and every status
documented in the schema. The default run is small (a few cases per operation); the slow run has >= 1,500.
"""
from __future__ import annotations

import pytest

from tests.reliability.conftest import assert_clean, build_app, report
from tests.reliability.fuzzing import fuzz


def _run(tiny_engine, tmp_path, name, positive, negative, min_cases):
    from fastapi.testclient import TestClient

    app = build_app(tiny_engine, tmp_path)
    with TestClient(app):  # lifespan: store opened, engine attached
        figures = fuzz(app, positive=positive, negative=negative)
        runner = getattr(app.state, "jobs", None)
        if runner is not None:
            runner.shutdown()
    report(name, figures)
    assert figures["operations"] >= 3, "the schema lists almost no operations"
    assert not figures["failures"], "\n".join(figures["failures"][:20])
    assert figures["responses_5xx_not_503"] == 0
    assert figures["cases"] >= min_cases, figures["cases"]
    import time

    t0 = time.time()
    while tiny_engine.busy and time.time() - t0 < 30:  # a cancelled job finishes its batch
        time.sleep(0.05)
    assert_clean(tiny_engine)
    return figures


def test_fuzz_every_operation_quick(tiny_engine, tmp_path):
    figures = _run(tiny_engine, tmp_path, "fuzz_quick", positive=3, negative=3, min_cases=40)
    # every operation was reached at least once, and the validation layer answered some negative cases
    assert all(sum(c.values()) >= 1 for c in figures["per_operation"].values()), figures["per_operation"]
    assert figures["statuses"].get("422", 0) > 0


@pytest.mark.slow
def test_fuzz_every_operation_1500(tiny_engine, tmp_path):
    _run(tiny_engine, tmp_path, "fuzz_full", positive=70, negative=70, min_cases=1500)
