"""The map view (issue 13): a prompt's path across the 2D map of both SAEs' features, the system prompt's pull,
steering and long-context drift."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.api.limits import Limit
from app.api.schemas import FiniteModel, PromptFields, SystemReadModel, search_query

SaeName = Literal["coarse", "fine"]
ColorBy = Literal["cluster", "density", "sae", "cosine", "selectivity"]
Show = Literal["both", "coarse", "fine"]
MAX_DRIFT_K = 16  # filler turn pairs
MAX_DRIFT_POINTS = 8


class MapSteerFeature(FiniteModel):
    sae: SaeName
    index: int = Field(ge=0, description="feature index, 0 <= index < the SAE's width")
    strength: Annotated[float, Limit("max_steering_strength", "abs")] = Field(
        description="c in x + c*W_dec[f] (|c| at most max_steering_strength)")


class MapRequest(PromptFields):
    """A prompt on the map; view settings (colour, filter, chosen feature) travel with it so a link re-opens the view."""

    compare_system: bool = Field(default=True, description="with a system prompt: also run the prompt without it "
                                                           "(both paths, the features that moved most)")
    steer: Annotated[list[MapSteerFeature], Limit("max_steering_features")] = Field(
        default_factory=list, description="features to steer with: steered vs unsteered greedy continuations")
    max_new_tokens: Annotated[int, Limit("max_new_tokens", "max")] = Field(default=8, ge=1, description="continuation "
                                                                                                       "length when steering")
    drift_ks: list[int] = Field(default_factory=list, max_length=MAX_DRIFT_POINTS,
                                description=f"filler turn pairs k between system and user prompt (each 0..{MAX_DRIFT_K}, "
                                            f"at most {MAX_DRIFT_POINTS} values; needs a system prompt)")
    color_by: ColorBy = "cluster"
    show: Show = "both"
    feature: str | None = Field(default=None, max_length=32, pattern=r"^(coarse|fine):\d{1,7}$",
                                description="'fine:123': the feature for colour_by=cosine")
    discovery: str | None = Field(default=None, max_length=64, pattern=r"^[A-Za-z0-9_-]+$",
                                  description="id of a saved discovery: colour_by=selectivity lights its features")

    @field_validator("drift_ks")
    @classmethod
    def _ks(cls, v: list[int]) -> list[int]:
        for i, k in enumerate(v):
            if not 0 <= k <= MAX_DRIFT_K:
                raise ValueError(f"drift_ks[{i}] = {k}: each k must be in 0..{MAX_DRIFT_K}")
        return sorted(set(v))


class TopFeature(BaseModel):
    sae: str
    index: int
    activation: float
    label: str = ""
    ratio: float | None = Field(default=None, description="activation / the feature's typical activation (atlas mean when firing)")
    dense: bool = Field(default=False, description="fires on more than 10% of the atlas's tokens (listed after the rest)")


class PathPointModel(BaseModel):
    position: int
    token: str
    x: float | None = Field(description="None: a sink (position 0, special token, massive norm) or no active feature")
    y: float | None
    sink: bool
    top: list[TopFeature]


class PathModel(BaseModel):
    name: str
    points: list[PathPointModel]


class MovedModel(BaseModel):
    sae: str
    index: int
    label: str
    without: float
    with_system: float
    delta: float


class PullModel(BaseModel):
    moved: list[MovedModel]
    feature_shift: float = Field(description="1 - cos(last token's feature activations with vs without), both SAEs")
    resid_shift: float = Field(description="1 - cos(last token's residuals at the hook)")
    map_shift: float | None = Field(description="distance between the two last-token places (layout units, not a cosine)")


class MarkedModel(BaseModel):
    sae: str
    index: int
    x: float
    y: float
    label: str = ""


class SteerModel(BaseModel):
    prompt_len: int
    unsteered_text: str
    steered_text: str
    marked: list[MarkedModel]


class DriftPointModel(BaseModel):
    k: int
    n_tokens: int
    feature_shift: float
    resid_shift: float


class RegionModel(BaseModel):
    id: int
    label: str
    size: int
    n_coarse: int
    centroid: tuple[float, float]
    hull: list[tuple[float, float]]


class LayoutInfo(BaseModel):
    n_points: int
    widths: dict[str, int]
    n_regions: int
    clustered_share: float = Field(description="share of features inside a region")
    preservation: float = Field(description="mean share of each feature's 10 nearest cosine neighbours (decoder "
                                            "directions) that are also among its 10 nearest points on the map")
    params: dict
    fingerprint: str


class MapResponse(BaseModel):
    profile: str
    hook_name: str
    layout: LayoutInfo
    regions: list[RegionModel]
    paths: list[PathModel] = Field(description="'prompt' (as given); 'without system prompt'; 'unsteered' / 'steered'")
    pull: PullModel | None = None
    steer: SteerModel | None = None
    drift: list[DriftPointModel] = Field(default_factory=list)
    drift_note: str | None = None
    system: SystemReadModel | None = Field(default=None, description="which system prompt the model read for 'prompt'")
    without_system: SystemReadModel | None = Field(default=None, description="and for 'without system prompt' (a template's default counts)")


class MapSearchRequest(BaseModel):
    """A word, a feature id ('fine:123', 'C-1332') or a phrase to find on the map."""

    model_config = ConfigDict(extra="forbid")
    q: Annotated[str, Limit("max_search_chars")] = Field(min_length=1, description="a word, phrase or feature id "
                                                                                   "(at most max_search_chars characters)")
    top: int = Field(default=12, ge=1, le=50, description="features to return (at most 50)")

    @field_validator("q", mode="after")
    @classmethod
    def _query(cls, v: str) -> str:
        return search_query(v)


class BoxModel(BaseModel):
    x0: float
    x1: float
    y0: float
    y1: float


class PlaceRegion(BaseModel):
    id: int
    label: str
    size: int
    centroid: tuple[float, float]
    box: BoxModel = Field(description="the part of the map to show to see the region (layout units)")
    matched: list[str] = Field(default_factory=list, description="the query words its name or words matched")


class PlaceFeature(BaseModel):
    sae: str
    index: int
    label: str
    x: float
    y: float
    region: int = Field(description="-1: in no region")
    region_label: str | None
    box: BoxModel


class MapSearchResponse(BaseModel):
    query: str
    regions: list[PlaceRegion]
    features: list[PlaceFeature] = Field(description="a feature id first, then atlas matches (label tokens and top "
                                                     "examples containing the query), best first")
    atlas: bool = Field(description="whether an atlas was searched (without one only regions and ids are found)")
