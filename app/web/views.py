"""The one way a page computes a view from form / query fields: parse, run the service, turn errors into lines
and a status (422 for bad input, the service's 4xx, 503 + retry_after when the engine is busy), render."""
from __future__ import annotations

from typing import Any, Callable

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool

from app.api.deps import EngineDep, SettingsDep
from app.api.errors import errors_of
from app.engine.engine import EngineBusy
from app.web.codecs import Address
from app.web.templating import render_fragment, render_page


def guarded(ctx: dict, action: Callable[[], object], invalid: tuple[type[Exception], ...] = ()) -> int:
    """Run action (it fills ctx): 200, or the status of its error with the error's lines in ctx["errors"] (a busy
    engine: 503 and ctx["retry_after"]; `invalid` errors: 422)."""
    try:
        action()
    except HTTPException as exc:
        ctx["errors"] = errors_of(exc)
        return exc.status_code
    except EngineBusy as exc:
        ctx.update(errors=[str(exc)], retry_after=exc.retry_after)
        return 503
    except invalid as exc:
        ctx["errors"] = errors_of(exc)
        return 422
    return 200


def fill_result(ctx: dict, compute: Callable[[], BaseModel], invalid: tuple[type[Exception], ...] = ()) -> dict:
    """ctx with result = compute().model_dump(), or its errors and status (`invalid` errors answer 422)."""
    def put() -> None:
        ctx["result"] = compute().model_dump()
    status = guarded(ctx, put, invalid)
    if status != 200:
        ctx["status"] = status
    return ctx


def run_view(kind: str, parse: Callable[[Any], BaseModel], params, service: Callable[[Any], BaseModel],
             invalid: tuple[type[Exception], ...] = ()) -> dict:
    """{inputs, result, kind} (+ errors, status, retry_after) of service(parse(params))."""
    try:
        req = parse(params)
    except ValidationError as exc:
        return {"inputs": None, "result": None, "kind": kind, "errors": errors_of(exc), "status": 422}
    ctx = {"inputs": req.model_dump(), "result": None, "kind": kind, "status": 200}
    return fill_result(ctx, lambda: service(req), invalid)


def query_page(request: Request, engine, settings, page: str, kind: str, key: str, view: Callable[..., dict],
               **extra) -> tuple[dict, int]:
    """(ctx, status) of a page that shows view(engine, settings, query) when its address has `key` (the form alone
    without it)."""
    params = request.query_params
    ctx = {"engine": engine, "page": page, "inputs": None, "result": None, "kind": kind, "raw": dict(params), **extra}
    status = 200
    if key in params:
        shown = view(engine, settings, params)
        status = shown.pop("status", 200)
        shown.pop("retry_after", None)  # a page is not retried; only fragments say when to
        ctx.update(shown)
    ctx["tab_title"] = request.app.state.views.get(kind).codec.title(ctx["inputs"] or ctx["raw"])  # base.html
    return ctx, status


async def form_fragment(request: Request, engine, settings, template: str, view: Callable[..., dict],
                        push_url: Callable[[dict], Address | None] | None = None):
    """The fragment of view(engine, settings, form) (computed off the event loop), pushing push_url(inputs) (a
    codec's `address`: the address and its tab title) when there is a result."""
    form = await request.form()
    ctx = await run_in_threadpool(view, engine, settings, form)
    push = push_url(ctx["inputs"]) if push_url is not None and ctx.get("result") else None
    return render_fragment(request, template, ctx, push)


def service_view(kind: str, parse: Callable[[Any], BaseModel], service: Callable[..., BaseModel]) -> Callable[..., dict]:
    """view(engine, settings, params): run_view of service(engine, settings, parse(params))."""
    def view(engine, settings, params) -> dict:
        return run_view(kind, parse, params, lambda req: service(engine, settings, req))
    return view



def add_view_pages(router: APIRouter, kind: str, codec, run: Callable[..., BaseModel], *, page: str, key: str,
                   template: str, fragment: str, push: bool = True) -> None:
    """The two routes of a plain view: GET codec.path, `template` showing the view its address asks for (when the
    address has `key`; `page` marks the nav), and POST /fragments/<fragment>, the form's view pushing the codec's
    address (`push=False`: a panel inside another view, whose address stays)."""
    view = service_view(kind, codec.read, run)

    def page_route(request: Request, engine: EngineDep, settings: SettingsDep):
        return render_page(request, template, *query_page(request, engine, settings, page, kind, key, view))

    async def fragment_route(request: Request, engine: EngineDep, settings: SettingsDep):
        return await form_fragment(request, engine, settings, f"fragments/{fragment}.html", view,
                                   codec.address if push else None)

    router.get(codec.path, response_class=HTMLResponse, name=f"{kind}_page")(page_route)
    router.post(f"/fragments/{fragment}", response_class=HTMLResponse, name=f"{kind}_fragment")(fragment_route)
