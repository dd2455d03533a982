"""Split map of a coarse feature: request and response."""
from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.api.limits import Limit
from app.api.schemas import FiniteModel, check_text

KIND = "split_map"


class SplitMapRequest(FiniteModel):
    """Which coarse feature, the thresholds, and optionally the prompt to stitch on."""

    model_config = ConfigDict(extra="forbid")

    coarse: int = Field(ge=0, description="coarse feature index, 0 <= coarse < the coarse SAE's width (404 otherwise)")
    child_cos: float = Field(default=0.5, ge=0.0, le=1.0, description="decoder cosine at or above which a fine feature is a child")
    threshold: float = Field(default=0.7, ge=0.0, le=1.0,
                             description="max decoder cosine to the coarse dictionary at or above which a fine feature is a "
                                         "split or copy of a coarse one (below: novel)")
    strong_frac: float = Field(default=0.3, gt=0.0, le=1.0, description="'fires strongly' = at least this share of the feature's atlas max")
    top: Annotated[int, Limit("max_features_shown", "max")] = Field(default=20, ge=1, description="rows per ranking")
    n_examples: int = Field(default=8, ge=1, le=50, description="hole examples shown per kind")
    fine: int | None = Field(default=None, ge=0, description="also write this fine feature as a mix of coarse ones")
    prompt: Annotated[str | None, Limit("max_prompt_chars")] = Field(default=None, min_length=1,
                                                                     description="optional: stitch on this prompt")
    system_prompt: Annotated[str | None, Limit("max_system_prompt_chars")] = None
    chat: bool | None = None

    @field_validator("prompt", "system_prompt", mode="after")
    @classmethod
    def _valid_text(cls, v):
        return check_text(v)


class ContextModel(BaseModel):
    tokens: list[str]
    acts: list[float] = Field(description="the named feature's activation at each context token")
    position: int = Field(description="index in tokens of the token the hole is at")


class FineMatchModel(BaseModel):
    fine: int
    label: str | None = None
    cosine: float = Field(description="decoder cosine to the coarse feature")
    n_fine: int = Field(description="atlas tokens where the fine feature fires")
    n_both: int = Field(description="atlas tokens where both fire")
    p_fine_given_coarse: float
    p_coarse_given_fine: float
    jaccard: float
    child: bool


class HoleModel(BaseModel):
    position: int = Field(description="atlas corpus token index")
    sae: str = Field(description='"coarse": it fired strongly and no child did; "fine": a child fired strongly, the coarse feature did not')
    feature: int
    label: str | None = None
    activation: float
    relative: float = Field(description="activation / the feature's max on the atlas")
    context: ContextModel | None = None


class MetaTermModel(BaseModel):
    coarse: int
    coef: float
    label: str | None = None


class MetaModel(BaseModel):
    fine: int
    label: str | None = None
    terms: list[MetaTermModel] = Field(description="unit fine direction ≈ Σ coef · unit coarse direction (coef ≥ 0, ≤ 5 terms)")
    residual: float = Field(description="‖target − mix‖ / ‖target‖")
    cosine: float


class DictionaryModel(BaseModel):
    """Reconstruction vs novel over the whole fine dictionary, and children/coverage over all coarse features."""

    threshold: float
    bin_edges: list[float]
    counts: list[int] = Field(description="fine features per bin of their max decoder cosine to the coarse dictionary")
    n_reconstruction: int
    n_novel: int
    child_cos: float
    children_counts: list[int] = Field(description="coarse features with 0, 1, ..., 9, ≥ 10 children")
    coverage_edges: list[float]
    coverage_counts: list[int] = Field(description="coarse features (that fire on the atlas) per coverage bin")
    n_children: int = Field(description="this coarse feature's children")


class StitchingModel(BaseModel):
    children: list[int]
    positions: list[int]
    tokens: list[str]
    coarse_act: list[float]
    children_act: list[float]
    rel_error_coarse: float = Field(description="Σ‖x − x̂‖² / Σ‖x‖² over the spliced positions, coarse SAE")
    rel_error_stitched: float
    rel_error_per_pos: list[tuple[float, float]]
    next_clean: list[tuple[str, float]]
    next_coarse: list[tuple[str, float]]
    next_stitched: list[tuple[str, float]]
    kl_coarse: float = Field(description="KL(clean ‖ coarse spliced) at the last position, nats")
    kl_stitched: float


class SplitMapResponse(BaseModel):
    profile: str
    coarse: int
    widths: dict[str, int]
    label: str | None = None
    atlas: str = Field(description='"ok" or why there is no atlas (then every corpus count is 0)')
    n_tokens: int
    n_coarse: int
    density: float | None = None
    max_act: float | None = None
    child_cos: float
    strong_frac: float
    coverage: float | None = Field(default=None, description="share of the coarse feature's firing tokens where a child fires")
    children: list[FineMatchModel]
    by_cosine: list[FineMatchModel]
    by_cofiring: list[FineMatchModel]
    n_holes: int
    holes: list[HoleModel]
    n_reverse_holes: int
    reverse_holes: list[HoleModel]
    meta: list[MetaModel]
    dictionary: DictionaryModel
    stitching: StitchingModel | None = None
    text: str | None = None
