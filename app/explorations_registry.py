"""Views that can be saved, re-run and forked: kind -> (request model, compute function, page).

A view author registers once, at import time of the view's API module:

    from app.explorations_registry import register_view
    register_view("steering", SteerRequest, run_steering, "/generate",
                  response_model=SteerResponse, example={"prompt": "hello", ...})

`url_fn(inputs) -> str` (optional): the view's own address builder, if it has one (Fork uses it; the
default is `page_path?` + `inputs_to_query(inputs)`). `run_fn(engine, settings, request) -> response` must be the same function the JSON route and the HTML
fragment use (so a re-run on the same profile reproduces the saved result exactly; timing fields such as
`seconds` / `tokens_per_s`, or those named in `volatile=`, are left out of that comparison). `example` is a small
valid request (tiny profile) used by the tests that check save -> open -> identical rendering for every kind.

Kinds that are not registered (or whose fragment template is missing) still render: the saved JSON is shown
generically (templates/fragments/_generic.html).
"""
from __future__ import annotations

import importlib
import json
import re
import typing
from dataclasses import dataclass
from typing import Any, Callable, Mapping
from urllib.parse import urlencode

from pydantic import BaseModel

KIND_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
# Modules whose import registers views (each calls register_view at module level).
VIEW_MODULES = ("app.api.analysis", "app.api.generate", "app.api.discover")


@dataclass(frozen=True)
class ViewSpec:
    kind: str
    request_model: type[BaseModel]
    run_fn: Callable[[Any, Any, BaseModel], Any]
    page_path: str
    response_model: type[BaseModel] | None = None
    example: dict | None = None
    label: str = ""
    url_fn: Callable[[dict], str | None] | None = None  # the view's own inputs -> page URL, if it has one
    volatile: tuple[str, ...] = ()  # top-level result fields that differ run to run (timings): not compared


_VIEWS: dict[str, ViewSpec] = {}
_loaded = False


def register_view(kind: str, request_model: type[BaseModel], run_fn: Callable, page_path: str, *,
                  response_model: type[BaseModel] | None = None, example: dict | None = None,
                  label: str | None = None, url_fn: Callable[[dict], str | None] | None = None,
                  volatile: tuple[str, ...] = ()) -> ViewSpec:
    """Make `kind` re-runnable and forkable. Registering the same kind again replaces it (module reloads)."""
    if not KIND_RE.match(kind):
        raise ValueError(f"bad kind {kind!r}: lowercase letters, digits and _ (at most 32)")
    if not page_path.startswith("/"):
        raise ValueError("page_path must be a path on this server, e.g. /generate")
    spec = ViewSpec(kind, request_model, run_fn, page_path, response_model, example, label or kind.replace("_", " "), url_fn,
                    tuple(volatile))
    _VIEWS[kind] = spec
    return spec


# Timing fields a result may carry: they differ on every run, so a re-run never compares them.
DEFAULT_VOLATILE = frozenset({"seconds", "elapsed_s", "elapsed", "duration_s", "tokens_per_s", "wall_s", "load_seconds"})


def compared_fields(kind: str, result: dict) -> dict:
    """The result without its volatile (timing) fields, at any depth: what a re-run must reproduce."""
    spec = _VIEWS.get(kind)
    skip = DEFAULT_VOLATILE | set(spec.volatile if spec else ())

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


def compare_results(kind: str, saved: dict, rerun: dict) -> Comparison:
    """Saved vs recomputed result, timing fields aside: structure, strings, ints and bools exactly; floats
    within a relative 1e-4 (the same model on another thread count rounds float32 sums differently)."""
    a, b = compared_fields(kind, saved), compared_fields(kind, rerun)
    worst = 0.0
    first: list[str] = []
    stack = [(a, b, "result")]
    while stack:
        x, y, path = stack.pop()
        if isinstance(x, bool) or isinstance(y, bool) or not (isinstance(x, (int, float)) and isinstance(y, (int, float))):
            if type(x) is not type(y):
                first.append(path)
            elif isinstance(x, dict):
                if x.keys() != y.keys():
                    first.append(f"{path} (keys)")
                else:
                    stack.extend((x[k], y[k], f"{path}.{k}") for k in x)
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


def _ensure_loaded() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for mod in VIEW_MODULES:
        try:
            importlib.import_module(mod)
        except ImportError:  # a view module that does not exist (yet) simply registers nothing
            pass
    if "analysis" not in _VIEWS:
        from app.api.analysis import AnalyzeRequest, AnalyzeResponse, run_analysis

        try:
            from app.web.analysis_pages import page_url as analysis_url
        except ImportError:
            analysis_url = None
        register_view("analysis", AnalyzeRequest, run_analysis, "/", response_model=AnalyzeResponse,
                      example={"prompt": "The cat sat on the mat.", "top_k": 5}, label="analysis", url_fn=analysis_url)


def views() -> dict[str, ViewSpec]:
    _ensure_loaded()
    return dict(_VIEWS)


def get_view(kind: str) -> ViewSpec | None:
    _ensure_loaded()
    return _VIEWS.get(kind)


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


def fragment_exists(kind: str) -> bool:
    from jinja2 import TemplateNotFound

    from app.web.templating import templates

    if not KIND_RE.match(kind):
        return False
    try:
        templates.env.get_template(f"fragments/{kind}.html")
        return True
    except TemplateNotFound:
        return False


def render_fragment(kind: str, inputs: dict, result: dict) -> tuple[str, bool]:
    """(html, generic): the view's own fragment from {inputs, result, kind} only, or the generic rendering
    of the saved JSON when the kind has no fragment template or its template cannot render this snapshot."""
    from jinja2 import TemplateNotFound

    from app.web.templating import templates

    ctx = {"inputs": inputs, "result": result, "kind": kind}
    problem = None
    if KIND_RE.match(kind):
        try:
            return templates.env.get_template(f"fragments/{kind}.html").render(ctx), False
        except TemplateNotFound:
            problem = None
        except Exception as exc:  # an old snapshot the current template no longer understands
            problem = f"the current {kind} view cannot draw this snapshot ({type(exc).__name__}); showing the saved data"
    pretty = {"inputs_json": json.dumps(inputs, indent=2, ensure_ascii=False),
              "result_json": json.dumps(result, indent=2, ensure_ascii=False)}
    html = templates.env.get_template("fragments/_generic.html").render(ctx | pretty | {"problem": problem})
    return html, True


# --- query strings ---------------------------------------------------------------------------------------

def inputs_to_query(inputs: Mapping[str, Any]) -> str:
    """A view's inputs as its page URL's query string: scalars as text, lists/dicts as compact JSON; None left out."""
    pairs = []
    for k, v in inputs.items():
        if v is None:
            continue
        if isinstance(v, bool):
            pairs.append((k, "true" if v else "false"))
        elif isinstance(v, (list, tuple, dict)):
            pairs.append((k, json.dumps(v, separators=(",", ":"), ensure_ascii=False)))
        else:
            pairs.append((k, str(v)))
    return urlencode(pairs)


def _is_structured(annotation) -> bool:
    origin = typing.get_origin(annotation)
    if origin in (list, tuple, dict, set):
        return True
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return any(_is_structured(a) for a in typing.get_args(annotation) if a is not type(None))
    if origin is typing.Annotated:
        return _is_structured(typing.get_args(annotation)[0])
    return isinstance(annotation, type) and issubclass(annotation, (BaseModel, list, tuple, dict))


def query_to_inputs(params: Mapping[str, str], request_model: type[BaseModel]) -> dict:
    """The inverse of inputs_to_query for a request model: only its fields; JSON-decodes structured fields.
    Validate the result with request_model.model_validate (pydantic turns "10" into 10 and "true" into True).
    A structured field that is not valid JSON is passed through as text, so validation names it."""
    out: dict[str, Any] = {}
    for name, field in request_model.model_fields.items():
        if name not in params:
            continue
        raw = params[name]
        if _is_structured(field.annotation):
            try:
                out[name] = json.loads(raw)
            except ValueError:
                out[name] = raw
        else:
            out[name] = raw
    return out


def fork_url(kind: str, inputs: Mapping[str, Any]) -> str | None:
    """The view's page pre-filled with these inputs, or None when the kind is not registered here."""
    spec = get_view(kind)
    if spec is None:
        return None
    if spec.url_fn is not None:
        try:
            url = spec.url_fn(dict(inputs))
        except Exception:  # an old snapshot's inputs the view's URL builder no longer understands
            url = None
        if url:
            return url
    q = inputs_to_query(inputs)
    return spec.page_path + ("?" + q if q else "")
