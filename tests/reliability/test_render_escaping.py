"""Model tokens are arbitrary strings: random and hostile token strings rendered through the real fragment templates
(the app's Jinja environment via app.web.templating.render_snapshot, for every registered view kind)
and the Plotly figures they embed, plus every figure builder in app/viz/ (found dynamically). An HTML parser finds
no injected element or attribute, the figure JSON blocks stay intact, and no figure string carries raw markup
that Plotly would interpret (<b>, <a href>, ...). Figures: test-artifacts/reliability/render_<n>.json.
"""
from __future__ import annotations

import collections
import copy
import importlib
import inspect
import json
import pkgutil
import re
from html.parser import HTMLParser

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import iter_strings

HOSTILE = [
    "<pwntag>", "</script><pwntag>", "<script>pwn()</script>", '"><img src=x onpwn=1>', "' onpwn='1", '" onpwn="1',
    "<b pwn>bold</b>", '<a href="javascript:pwn()" pwn>x</a>', "<br pwn>", "{{pwn}}", "{% pwn %}", "&lt;pwn&gt;",
    "</textarea><pwntag>", "<!--pwn-->", "<svg onload=pwn>", "\u202e<pwntag>", "\x00<pwntag>", "<sup pwn>1</sup>",
    "<span style='x' pwn>", "]]><pwntag>", "`${pwn}`", "\\u003cpwntag\\u003e",
]
STRUCTURAL = {"profile", "hook_name", "kind", "mode", "sae", "finish_reason", "decoder", "state", "aggregate", "source",
              "id", "run_id", "verdict", "status", "color", "colour", "direction", "fingerprint", "layer_name"}
token_text = st.one_of(
    st.sampled_from(HOSTILE),
    st.text(st.characters(exclude_categories=("Cs",)), min_size=0, max_size=30),
    st.builds(lambda a, b: a + b, st.sampled_from(HOSTILE), st.text(st.characters(exclude_categories=("Cs",)), max_size=8)),
)


class Shape(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.pairs: set = set()
        self.bad: list[str] = []
        self.json_blocks: list[str] = []
        self._in_json = False

    def handle_starttag(self, tag, attrs):
        self.pairs.add((tag, None))
        if "pwn" in tag:
            self.bad.append(f"element <{tag}>")
        for k, v in attrs:
            self.pairs.add((tag, k))
            if "pwn" in k:
                self.bad.append(f"attribute {k} on <{tag}>")
            if v and k in ("href", "src", "action") and v.strip().lower().startswith("javascript:"):
                self.bad.append(f"javascript: URL in <{tag} {k}>")
        self._in_json = tag == "script" and dict(attrs).get("type") == "application/json"

    def handle_endtag(self, tag):
        self._in_json = False

    def handle_data(self, data):
        if self._in_json:
            self.json_blocks.append(data)


RAW_MARKUP = re.compile(r"<\s*/?\s*[a-z]+[^<>]*pwn", re.I)


def audit_html(html: str, allowed: set | None) -> list[str]:
    p = Shape()
    p.feed(html)
    p.close()
    bad = list(p.bad)
    if allowed is not None:
        bad += [f"unexpected {t} {a}" for t, a in p.pairs - allowed]
    for block in p.json_blocks:
        try:
            fig = json.loads(block)
        except ValueError as exc:
            bad.append(f"figure JSON block broken: {exc}")
            continue
        bad += [f"raw markup in figure string {s[:80]!r}" for s in iter_strings(fig) if RAW_MARKUP.search(s)]
    return bad


def replace_strings(obj, make, key=None):
    """Every string leaf that is not a structural field -> make(); keys of dicts are kept."""
    if isinstance(obj, str):
        return obj if key in STRUCTURAL else make()
    if isinstance(obj, dict):
        return {k: replace_strings(v, make, k) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [replace_strings(v, make, key) for v in obj]
    return obj


@pytest.fixture(scope="module")
def contexts(tiny_engine):
    """{kind: (inputs, result)} from running each registered view's example on the tiny model."""
    from app.core.registration import build_views
    from app.core.settings import Settings
    from app.explorations.registry import to_jsonable

    views = build_views().all

    s = Settings(profile="tiny")
    out = {}
    for kind, spec in sorted(views().items()):
        if spec.example is None:
            continue
        req = spec.request_model.model_validate(spec.example)
        try:
            res = spec.run_fn(tiny_engine, s, req)
        except Exception as exc:  # a view that cannot run on the tiny profile is reported, not silently skipped
            out[kind] = exc
            continue
        out[kind] = (to_jsonable(req), to_jsonable(res))
    return out


def viz_builders():
    import app.viz as viz

    for m in pkgutil.iter_modules(viz.__path__):
        mod = importlib.import_module(f"app.viz.{m.name}")
        for name, fn in inspect.getmembers(mod, inspect.isfunction):
            if name.endswith("_figure") and fn.__module__ == mod.__name__:
                yield f"{m.name}.{name}", fn


def _call_builder(fn, inputs, result):
    for args in ((inputs, result), (result, inputs), (result,)):
        try:
            return fn(*args)
        except (TypeError, KeyError, AttributeError, IndexError, ValueError):
            continue
    return None


def run_render(contexts, n: int) -> dict:
    from app.core.registration import build_app_templates, build_views
    from app.web.templating import render_snapshot

    views, templates = build_views(), build_app_templates()

    def render_fragment(kind, inputs, result):
        return render_snapshot(templates, views, kind, inputs, result)

    kinds = {k: v for k, v in contexts.items() if not isinstance(v, Exception)}
    assert kinds, f"no view kind could run on the tiny profile: {contexts}"
    builders = list(viz_builders())
    allowed, counts, problems = {}, collections.Counter(), []
    for kind, (inputs, result) in kinds.items():
        allowed[kind] = set()
        for plain in ("tok", "t\nok"):  # a newline in generated text is drawn as ↵ plus a line break: legitimate markup
            html, _ = render_fragment(kind, inputs, replace_strings(result, lambda: plain))
            p = Shape()
            p.feed(html)
            allowed[kind] |= p.pairs

    @settings(max_examples=n, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
    @given(kind=st.sampled_from(sorted(kinds)), data=st.data())
    def one(kind, data):
        inputs, result = kinds[kind]
        hostile = replace_strings(copy.deepcopy(result), lambda: data.draw(token_text))
        html, generic = render_fragment(kind, inputs, hostile)
        counts[kind] += 1
        counts["generic_fallback"] += int(generic)
        bad = audit_html(html, None if generic else allowed[kind])
        for name, fn in builders:  # every figure builder, on the same hostile result
            fig = _call_builder(fn, inputs, hostile)
            if fig is not None:
                counts[f"figure:{name}"] += 1
                bad += [f"{name}: raw markup {s[:80]!r}" for s in iter_strings(fig) if RAW_MARKUP.search(s)]
        if bad:
            problems.append(f"{kind}: {bad[:3]}")

    one()
    return {"renders": sum(v for k, v in counts.items() if k in kinds), "per_kind": dict(counts),
            "kinds_not_runnable": {k: repr(v)[:120] for k, v in contexts.items() if isinstance(v, Exception)},
            "figure_builders": [n for n, _ in builders], "problems": problems[:10], "n_problems": len(problems)}


@pytest.mark.parametrize("n", [pytest.param(150, id="150"), pytest.param(2000, id="2000", marks=pytest.mark.slow)])
def test_random_tokens_render_escaped_everywhere(contexts, n):
    from tests.reliability.conftest import report

    fig = run_render(contexts, n)
    report(f"render_{n}", fig)
    assert fig["renders"] >= n
    assert fig["n_problems"] == 0, fig["problems"]


def test_the_audit_catches_an_unescaped_render():
    """The checker itself: raw token text in markup and in a figure label is reported."""
    from jinja2 import Environment

    env = Environment(autoescape=False)
    html = env.from_string("<span title='{{ t }}'>{{ t }}</span>").render(t='"><img src=x onpwn=1>')
    assert audit_html(html, {("span", None), ("span", "title")})
    fig = {"data": [{"x": ["<b pwn>bold</b>"]}]}
    page = f'<div><script type="application/json" data-figure="f">{json.dumps(fig)}</script></div>'
    assert any("raw markup" in b for b in audit_html(page, None))
