from __future__ import annotations

from pydantic import BaseModel, Field

from app.api.schemas import model_of
from app.engine.profile_info import ProfileInfo, SAEInfo


class SAEInfoModel(model_of(SAEInfo)):  # type: ignore[misc]  # the engine's SAEInfo fields
    pass


class OtherProfile(BaseModel):
    name: str
    display: str
    model_name: str
    hook_name: str
    missing: list[str]  # what this machine lacks to serve it ([] = ready)
    command: str


class ProfileResponse(model_of(ProfileInfo, through="decoder")):  # type: ignore[misc]  # name .. decoder
    device: str
    saes: list[SAEInfoModel]
    source_file: str | None
    fingerprint: str
    atlas: str | None
    atlas_position_artefacts: dict[str, int] | None = Field(
        default=None, description="per SAE, features whose atlas top examples sit at window positions 1-7 at least "
                                  "half the time (activations that track position, not content)")
    tuned_lens: str | None = Field(default=None, description='"ok (<folder>)", or why Analyze has no tuned lens')
    pair_independence: dict | None
    profiles: list[OtherProfile]
    adhoc_command: str
