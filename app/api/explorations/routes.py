"""Saved explorations JSON API: immutable snapshots of a view (profile + inputs + results as shown).

A snapshot is the `Exploration` document below (schema_version 2). Older documents are upgraded on read by
`migrate` (never rewritten in the store), so links made by an older app keep rendering. There is no route
that changes or deletes a saved exploration.

POST /api/explorations            save {kind, title, note, inputs, result} -> 201 {id, url, computed}; with an
                                  Idempotency-Key header a repeat answers 200 and the same link
GET  /api/explorations            the caller's saved explorations, newest first (links are unlisted: the owner
                                  token cookie says whose; ?scope=all with X-Admin-Token lists everyone's)
GET  /api/explorations/{id}       the document (404 for an unknown id)
POST /api/explorations/import     a document (exported from any server) -> 201 {id, url} under a new id
POST /api/explorations/{id}/rerun recompute with the live model; says whether result and profile match
"""
from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Header, HTTPException, Query, Request, Response
from fastapi.concurrency import run_in_threadpool

from app.api.deps import EngineDep, SettingsDep, StoreDep, ViewsDep
from app.api.errors import unprocessable as err
from app.api.explorations.document import (
    KIND_PATTERN,
    Exploration,
    ListResponse,
    RerunResponse,
    SavedResponse,
    SaveRequest,
    SummaryModel,
)
from app.api.explorations.service import (
    build_document,
    check_save_key,
    get_document,
    idempotent_id,
    parse_import,
    repeated_save,
    rerun_document,
    save_document,
)
from app.explorations.provenance import is_computed, signature_for_save, signing_key
from app.http.auth import is_admin, owner_of

router = APIRouter(prefix="/api/explorations", tags=["explorations"])


@router.post("", status_code=201, response_model=SavedResponse,
             responses={200: {"description": "saved before with this Idempotency-Key and content: that save's link",
                              "model": SavedResponse}})
def save(req: SaveRequest, request: Request, response: Response, engine: EngineDep, settings: SettingsDep,
         store: StoreDep, views: ViewsDep,
         idempotency_key: str | None = Header(None, description="optional; the same key, caller and content save "
                                                                 "once and answer that save's link again (200)")
         ) -> SavedResponse:
    """Save a view as an immutable exploration; the answer's url (/e/<id>) opens it anywhere. The result is signed
    as computed here if this replica showed it, or recomputing the view gives the same result (app/provenance.py)."""
    key = check_save_key(idempotency_key, ["header", "idempotency-key"])
    doc = build_document(req, engine, settings, views)
    owner = owner_of(request)
    eid = idempotent_id(signing_key(request.app), owner, key, doc) if key else None
    if (earlier := repeated_save(store, eid, doc)) is not None:
        response.status_code = 200
        return earlier
    signature = signature_for_save(request.app, engine, settings, views, doc.kind, doc.inputs, doc.result)
    return save_document(store, settings, doc, owner=owner, signature=signature, exploration_id=eid)


@router.get("", response_model=ListResponse, responses={403: {"description": "scope=all without the operator's token"}})
def recent(request: Request, store: StoreDep, settings: SettingsDep, limit: int = Query(50, ge=1, le=200),
           offset: int = Query(0, ge=0, le=1_000_000), kind: str | None = Query(None, pattern=KIND_PATTERN),
           scope: Literal["mine", "all"] = Query("mine", description="all: every saved exploration (operator; "
                                                                     "needs the X-Admin-Token header)")) -> ListResponse:
    """The caller's saved explorations (those saved with its owner cookie), newest first."""
    if scope == "all" and not is_admin(request, settings):
        raise HTTPException(403, detail="scope=all needs the operator's X-Admin-Token")
    owner = None if scope == "all" else owner_of(request)
    items = [SummaryModel(id=s.id, url=f"/e/{s.id}", kind=s.kind, title=s.title, profile=s.profile,
                          created_at=s.created_at, schema_version=s.schema_version)
             for s in store.recent(limit=limit, offset=offset, kind=kind, owner=owner)]
    return ListResponse(total=store.count(kind=kind, owner=owner), items=items)


@router.post("/import", status_code=201, response_model=SavedResponse,
             openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}}})
async def import_exploration(request: Request, settings: SettingsDep, store: StoreDep) -> SavedResponse:
    """Import an exported document (any schema version this server reads); it gets a new id here."""
    raw = await _read_capped(request, settings.limits.max_exploration_bytes)
    doc = parse_import(raw, settings)
    # an imported document is never signed: it is shown as "imported - not computed here" (Re-run offered)
    return await run_in_threadpool(save_document, store, settings, doc, owner_of(request), None)


async def _read_capped(request: Request, limit: int) -> bytes:
    buf = bytearray()
    async for chunk in request.stream():
        buf.extend(chunk)
        if len(buf) > limit:
            raise err(["body"], f"the file is over {limit} bytes; the limit is {limit} bytes (max_exploration_bytes)",
                      "too_large", limit=limit)
    return bytes(buf)


@router.get("/{exploration_id}", response_model=Exploration)
def get_one(exploration_id: str, request: Request, response: Response, store: StoreDep) -> Exploration:
    """The saved document (current schema; older ones are upgraded on the fly). Header X-ASN-Provenance:
    computed (signed by this server) or imported (not computed here)."""
    doc = get_document(store, exploration_id)
    response.headers["X-ASN-Provenance"] = "computed" if is_computed(request.app, store.get_record(exploration_id)) else "imported"
    return doc


@router.post("/{exploration_id}/rerun", response_model=RerunResponse)
def rerun(exploration_id: str, engine: EngineDep, settings: SettingsDep, store: StoreDep, views: ViewsDep) -> RerunResponse:
    """Recompute with the live model; compares the result and the profile with the saved ones."""
    return rerun_document(engine, settings, views, exploration_id, get_document(store, exploration_id))
