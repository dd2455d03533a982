"""Saved-exploration services: build, size-check, save, import, load and re-run documents."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from datetime import datetime, timezone

from fastapi import HTTPException
from pydantic import ValidationError

from app.api.errors import invalid
from app.api.errors import unprocessable as err
from app.api.explorations.document import (
    Exploration,
    ProfileInfo,
    RerunResponse,
    SAEInfo,
    SavedResponse,
    SaveRequest,
    doc_version,
    load_document,
    migrate,
)
from app.api.limits import enforce_limits
from app.explorations.registry import ViewRegistry, to_jsonable
from app.store import ID_BYTES


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
    max_depth = settings.limits.max_json_depth
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


def default_title(kind: str, inputs: dict, max_chars: int) -> str:
    text = inputs.get("prompt") or inputs.get("query") or inputs.get("concept") or ""
    text = " ".join(str(text).split())
    title = f"{kind.replace('_', ' ')}: {text}" if text else kind.replace("_", " ")
    return title[: max_chars - 1] + "…" if len(title) > max_chars else title


def validate_against_view(views: ViewRegistry, kind: str, inputs: dict, result: dict) -> tuple[dict, dict]:
    """For a registered kind: inputs must be a valid request, result a valid response (422 naming the field)."""
    spec = views.get(kind)
    if spec is None:
        return inputs, result
    try:
        spec.request_model.model_validate(inputs)
    except ValidationError as exc:
        raise invalid(exc, ["body", "inputs"]) from None
    if spec.response_model is not None:
        try:
            spec.response_model.model_validate(result)
        except ValidationError as exc:
            raise invalid(exc, ["body", "result"]) from None
    return inputs, result


def build_document(req: SaveRequest, engine, settings, views: ViewRegistry) -> Exploration:
    enforce_limits(req, settings.limits)
    inputs, result = to_jsonable(req.inputs), to_jsonable(req.result)
    validate_against_view(views, req.kind, inputs, result)
    title = req.title.strip() or default_title(req.kind, inputs, settings.limits.max_title_chars)
    return Exploration(kind=req.kind, title=title, note=req.note,
                       created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                       profile=live_profile(engine), inputs=inputs, result=result)


SAVE_KEY_RE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
SAVE_KEY_RULE = "16 to 64 characters of A-Z a-z 0-9 _ -"


def check_save_key(key: str | None, loc: list) -> str | None:
    """An idempotency key as given (None when there is none), or 422 naming the field and its form."""
    if key in (None, ""):
        return None
    if not SAVE_KEY_RE.match(key):
        raise err(loc, f"an idempotency key is {SAVE_KEY_RULE}", "value_error")
    return key


def idempotent_id(secret: bytes, owner: str | None, key: str, doc: Exploration) -> str:
    """The id of a save made with an idempotency key: the same key, owner and content (kind, title, note, inputs,
    result) give the same id, so a double-click saves once; an HMAC under the server's secret, so as unguessable as a
    fresh id (24 url-safe characters)."""
    content = json.dumps([owner or "", key, doc.kind, doc.title, doc.note, to_jsonable(doc.inputs),
                          to_jsonable(doc.result)], sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                         allow_nan=True).encode()
    digest = hmac.new(secret, b"asn-save-id\0" + content, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:ID_BYTES]).decode()


def repeated_save(store, exploration_id: str | None, doc: Exploration) -> SavedResponse | None:
    """The earlier save of a keyed save (`idempotent_id`) when it is stored already (answered again, nothing written,
    nothing recomputed to sign it), else None."""
    old = store.get_record(exploration_id) if exploration_id is not None else None
    if old is None:
        return None
    return SavedResponse(id=exploration_id, url=f"/e/{exploration_id}", kind=doc.kind, title=doc.title,
                         computed=old.signature is not None, repeated=True)


def save_document(store, settings, doc: Exploration, owner: str | None = None, signature: str | None = None,
                  exploration_id: str | None = None) -> SavedResponse:
    """Store the document; owner (who may list it) and signature (app/explorations/provenance.py) are kept beside it.
    exploration_id: the `idempotent_id` of a keyed save (two at once store one row: Store.put)."""
    d = doc.model_dump(mode="json")
    check_size(d, settings, ["body"])
    exploration_id = store.put(d, owner=owner, signature=signature, exploration_id=exploration_id)
    return SavedResponse(id=exploration_id, url=f"/e/{exploration_id}", kind=doc.kind, title=doc.title,
                         computed=signature is not None)


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
        parsed = Exploration.model_validate(migrated)
    except ValidationError as exc:
        raise invalid(exc, ["body"]) from None
    enforce_limits(parsed, settings.limits)
    return parsed


def _reject_constant(name: str):
    raise ValueError(f"{name} is not allowed (no NaN or infinity)")


def get_document(store, exploration_id: str) -> Exploration:
    raw = store.get(exploration_id)
    if raw is None:
        raise HTTPException(404, detail="no exploration with this id")
    return load_document(raw)


def rerun_document(engine, settings, views: ViewRegistry, exploration_id: str, doc: Exploration) -> RerunResponse:
    spec = views.get(doc.kind)
    if spec is None:
        raise HTTPException(409, detail=f"this server has no {doc.kind!r} view to re-run it with")
    try:
        req = spec.request_model.model_validate(doc.inputs)
    except ValidationError as exc:
        raise invalid(exc, ["inputs"]) from None
    result = to_jsonable(spec.run_fn(engine, settings, req))
    live = live_profile(engine)
    diffs = profile_differences(doc.profile, live)
    a, b = views.compared_fields(doc.kind, result), views.compared_fields(doc.kind, doc.result)
    ignored = sorted((set(result) | set(doc.result)) - set(a) - set(b))
    cmp = views.compare(doc.kind, doc.result, result)
    return RerunResponse(id=exploration_id, kind=doc.kind, result=result, result_matches=cmp.match, result_identical=cmp.exact,
                         max_abs_diff=cmp.max_abs_diff, first_difference=cmp.first_difference, ignored_fields=ignored,
                         profile_matches=not diffs, profile_differences=diffs, live_profile=live)
