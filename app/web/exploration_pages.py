"""Saved explorations as pages: /e (recent + import), /e/<id> (the snapshot rendered without recomputation),
/e/<id>/export (the stored JSON), POST /e/save (the Save button of every view), POST /e/<id>/rerun (htmx)."""
from __future__ import annotations

import json
import re
from dataclasses import asdict
from datetime import datetime, timezone

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from markupsafe import Markup
from pydantic import ValidationError

from app.api.deps import EngineDep, SettingsDep, StoreDep, ViewsDep
from app.api.errors import errors_of, unprocessable
from app.api.explorations.document import KIND_PATTERN, SaveRequest
from app.api.explorations.service import (
    build_document,
    check_save_key,
    get_document,
    idempotent_id,
    live_profile,
    parse_import,
    profile_differences,
    repeated_save,
    rerun_document,
    save_document,
)
from app.core.settings import ROOT
from app.explorations.provenance import is_computed, signature_for_save, signing_key
from app.http.auth import owner_of
from app.store import valid_id
from app.viz.tables import table_csv, tables_of
from app.web.templating import render_page, render_snapshot, templates_of

router = APIRouter(tags=["pages"], include_in_schema=False)
PAGE_SIZE = 50
STATIC = ROOT / "static"


def view_stylesheets() -> list[str]:
    """The views' own stylesheets (static/<view>.css): a saved fragment looks as it did on its page."""
    return sorted(p.name for p in STATIC.glob("*.css") if p.name != "app.css")


def _errors(exc: HTTPException | ValidationError) -> list[str]:
    return errors_of(exc, default="document")


@router.get("/e", response_class=HTMLResponse)
def list_page(request: Request, engine: EngineDep, settings: SettingsDep, store: StoreDep,
              offset: int = Query(0, ge=0, le=1_000_000), kind: str | None = Query(None, pattern=KIND_PATTERN)):
    return _list(request, engine, settings, store, offset, kind)


LINK_RE = re.compile(r"(?:^|/e/)([A-Za-z0-9_-]{22,64})(?:[/?#]|$)")


@router.get("/e/open")
def open_link(request: Request, engine: EngineDep, settings: SettingsDep, store: StoreDep, link: str = Query("", max_length=2000)):
    """The list page's "open a link" box: a pasted link (or id) -> 303 to /e/<id>; the list page with 422 otherwise."""
    m = LINK_RE.search(link.strip())
    if m is None:
        return _list(request, engine, settings, store, errors=[
            f"link: {link.strip()[:200]!r} is not a link to a saved exploration (it looks like …/e/<id>)"], status_code=422,
            errors_title="Cannot open this:")
    return RedirectResponse(f"/e/{m.group(1)}", status_code=303)


def _list(request, engine, settings, store, offset=0, kind=None, errors=None, status_code=200, errors_title=None):
    owner = owner_of(request)  # links are unlisted: this browser sees only what it saved
    items = [dict(asdict(s),
                  when=datetime.fromtimestamp(s.created_at, tz=timezone.utc).strftime("%Y-%m-%d %H:%M"),
                  # an import (no valid signature of this server) is marked: it may repeat one computed here
                  imported=not is_computed(request.app, store.get_record(s.id)))
             for s in store.recent(limit=PAGE_SIZE, offset=offset, kind=kind, owner=owner)]
    return render_page(request, "explorations.html", {
        "engine": engine, "page": "explorations", "items": items,
        "total": store.count(kind=kind, owner=owner), "offset": offset, "page_size": PAGE_SIZE, "kind": kind,
        "errors": errors or [], "errors_title": errors_title}, status_code)


@router.post("/e/import")
async def import_page(request: Request, engine: EngineDep, settings: SettingsDep, store: StoreDep):
    """The import form: a .json file exported from any server -> 303 to its new /e/<id>, or the list page with 422."""
    limit = settings.limits.max_exploration_bytes
    try:
        form = await request.form(max_files=1, max_fields=4, max_part_size=limit + 1)
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise unprocessable(["body", "file"], "choose an exported .json file", "missing")
        raw = await upload.read(limit + 1)
        doc = parse_import(raw, settings)
        saved = await run_in_threadpool(save_document, store, settings, doc, owner_of(request), None)  # never signed
    except HTTPException as exc:
        return await run_in_threadpool(_list, request, engine, settings, store, 0, None, _errors(exc), 422)
    return RedirectResponse(saved.url, status_code=303)


@router.post("/e/save")
async def save_page(request: Request, engine: EngineDep, settings: SettingsDep, store: StoreDep, views: ViewsDep):
    """The Save button (templates/fragments/_save.html): htmx gets a small fragment with the link; a plain form
    post is redirected to the new exploration."""
    limit = settings.limits.max_exploration_bytes
    htmx = request.headers.get("hx-request") == "true"
    try:
        form = await request.form(max_files=0, max_fields=8, max_part_size=limit + 1)
        try:
            save_key = check_save_key(form.get("save_key") if isinstance(form.get("save_key"), str) else None,
                                      ["body", "save_key"])  # forms.js: one per Save form, a repeat saves once
            fields = {k: form.get(k) for k in ("kind", "title", "note") if form.get(k) is not None}
            for k in ("inputs", "result"):
                raw = form.get(k)
                fields[k] = json.loads(raw) if isinstance(raw, str) else None
            req = SaveRequest.model_validate(fields)
        except ValueError as exc:  # JSONDecodeError and ValidationError are both ValueErrors
            if isinstance(exc, ValidationError):
                raise HTTPException(422, detail=exc.errors(include_url=False, include_input=False, include_context=False)) from None
            raise unprocessable(["body"], f"inputs/result are not JSON: {exc}", "json_invalid") from None
        owner = owner_of(request)

        def save_signed():
            doc = build_document(req, engine, settings, views)
            eid = idempotent_id(signing_key(request.app), owner, save_key, doc) if save_key else None
            if (earlier := repeated_save(store, eid, doc)) is not None:
                return earlier
            sig = signature_for_save(request.app, engine, settings, views, doc.kind, doc.inputs, doc.result)
            return save_document(store, settings, doc, owner=owner, signature=sig, exploration_id=eid)

        saved = await run_in_threadpool(save_signed)
    except HTTPException as exc:
        if not htmx:
            raise
        # the error keeps its status; htmx swaps it in place (responseHandling in base.html)
        return render_page(request, "fragments/_save.html", {"save_errors": _errors(exc), "save_only_status": True},
                           exc.status_code)
    if htmx:
        return render_page(request, "fragments/_save.html", {"saved": saved, "save_only_status": True},
                           200 if saved.repeated else 201)
    return RedirectResponse(saved.url, status_code=303)


def _not_found(request, engine, settings):
    return render_page(request, "exploration.html", {"engine": engine, "page": "explorations", "doc": None}, 404)


@router.get("/e/{exploration_id}", response_class=HTMLResponse)
def exploration_page(exploration_id: str, request: Request, engine: EngineDep, settings: SettingsDep, store: StoreDep,
                     views: ViewsDep):
    """The snapshot exactly as saved (no model work), with Re-run / Fork / Export."""
    if not valid_id(exploration_id):
        return _not_found(request, engine, settings)
    try:
        doc = get_document(store, exploration_id)
    except HTTPException:
        return _not_found(request, engine, settings)
    html, generic = render_snapshot(templates_of(request), views, doc.kind, doc.inputs, doc.result)
    live = live_profile(engine)
    spec = views.get(doc.kind)
    computed = is_computed(request.app, store.get_record(exploration_id))  # else: imported - not computed here
    return render_page(request, "exploration.html", {
        "engine": engine, "page": "explorations", "doc": doc, "id": exploration_id,
        # The fragment was rendered by an autoescaping template from the saved data: its model text is escaped.
        "fragment": Markup(html), "generic": generic, "differences": profile_differences(doc.profile, live),
        "live": live, "view": spec, "computed": computed, "csv_tables": tables_of(doc.kind), "fork_url": views.fork_url(doc.kind, doc.inputs), "view_css": view_stylesheets(),
        "inputs_rows": [(k, v if isinstance(v, (str, int, float, bool)) or v is None else json.dumps(v, ensure_ascii=False))
                        for k, v in doc.inputs.items()],
    })


@router.get("/e/{exploration_id}/export")
def export(exploration_id: str, store: StoreDep):
    """The stored document, byte for byte what the store keeps, as a download."""
    raw = store.get(exploration_id) if valid_id(exploration_id) else None
    if raw is None:
        raise HTTPException(404, detail="no exploration with this id")
    body = json.dumps(raw, ensure_ascii=False, indent=1)
    return Response(body, media_type="application/json",
                    headers={"content-disposition": f'attachment; filename="exploration-{exploration_id}.json"'})


@router.get("/e/{exploration_id}/export/{table}.csv")
def export_csv(exploration_id: str, table: str, store: StoreDep):
    """One of the saved view's tables (app/viz/tables.py) as CSV, from the stored result."""
    doc = get_document(store, exploration_id) if valid_id(exploration_id) else None
    try:
        text = table_csv(doc.kind, doc.result, table) if doc is not None else None
    except (KeyError, TypeError, AttributeError, ValueError):  # an imported result not in this view's shape
        raise HTTPException(422, detail=f"table {table!r}: this exploration's result is not in the shape of a "
                                        f"{doc.kind} view (imported?); its JSON export has it as stored") from None
    if text is None:
        have = ", ".join(tables_of(doc.kind)) if doc is not None else ""
        raise HTTPException(404, detail=f"no table {table!r} in this exploration" + (f"; it has: {have}" if have else ""))
    return Response(text, media_type="text/csv; charset=utf-8", headers={
        "content-disposition": f'attachment; filename="exploration-{exploration_id}-{table}.csv"'})


@router.post("/e/{exploration_id}/rerun", response_class=HTMLResponse)
def rerun_fragment(exploration_id: str, request: Request, engine: EngineDep, settings: SettingsDep, store: StoreDep,
                   views: ViewsDep):
    """htmx: recompute with the live model and show it under the saved result, with what differs."""
    try:
        doc = get_document(store, exploration_id)
        rr = rerun_document(engine, settings, views, exploration_id, doc)
        html, _ = render_snapshot(templates_of(request), views, doc.kind, doc.inputs, rr.result)
        ctx, status = {"rr": rr, "fragment": Markup(html), "errors": []}, 200
    except HTTPException as exc:  # the error keeps its status; htmx swaps it in place (base.html responseHandling)
        ctx, status = {"rr": None, "errors": _errors(exc)}, exc.status_code
    return render_page(request, "fragments/_rerun.html", ctx, status)


@router.get("/api/explorations/{exploration_id}/fragment")
def snapshot_fragment(exploration_id: str, request: Request, store: StoreDep, views: ViewsDep):
    """The saved view's fragment alone (HTML), as /e/<id> shows it."""
    doc = get_document(store, exploration_id)
    html, _ = render_snapshot(templates_of(request), views, doc.kind, doc.inputs, doc.result)
    return HTMLResponse(html)
