"""Jinja2 templates (autoescape on: model text is never marked safe); one environment per app, built by
app.core.registration with every filter and global, kept on app.state.templates."""
from __future__ import annotations

import json
import logging
from typing import Callable, Mapping

from fastapi import Request
from fastapi.templating import Jinja2Templates
from jinja2 import UndefinedError, nodes

from app.api.errors import RETRY_AFTER_S, retry_after_header
from app.core.settings import ROOT
from app.explorations.registry import ViewRegistry
from app.web.codecs import Address

log = logging.getLogger("asn")


def to_json_attr(obj) -> str:
    """JSON for a data-* attribute (autoescape escapes quotes and angle brackets)."""
    return json.dumps(obj, separators=(",", ":"))


def build_templates(filters: Mapping[str, Callable], globals_: Mapping[str, object]) -> Jinja2Templates:
    """A fresh environment with exactly these filters and globals (a name given twice is a bug: raise)."""
    templates = Jinja2Templates(directory=str(ROOT / "templates"))
    env = templates.env
    env.autoescape = True
    own = {"tojson_attr": to_json_attr}
    for name, fn in {**own, **filters}.items():
        if name in env.filters and name not in own:
            raise ValueError(f"Jinja filter {name!r} would replace a built-in or registered filter")
        env.filters[name] = fn
    for name, value in globals_.items():
        if name in env.globals:
            raise ValueError(f"Jinja global {name!r} is registered twice")
        env.globals[name] = value
    return templates


def template_problems(templates: Jinja2Templates) -> list[str]:
    """Filters / tests / called globals that some template uses and the environment does not have. (Jinja only
    fails on an unknown filter when the branch using it runs, so this walks every template's syntax tree.)"""
    env = templates.env
    problems = []
    for name in env.list_templates(extensions=["html"]):
        tree = env.parse(env.loader.get_source(env, name)[0])
        local = {n.name for n in tree.find_all(nodes.Macro)} | {t.name for n in tree.find_all((nodes.Assign, nodes.For))
                                                                for t in n.target.find_all(nodes.Name)}
        local |= {(a[1] if isinstance(a, tuple) else a) for n in tree.find_all(nodes.FromImport) for a in n.names}
        for f in tree.find_all(nodes.Filter):
            if f.name not in env.filters:
                problems.append(f"{name}: filter {f.name!r} is not registered")
        for t in tree.find_all(nodes.Test):
            if t.name not in env.tests:
                problems.append(f"{name}: test {t.name!r} is not registered")
        for c in tree.find_all(nodes.Call):
            if isinstance(c.node, nodes.Name) and c.node.name not in env.globals and c.node.name not in local \
                    and c.node.name not in ("caller", "super"):
                problems.append(f"{name}: {c.node.name}() is not a registered global")
    return problems


def check_fragments(templates: Jinja2Templates, views: ViewRegistry) -> None:
    """Every registered view has a fragment template, and every template's filters and globals are registered:
    a missing renderer stops the app at start (TemplateNotFound / ValueError), not a snapshot at render time."""
    problems = template_problems(templates)
    if problems:
        raise ValueError("templates use what is not registered in app/core/registration.py: " + "; ".join(problems))
    for kind in views:
        templates.env.get_template(f"fragments/{kind}.html")  # TemplateNotFound


def templates_of(request: Request) -> Jinja2Templates:
    return request.app.state.templates


def render_page(request: Request, name: str, ctx: dict, status: int = 200, headers: dict | None = None):
    """A full page (ctx gets the app's limits unless given)."""
    ctx.setdefault("limits", request.app.state.settings.limits)
    return templates_of(request).TemplateResponse(request, name, ctx, status_code=status, headers=headers)


def render_fragment(request: Request, name: str, ctx: dict, push: Address | None = None):
    """An htmx fragment: ctx["status"] as the HTTP status (errors keep their 4xx/503; base.html's htmx
    responseHandling swaps them in place), on success the pushed address (HX-Push-Url) and its tab title (a <title>
    first: htmx sets document.title from it), Retry-After on 503.
    A non-int ctx["status"] (a job's status dict, for the progress fragments) stays in ctx for the template."""
    status = ctx.pop("status") if isinstance(ctx.get("status"), int) else 200
    headers = {}
    if push and 200 <= status < 300:
        headers["HX-Push-Url"] = push.url
        if push.title is not None:
            ctx, name = ctx | {"tab_title": push.title, "fragment": name}, "fragments/_titled.html"
    if status == 503:
        headers.update(retry_after_header(ctx.get("retry_after", RETRY_AFTER_S)))
    return render_page(request, name, ctx, status, headers)


# Errors an old snapshot's data can raise in today's template (a shape the template no longer expects).
DATA_ERRORS = (UndefinedError, TypeError, KeyError, ValueError, AttributeError, IndexError, ZeroDivisionError)


def render_snapshot(templates: Jinja2Templates, views: ViewRegistry, kind: str, inputs: dict, result: dict) -> tuple[str, bool]:
    """(html, generic): the view's own fragment from {inputs, result, kind} only; the generic rendering of the
    saved JSON for a kind this server does not register, or when the template cannot draw this snapshot's
    data. A registered kind without a working template is an error (raised), never a silent fallback."""
    ctx = {"inputs": inputs, "result": result, "kind": kind}
    problem = None
    if kind in views:
        template = templates.env.get_template(f"fragments/{kind}.html")  # missing/broken: raise (checked at start)
        try:
            return template.render(ctx), False
        except DATA_ERRORS as exc:  # an old snapshot the current template no longer understands
            log.warning("the %s fragment cannot draw a saved snapshot: %s: %s", kind, type(exc).__name__, exc)
            problem = f"the current {kind} view cannot draw this snapshot ({type(exc).__name__}); showing the saved data"
    pretty = {"inputs_json": json.dumps(inputs, indent=2, ensure_ascii=False),
              "result_json": json.dumps(result, indent=2, ensure_ascii=False)}
    html = templates.env.get_template("fragments/_generic.html").render(ctx | pretty | {"problem": problem})
    return html, True
