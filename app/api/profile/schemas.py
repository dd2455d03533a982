from __future__ import annotations

from pydantic import BaseModel


class SAEInfoModel(BaseModel):
    name: str
    display: str
    architecture: str
    d_sae: int
    d_in: int
    hook_name: str | None
    source: str
    dtype: str
    bytes: int
    neuronpedia: str | None


class OtherProfile(BaseModel):
    name: str
    display: str
    model_name: str
    hook_name: str
    missing: list[str]  # what this machine lacks to serve it ([] = ready)
    command: str


class ProfileResponse(BaseModel):
    name: str
    display: str
    loader: str
    model_name: str
    architecture: str
    n_layers: int
    d_model: int
    d_vocab: int
    model_params: int
    model_bytes: int
    model_dtype: str
    hook_name: str
    prepend_bos: bool
    decoder: str
    device: str
    saes: list[SAEInfoModel]
    source_file: str | None
    fingerprint: str
    atlas: str | None
    pair_independence: dict | None
    profiles: list[OtherProfile]
    adhoc_command: str
