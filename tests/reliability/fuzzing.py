"""Schema-driven fuzzing with schemathesis, in process (ASGI), over every operation the app's OpenAPI lists.

`fuzz(app, positive, negative)` runs, for each operation, up to `positive` schema-conforming and `negative`
schema-violating cases (hypothesis, derandomized) and returns figures plus the failures found:
a response >= 500, a status the schema does not document, or a transport error (the app raised).
New routes are covered automatically: the operations come from /openapi.json when the fuzz runs.
"""
from __future__ import annotations

import collections
import time

import hypothesis
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import status_code_conformance

# Operations whose cases would start long background work over and over (each is still fuzzed, with fewer cases).
HEAVY = ("/api/discover", "/rerun")


def documented(op) -> set[str]:
    return set(op.definition.raw.get("responses", {}))


def negatable(op) -> bool:
    """Whether schemathesis can generate schema-violating input (an unconstrained string path id cannot be)."""
    raw = op.definition.raw
    if "requestBody" in raw:
        return True
    for p in raw.get("parameters", []):
        sch = p.get("schema", {})
        if p.get("in") != "path" or sch.get("type") not in (None, "string") or set(sch) - {"type", "title", "description"}:
            return True
    return False


def cancel_jobs(app) -> None:
    """Cancel background jobs a case started (they would hold the model and the CPU for the next operations)."""
    runner = getattr(app.state, "jobs", None)
    for job in list(getattr(runner, "_jobs", {}).values()):
        if job.active:
            runner.cancel(job.id)


def fuzz(app, positive: int, negative: int, heavy_scale: float = 0.25, time_budget_s: float | None = None,
         request_timeout_s: float = 120.0) -> dict:
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    ops = [r.ok() for r in schema.get_all_operations()]
    statuses: collections.Counter = collections.Counter()
    per_op: dict[str, collections.Counter] = {}
    failures: list[str] = []
    op_seconds: dict[str, float] = {}
    cases = 0
    t0 = time.perf_counter()

    for op in ops:
        label = f"{op.method.upper()} {op.path}"
        per_op[label] = collections.Counter()
        t_op = time.perf_counter()
        docs = documented(op)
        scale = heavy_scale if any(h in op.path for h in HEAVY) else 1.0
        modes = [(GenerationMode.POSITIVE, positive)] + ([(GenerationMode.NEGATIVE, negative)] if negatable(op) else [])
        for mode, n in modes:
            n = max(1, int(round(n * scale)))
            if time_budget_s is not None and time.perf_counter() - t0 > time_budget_s:
                failures.append(f"time budget {time_budget_s}s exhausted before {label} {mode.value}")
                break

            @settings(max_examples=n, deadline=None, derandomize=True, database=None, phases=[Phase.generate],
                      suppress_health_check=list(HealthCheck), verbosity=hypothesis.Verbosity.quiet)
            @given(case=op.as_strategy(generation_mode=mode))
            def run(case):
                nonlocal cases
                cases += 1
                try:
                    resp = case.call(timeout=request_timeout_s)
                except Exception as exc:  # the app raised through the transport: a server error
                    failures.append(f"{label} [{mode.value}] raised {type(exc).__name__}: {exc}"[:400])
                    statuses["exception"] += 1
                    return
                cancel_jobs(app)
                code = resp.status_code
                statuses[code] += 1
                per_op[label][code] += 1
                if code >= 500 and not (code == 503 and resp.headers.get("retry-after")):
                    failures.append(f"{label} [{mode.value}] -> {code}: {resp.text[:300]}\n  {case.as_curl_command()[:400]}")
                elif str(code) not in docs and f"{str(code)[0]}XX" not in docs and "default" not in docs:
                    failures.append(f"{label} [{mode.value}] -> undocumented {code} (documents {sorted(docs)}): "
                                    f"{resp.text[:200]}")
                else:
                    try:  # the same rule through schemathesis' own check, so both readings agree
                        case.validate_response(resp, checks=[status_code_conformance])
                    except Exception as exc:
                        failures.append(f"{label} [{mode.value}] status_code_conformance: {str(exc)[:300]}")

            try:
                run()
                cancel_jobs(app)
            except hypothesis.errors.Unsatisfiable:
                pass  # e.g. no negative case exists for an operation without inputs
        op_seconds[label] = round(time.perf_counter() - t_op, 2)
    return {
        "operations": len(ops),
        "cases": cases,
        "statuses": {str(k): v for k, v in sorted(statuses.items(), key=lambda kv: str(kv[0]))},
        "per_operation": {k: dict(v) for k, v in per_op.items()},
        "seconds_per_operation": op_seconds,
        "failures": failures,
        "responses_5xx_not_503": sum(v for k, v in statuses.items() if isinstance(k, int) and k >= 500 and k != 503),
        "seconds": round(time.perf_counter() - t0, 1),
    }
