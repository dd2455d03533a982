"""Views that can be saved, re-run and forked: kind -> (request model, compute function, page).

A leaf module (imports nothing from app.api / app.web). Views are registered in ONE place,
`app/core/registration.py` `build_views()`, into a `ViewRegistry` that lives on `app.state.views`:

    views.register("steering", SteerRequest, run_steer, urls.CODECS["steering"],
                   response_model=SteerResponse, example={"prompt": "hello", ...})

`page` is the view's address codec (app/web/codecs.py: `path`, `write(inputs)`, `read(params)`; Fork links through
its `write`), or a bare page path for a view without an address. `run_fn(engine, settings, request) -> response` must be the
same function the JSON route and the HTML fragment use (so a re-run on the same profile reproduces the saved
result exactly; timing fields such as `seconds` / `tokens_per_s`, or those named in `volatile=`, are left out of
that comparison). `example` is a small valid request (tiny profile) used by the tests that check save -> open ->
identical rendering for every kind. Registering a kind twice raises.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from pydantic import BaseModel

KIND_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


@dataclass(frozen=True)
class ViewSpec:
    kind: str
    request_model: type[BaseModel]
    run_fn: Callable[[Any, Any, Any], Any]
    page_path: str
    response_model: type[BaseModel] | None = None
    example: dict | None = None
    label: str = ""
    codec: Any = None  # the view's address codec (app/web/codecs.Codec: path, write, read), None without one
    volatile: tuple[str, ...] = ()  # result fields that differ run to run (timings): not compared


class ViewRegistry:
    """kind -> ViewSpec for one app; filled once by app.core.registration.build_views."""

    def __init__(self) -> None:
        self._views: dict[str, ViewSpec] = {}

    def register(self, kind: str, request_model: type[BaseModel], run_fn: Callable, page: Any, *,
                 response_model: type[BaseModel] | None = None, example: dict | None = None,
                 label: str | None = None, volatile: tuple[str, ...] = ()) -> ViewSpec:
        """Make `kind` re-runnable and forkable at `page` (its address codec, or a bare path); ValueError for a bad
        kind or a kind registered already."""
        codec = None if isinstance(page, str) else page
        page_path = page if codec is None else codec.path
        if not KIND_RE.match(kind):
            raise ValueError(f"bad kind {kind!r}: lowercase letters, digits and _ (at most 32)")
        if not page_path.startswith("/"):
            raise ValueError("page_path must be a path on this server, e.g. /generate")
        if kind in self._views:
            raise ValueError(f"view {kind!r} is registered twice")
        spec = ViewSpec(kind, request_model, run_fn, page_path, response_model, example,
                        label or kind.replace("_", " "), codec, tuple(volatile))
        self._views[kind] = spec
        return spec

    def get(self, kind: str) -> ViewSpec | None:
        return self._views.get(kind)

    def all(self) -> dict[str, ViewSpec]:
        return dict(self._views)

    def __contains__(self, kind: object) -> bool:
        return kind in self._views

    def __iter__(self):
        return iter(self._views)

    def compared_fields(self, kind: str, result: dict) -> dict:
        spec = self._views.get(kind)
        return compared_fields(result, spec.volatile if spec else ())

    def compare(self, kind: str, saved: dict, rerun: dict) -> Comparison:
        spec = self._views.get(kind)
        return compare_results(saved, rerun, spec.volatile if spec else ())

    def fork_url(self, kind: str, inputs: Mapping[str, Any]) -> str | None:
        """The view's page pre-filled with these inputs, or None when the kind is not registered here."""
        spec = self._views.get(kind)
        return fork_url(spec, inputs) if spec is not None else None


# Timing fields a result may carry: they differ on every run, so a re-run never compares them.
DEFAULT_VOLATILE = frozenset({"seconds", "elapsed_s", "elapsed", "duration_s", "tokens_per_s", "wall_s", "load_seconds"})


def compared_fields(result: dict, volatile: tuple[str, ...] = ()) -> dict:
    """The result without its volatile (timing) fields, at any depth: what a re-run must reproduce."""
    skip = DEFAULT_VOLATILE | set(volatile)

    def strip(v):
        if isinstance(v, dict):
            return {k: strip(x) for k, x in v.items() if k not in skip}
        if isinstance(v, list):
            return [strip(x) for x in v]
        return v

    return strip(result)


FLOAT_RTOL, FLOAT_ATOL = 1e-4, 1e-6  # float32 sums differ in the last bits with thread count / kernel choice


@dataclass(frozen=True)
class Comparison:
    match: bool  # equal, floats within FLOAT_RTOL / FLOAT_ATOL
    exact: bool  # bit-for-bit equal
    max_abs_diff: float
    first_difference: str | None  # JSON path of the first mismatch, when not matching


def _only_saved_keys(rerun, saved):
    """The re-run without the fields a result gained after the snapshot was saved (what was saved is compared)."""
    if isinstance(rerun, dict) and isinstance(saved, dict):
        return {k: _only_saved_keys(v, saved[k]) for k, v in rerun.items() if k in saved}
    if isinstance(rerun, list) and isinstance(saved, list) and len(rerun) == len(saved):
        return [_only_saved_keys(x, y) for x, y in zip(rerun, saved)]
    return rerun


def compare_results(saved: dict, rerun: dict, volatile: tuple[str, ...] = ()) -> Comparison:
    """Saved vs recomputed result, timing fields aside: structure, strings, ints and bools exactly; floats
    within a relative 1e-4 (the same model on another thread count rounds float32 sums differently)."""
    a = compared_fields(saved, volatile)
    b = _only_saved_keys(compared_fields(rerun, volatile), a)
    worst = 0.0
    first: list[str] = []
    stack = [(a, b, "result")]
    while stack:
        x, y, path = stack.pop()
        if isinstance(x, bool) or isinstance(y, bool) or not (isinstance(x, (int, float)) and isinstance(y, (int, float))):
            if type(x) is not type(y):
                first.append(path)
            elif isinstance(x, dict):
                # a null field and a missing one are the same (an optional field added since, or left out)
                keys = {k for k in x.keys() | y.keys() if x.get(k) is not None or y.get(k) is not None}
                if not keys <= x.keys() & y.keys():
                    first.append(f"{path} (keys)")
                else:
                    stack.extend((x[k], y[k], f"{path}.{k}") for k in keys)
            elif isinstance(x, list):
                if len(x) != len(y):
                    first.append(f"{path} (length)")
                else:
                    stack.extend((p, q, f"{path}[{i}]") for i, (p, q) in enumerate(zip(x, y)))
            elif x != y:
                first.append(path)
            continue
        if isinstance(x, int) and isinstance(y, int):
            if x != y:
                first.append(path)
            continue
        d = abs(float(x) - float(y))
        worst = max(worst, d)
        if d > FLOAT_ATOL + FLOAT_RTOL * max(abs(float(x)), abs(float(y))):
            first.append(path)
    return Comparison(match=not first, exact=a == b, max_abs_diff=worst, first_difference=min(first) if first else None)


# --- snapshot context -----------------------------------------------------------------------------------

def to_jsonable(obj: Any) -> Any:
    """What a snapshot stores: pydantic models dumped, tuples as lists, exactly what JSON round-trips to."""
    if isinstance(obj, BaseModel):
        return json.loads(obj.model_dump_json())
    return json.loads(json.dumps(obj, allow_nan=False, default=_default))


def _default(o):
    if isinstance(o, BaseModel):
        return json.loads(o.model_dump_json())
    if hasattr(o, "tolist"):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def snapshot_context(kind: str, inputs: Any, result: Any) -> dict:
    """The fragment context {inputs, result, kind} of the contract, JSON-normalised so that the live render
    and the render of the saved snapshot see identical values (tuples become lists, models become dicts)."""
    return {"inputs": to_jsonable(inputs), "result": to_jsonable(result), "kind": kind}


def fork_url(spec: ViewSpec, inputs: Mapping[str, Any]) -> str:
    """The view's page pre-filled with these inputs (its codec's address), else the bare page."""
    if spec.codec is not None:
        try:
            url = spec.codec.write(dict(inputs))
        except Exception:  # an old snapshot's inputs the view's codec no longer understands
            url = None
        if url:
            return url
    return spec.page_path

