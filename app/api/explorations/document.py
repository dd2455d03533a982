"""The saved-exploration document (schema_version 2), its API models and the migrations of older versions.

A snapshot is the `Exploration` document below. Older documents are upgraded on read by `migrate` (never
rewritten in the store), so links made by an older app keep rendering."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.api.limits import Limit

SCHEMA_VERSION = 2
KIND_PATTERN = r"^[a-z][a-z0-9_]{0,31}$"
APP_VERSION = "0.1.0"


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
    title: Annotated[str, Limit("max_title_chars")] = Field(min_length=1)
    note: Annotated[str, Limit("max_note_chars")] = Field(default="")
    created_at: str = Field(description="ISO 8601, UTC")
    app_version: str = Field(default=APP_VERSION, max_length=50)
    profile: ProfileInfo
    inputs: dict[str, Any]
    result: dict[str, Any]


class SaveRequest(BaseModel):
    """What a view's Save button posts."""

    model_config = ConfigDict(extra="forbid")
    kind: str = Field(pattern=KIND_PATTERN, description="the view: analysis, steering, dose, temperature, system_shift, discovery, ...")
    title: Annotated[str, Limit("max_title_chars")] = Field(default="", description="at most max_title_chars characters; empty: made from the prompt")
    note: Annotated[str, Limit("max_note_chars")] = Field(default="", description="at most max_note_chars characters")
    inputs: dict[str, Any] = Field(description="the view's request, as sent")
    result: dict[str, Any] = Field(description="the view's response, as shown")


class SavedResponse(BaseModel):
    id: str
    url: str
    kind: str
    title: str
    computed: bool = Field(default=True, description="the result is one this server computed (signed); false: shown "
                                                     "as imported - not computed here")
    repeated: bool = Field(default=False, description="this save was made before (same idempotency key, caller and "
                                                      "content): the link of that save, nothing new stored")


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
