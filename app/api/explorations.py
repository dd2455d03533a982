"""Saved explorations: immutable snapshots of a view (profile + inputs + results as shown), JSON API.

A snapshot is the `Exploration` document below (schema_version 2). Older documents are upgraded on read by
`migrate` (never rewritten in the store), so links made by an older app keep rendering. There is no route
that changes or deletes a saved exploration.

POST /api/explorations            save {kind, title, note, inputs, result} -> 201 {id, url}
GET  /api/explorations            recent explorations on this server (newest first)
GET  /api/explorations/{id}       the document (404 for an unknown id)
POST /api/explorations/import     a document (exported from any server) -> 201 {id, url} under a new id
POST /api/explorations/{id}/rerun recompute with the live model; says whether result and profile match
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from app.api.deps import EngineDep, SettingsDep, StoreDep
from app.explorations_registry import compare_results, compared_fields, get_view, render_fragment, to_jsonable
from app.settings import get_settings

router = APIRouter(prefix="/api/explorations", tags=["explorations"])
L = get_settings().limits
SCHEMA_VERSION = 2
KIND_PATTERN = r"^[a-z][a-z0-9_]{0,31}$"
APP_VERSION = "0.1.0"
DEFAULT_MAX_DEPTH = 64


# --- the document ----------------------------------------------------------------------------------------

class SAEInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")
    display: str = ""
    source: str = Field(default="", description="sae-lens release/id, or local:<folder> for a locally trained SAE")
    d_sae: int | None = None


class ProfileInfo(BaseModel):
    """What produced the results: model, hook point, SAE pair and a fingerprint of the SAE weights."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(max_length=100)
    display: str = Field(default="", max_length=300)
    model_name: str = Field(default="", max_length=200)
    hook_name: str = Field(default="", max_length=200)
    saes: dict[str, SAEInfo] = Field(default_factory=dict, max_length=8)
    fingerprint: str = Field(default="", max_length=128)


class Exploration(BaseModel):
    """The stored, exported and imported document (schema_version 2)."""

    model_config = ConfigDict(extra="forbid")
    schema_version: Literal[2] = SCHEMA_VERSION
    kind: str = Field(pattern=KIND_PATTERN)
    title: str = Field(min_length=1, max_length=L.max_title_chars)
    note: str = Field(default="", max_length=L.max_note_chars)
    created_at: str = Field(description="ISO 8601, UTC")
    app_version: str = Field(default=APP_VERSION, max_length=50)
    profile: ProfileInfo
    inputs: dict[str, Any]
    result: dict[str, Any]


class SaveRequest(BaseModel):
    """What a view's Save button posts."""

    model_config = ConfigDict(extra="forbid")
    kind: str = Field(pattern=KIND_PATTERN, description="the view: analysis, steering, dose, temperature, system_shift, discovery, ...")
    title: str = Field(default="", max_length=L.max_title_chars,
                       description=f"at most {L.max_title_chars} characters; empty: made from the prompt")
    note: str = Field(default="", max_length=L.max_note_chars, description=f"at most {L.max_note_chars} characters")
    inputs: dict[str, Any] = Field(description="the view's request, as sent")
    result: dict[str, Any] = Field(description="the view's response, as shown")


class SavedResponse(BaseModel):
    id: str
    url: str
    kind: str
    title: str


class SummaryModel(BaseModel):
    id: str
    url: str
    kind: str
    title: str
    profile: str
    created_at: float
    schema_version: int


class ListResponse(BaseModel):
    total: int
    items: list[SummaryModel]


class RerunResponse(BaseModel):
    id: str
    kind: str
    result: dict[str, Any]
    result_matches: bool = Field(description="the recomputed result equals the saved one (timing fields aside; floats "
                                             "within a relative 1e-4)")
    result_identical: bool = Field(description="bit-for-bit equal (timing fields aside)")
    max_abs_diff: float = Field(description="largest absolute difference over the float fields")
    first_difference: str | None = Field(default=None, description="where the results first differ, when they do")
    ignored_fields: list[str] = Field(default_factory=list, description="timing fields left out of the comparison")
    profile_matches: bool
    profile_differences: list[str] = Field(description="fields where the live profile differs from the saved one")
    live_profile: ProfileInfo


# --- migrations ------------------------------------------------------------------------------------------

def _v1_to_v2(doc: dict) -> dict:
    """v1 (the first release): `version`, epoch `created`, profile as a bare name with `hook_name` and
    `sae_fingerprint` beside it, `request`/`response` for what v2 calls `inputs`/`result`."""
    created = doc.get("created")
    try:
        created_at = datetime.fromtimestamp(float(created), tz=timezone.utc).isoformat()
    except (TypeError, ValueError, OverflowError, OSError):
        created_at = str(created or "")
    return {
        "schema_version": 2,
        "kind": doc.get("kind"),
        "title": doc.get("title"),
        "note": doc.get("note", ""),
        "created_at": created_at,
        "app_version": str(doc.get("app_version", "v1")),
        "profile": {"name": doc.get("profile"), "hook_name": doc.get("hook_name", ""),
                    "fingerprint": doc.get("sae_fingerprint", "")},
        "inputs": doc.get("request"),
        "result": doc.get("response"),
    }


MIGRATIONS = {1: _v1_to_v2}


def doc_version(doc: dict) -> int | None:
    v = doc.get("schema_version", doc.get("version"))
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def migrate(doc: dict) -> dict:
    """Upgrade a document of any known version to the current one (a pure function; the store keeps the original)."""
    v = doc_version(doc)
    if v is None or not (1 <= v <= SCHEMA_VERSION):
        raise ValueError(f"unknown schema_version {doc.get('schema_version', doc.get('version'))!r}; this server reads 1..{SCHEMA_VERSION}")
    while v < SCHEMA_VERSION:
        doc = MIGRATIONS[v](doc)
        v = doc_version(doc)
    return doc


def load_document(doc: Any) -> Exploration:
    """Migrate + validate; ValueError/ValidationError on a bad document."""
    if not isinstance(doc, dict):
        raise ValueError("an exploration is a JSON object")
    return Exploration.model_validate(migrate(doc))


# --- helpers ---------------------------------------------------------------------------------------------

def err(loc: list, msg: str, type_: str = "value_error", **ctx) -> HTTPException:
    item = {"loc": loc, "msg": msg, "type": type_}
    if ctx:
        item["ctx"] = ctx
    return HTTPException(422, detail=[item])


def _json_depth(obj) -> int:
    depth, stack = 0, [(obj, 1)]
    while stack:
        v, d = stack.pop()
        depth = max(depth, d)
        if isinstance(v, dict):
            stack.extend((c, d + 1) for c in v.values())
        elif isinstance(v, list):
            stack.extend((c, d + 1) for c in v)
    return depth


def check_size(doc: dict, settings, loc: list) -> str:
    """Compact JSON of the document, or 422 when over max_exploration_bytes / too deep / not finite."""
    limit = settings.limits.max_exploration_bytes
    max_depth = getattr(settings.limits, "max_json_depth", DEFAULT_MAX_DEPTH)
    if _json_depth(doc) > max_depth + 3:  # the envelope adds up to 3 levels
        raise err(loc, f"the document is nested too deeply; the limit is {max_depth} levels (max_json_depth)", "too_deep",
                  limit=max_depth)
    try:
        body = json.dumps(doc, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except ValueError:
        raise err(loc, "the document holds NaN or infinity", "non_finite") from None
    try:
        size = len(body.encode())
    except UnicodeEncodeError:
        raise err(loc, "the document holds a lone surrogate (text that is not valid Unicode)", "invalid_unicode") from None
    if size > limit:
        raise err(loc, f"the exploration is {size} bytes as JSON; the limit is {limit} bytes (max_exploration_bytes)",
                  "too_large", limit=limit)
    return body


def live_profile(engine) -> ProfileInfo:
    p = engine.profile
    saes = {}
    for spec in (p.coarse, p.fine):
        if spec.release:
            source = f"{spec.release}/{spec.sae_id}"
        elif spec.path is not None:
            source = f"local:{spec.path.name}"
        else:
            source = p.loader
        sae = engine.saes.get(spec.name)
        d_sae = int(sae.cfg.d_sae) if sae is not None else None
        saes[spec.name] = SAEInfo(display=spec.display, source=source, d_sae=d_sae)
    return ProfileInfo(name=p.name, display=p.display, model_name=p.model_name, hook_name=p.hook_name,
                       saes=saes, fingerprint=engine.fingerprint)


def profile_differences(saved: ProfileInfo, live: ProfileInfo) -> list[str]:
    out = []
    for f in ("name", "model_name", "hook_name", "fingerprint"):
        a, b = getattr(saved, f), getattr(live, f)
        if a != b:
            out.append(f"{f}: saved {a or '?'} / live {b or '?'}")
    for name in sorted(set(saved.saes) | set(live.saes)):
        a, b = saved.saes.get(name), live.saes.get(name)
        if a is None or b is None:
            if saved.saes:  # v1 snapshots did not record the SAE pair
                out.append(f"saes.{name}: {'missing in saved' if a is None else 'missing in live'}")
        elif (a.source, a.d_sae) != (b.source, b.d_sae):
            out.append(f"saes.{name}: saved {a.source} ({a.d_sae}) / live {b.source} ({b.d_sae})")
    return out


def default_title(kind: str, inputs: dict) -> str:
    text = inputs.get("prompt") or inputs.get("query") or inputs.get("concept") or ""
    text = " ".join(str(text).split())
    title = f"{kind.replace('_', ' ')}: {text}" if text else kind.replace("_", " ")
    return title[: L.max_title_chars - 1] + "…" if len(title) > L.max_title_chars else title


def validate_against_view(kind: str, inputs: dict, result: dict) -> tuple[dict, dict]:
    """For a registered kind: inputs must be a valid request, result a valid response (422 naming the field)."""
    spec = get_view(kind)
    if spec is None:
        return inputs, result
    try:
        spec.request_model.model_validate(inputs)
    except ValidationError as exc:
        raise HTTPException(422, detail=[{**_clean(e), "loc": ["body", "inputs", *e["loc"]]} for e in exc.errors()]) from None
    if spec.response_model is not None:
        try:
            spec.response_model.model_validate(result)
        except ValidationError as exc:
            raise HTTPException(422, detail=[{**_clean(e), "loc": ["body", "result", *e["loc"]]} for e in exc.errors()]) from None
    return inputs, result


def _clean(e: dict) -> dict:
    """A pydantic error item without non-JSON ctx values (exceptions) and without the echoed input."""
    out = {"msg": e["msg"], "type": e["type"]}
    if "ctx" in e:
        out["ctx"] = {k: (v if isinstance(v, (int, float, str, bool, type(None))) else str(v)) for k, v in e["ctx"].items()}
    return out


def build_document(req: SaveRequest, engine) -> Exploration:
    inputs, result = to_jsonable(req.inputs), to_jsonable(req.result)
    validate_against_view(req.kind, inputs, result)
    return Exploration(kind=req.kind, title=req.title.strip() or default_title(req.kind, inputs), note=req.note,
                       created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                       profile=live_profile(engine), inputs=inputs, result=result)


def save_document(store, settings, doc: Exploration) -> SavedResponse:
    d = doc.model_dump(mode="json")
    check_size(d, settings, ["body"])
    exploration_id = store.put(d)
    return SavedResponse(id=exploration_id, url=f"/e/{exploration_id}", kind=doc.kind, title=doc.title)


def parse_import(raw: bytes, settings) -> Exploration:
    """An uploaded document -> a validated, migrated Exploration, or 422 naming the problem and the limit."""
    limit = settings.limits.max_exploration_bytes
    if len(raw) > limit:
        raise err(["body"], f"the file is {len(raw)} bytes; the limit is {limit} bytes (max_exploration_bytes)",
                  "too_large", limit=limit)
    try:
        doc = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except RecursionError:
        raise err(["body"], "the document is nested too deeply", "too_deep") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise err(["body"], f"not a JSON document: {exc}", "json_invalid") from None
    if not isinstance(doc, dict):
        raise err(["body"], "an exploration is a JSON object", "type_error")
    check_size(doc, settings, ["body"])
    try:
        migrated = migrate(doc)
    except ValueError as exc:
        raise err(["body", "schema_version"], str(exc), "unknown_version") from None
    except Exception as exc:  # a malformed old document the migration cannot read
        raise err(["body"], f"cannot read this version {doc_version(doc)} document: {type(exc).__name__}", "malformed") from None
    try:
        return Exploration.model_validate(migrated)
    except ValidationError as exc:
        raise HTTPException(422, detail=[{**_clean(e), "loc": ["body", *e["loc"]]} for e in exc.errors()]) from None


def _reject_constant(name: str):
    raise ValueError(f"{name} is not allowed (no NaN or infinity)")


def get_document(store, exploration_id: str) -> Exploration:
    raw = store.get(exploration_id)
    if raw is None:
        raise HTTPException(404, detail="no exploration with this id")
    return load_document(raw)


def rerun_document(engine, settings, exploration_id: str, doc: Exploration) -> RerunResponse:
    spec = get_view(doc.kind)
    if spec is None:
        raise HTTPException(409, detail=f"this server has no {doc.kind!r} view to re-run it with")
    try:
        req = spec.request_model.model_validate(doc.inputs)
    except ValidationError as exc:
        raise HTTPException(422, detail=[{**_clean(e), "loc": ["inputs", *e["loc"]]} for e in exc.errors()]) from None
    result = to_jsonable(spec.run_fn(engine, settings, req))
    live = live_profile(engine)
    diffs = profile_differences(doc.profile, live)
    a, b = compared_fields(doc.kind, result), compared_fields(doc.kind, doc.result)
    ignored = sorted((set(result) | set(doc.result)) - set(a) - set(b))
    cmp = compare_results(doc.kind, doc.result, result)
    return RerunResponse(id=exploration_id, kind=doc.kind, result=result, result_matches=cmp.match, result_identical=cmp.exact,
                         max_abs_diff=cmp.max_abs_diff, first_difference=cmp.first_difference, ignored_fields=ignored,
                         profile_matches=not diffs, profile_differences=diffs, live_profile=live)


# --- routes ----------------------------------------------------------------------------------------------

@router.post("", status_code=201, response_model=SavedResponse)
def save(req: SaveRequest, engine: EngineDep, settings: SettingsDep, store: StoreDep) -> SavedResponse:
    """Save a view as an immutable exploration; the answer's url (/e/<id>) opens it anywhere."""
    return save_document(store, settings, build_document(req, engine))


@router.get("", response_model=ListResponse)
def recent(store: StoreDep, limit: int = Query(50, ge=1, le=200), offset: int = Query(0, ge=0, le=1_000_000),
           kind: str | None = Query(None, pattern=KIND_PATTERN)) -> ListResponse:
    items = [SummaryModel(id=s.id, url=f"/e/{s.id}", kind=s.kind, title=s.title, profile=s.profile,
                          created_at=s.created_at, schema_version=s.schema_version)
             for s in store.recent(limit=limit, offset=offset, kind=kind)]
    return ListResponse(total=store.count(kind=kind), items=items)


@router.post("/import", status_code=201, response_model=SavedResponse,
             openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}}})
async def import_exploration(request: Request, settings: SettingsDep, store: StoreDep) -> SavedResponse:
    """Import an exported document (any schema version this server reads); it gets a new id here."""
    raw = await _read_capped(request, settings.limits.max_exploration_bytes)
    doc = parse_import(raw, settings)
    return await run_in_threadpool(save_document, store, settings, doc)


async def _read_capped(request: Request, limit: int) -> bytes:
    buf = bytearray()
    async for chunk in request.stream():
        buf.extend(chunk)
        if len(buf) > limit:
            raise err(["body"], f"the file is over {limit} bytes; the limit is {limit} bytes (max_exploration_bytes)",
                      "too_large", limit=limit)
    return bytes(buf)


@router.get("/{exploration_id}", response_model=Exploration)
def get_one(exploration_id: str, store: StoreDep) -> Exploration:
    """The saved document (current schema; older ones are upgraded on the fly)."""
    return get_document(store, exploration_id)


@router.get("/{exploration_id}/fragment", include_in_schema=False)  # (response_class=None made /openapi.json raise)
def fragment(exploration_id: str, store: StoreDep):
    from fastapi.responses import HTMLResponse

    doc = get_document(store, exploration_id)
    html, _ = render_fragment(doc.kind, doc.inputs, doc.result)
    return HTMLResponse(html)


@router.post("/{exploration_id}/rerun", response_model=RerunResponse)
def rerun(exploration_id: str, engine: EngineDep, settings: SettingsDep, store: StoreDep) -> RerunResponse:
    """Recompute with the live model; compares the result and the profile with the saved ones."""
    return rerun_document(engine, settings, exploration_id, get_document(store, exploration_id))
