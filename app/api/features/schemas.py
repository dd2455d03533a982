"""Feature atlas and search: responses (atlas data per feature) and the search request."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.api.limits import Limit
from app.api.schemas import search_query
from app.engine.atlas.words import NEAR_LEFT, NEAR_RIGHT, TOP_CHECKED


class ExampleModel(BaseModel):
    window: int = Field(description="window of the atlas corpus")
    position: int = Field(description="the activating token's position in the window")
    start: int = Field(description="window position of the first token shown")
    tokens: list[str]
    acts: list[float] = Field(description="the feature's activation at each token shown (0 at sinks / position 0)")
    activation: float = Field(description="at the activating token")


class QuantileBandModel(BaseModel):
    name: str = Field(description="rank band of the windows where the feature fires, strongest first")
    examples: list[ExampleModel]


class TokenStatModel(BaseModel):
    token: str
    token_id: int
    count: int = Field(description="firings on this token in the atlas corpus")
    mean_act: float = Field(description="mean activation when firing on it")


class NeighbourModel(BaseModel):
    sae: str
    index: int
    cosine: float = Field(description="decoder-direction cosine")
    label: str


class LabelScoreModel(BaseModel):
    parts: list[str] = Field(description="the label's token parts, made from 3 of every 4 atlas windows")
    precision: float | None = Field(description="held-out windows: of the positions holding a label token, the share where it fires")
    recall: float | None = Field(description="held-out windows: of the positions where it fires, the share holding a label token")
    f1: float | None
    n_predicted: int
    n_firing: int
    n_both: int


class FeatureAtlasModel(BaseModel):
    sae: str
    index: int
    label: str = Field(description="the tokens it fires on more than the corpus does (lift >= 4), e.g. 'au · French · Roman'")
    label_score: LabelScoreModel | None = Field(default=None, description="how well the label's tokens detect it on "
                                                "atlas text the label was not made from")
    density: float = Field(description="share of counted atlas tokens where it fires")
    n_firing: int
    mean_when_firing: float
    max_act: float
    hist_edges: list[float] = Field(description="bin edges over [0, max_act] of its non-zero activations")
    hist_counts: list[int]
    top_tokens: list[TokenStatModel]
    examples: list[ExampleModel] = Field(description="max-activating windows, strongest first")
    quantiles: list[QuantileBandModel]
    neighbours: dict[str, list[NeighbourModel]] = Field(description="nearest decoder directions, per SAE")
    corpus_tokens: int = Field(description="counted tokens of the atlas corpus")


class AtlasStatusModel(BaseModel):
    available: bool
    status: str = Field(description='"ok", or why there is no atlas (missing / stale) and how to build it')
    build_command: str
    folder: str
    tokens: int | None = None
    valid_tokens: int | None = None
    corpus: str | None = None
    built_at: str | None = None


class SteerLinkModel(BaseModel):
    """Where a "steer with this feature" link opens Generate (app.engine.steering.link_strength)."""
    value: float = Field(description="the strength c (add), inside the slider and the limit")
    typical: float = Field(description="the feature's typical activation the slider is scaled by")
    times: float = Field(description="value / typical (before the cap)")
    source: str = Field(description="where typical came from")
    slider_max: float = Field(description="the Generate slider's half-width for this feature")


class FeatureAtlasResponse(BaseModel):
    sae: str
    index: int
    width: int
    atlas: FeatureAtlasModel | None
    atlas_status: AtlasStatusModel
    steer: SteerLinkModel | None = None


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    q: Annotated[str, Limit("max_search_chars")] = Field(min_length=1, description="a word or phrase (at most max_search_chars characters)")
    mode: Literal["both", "text", "atlas"] = Field(default="both", description="text: run it through the model; atlas: match labels and examples")
    top: int = Field(default=10, ge=1, le=50, description="results per SAE and mode (at most 50)")
    sort: Literal["rank", "label_f1"] = Field(default="rank", description="rank: the mode's own order; label_f1: by the "
                                               "label's detection F1 on held-out atlas text")
    min_label_f1: float = Field(default=0.0, ge=0.0, le=1.0, description="hide hits whose label detects the feature with a lower F1")

    @field_validator("q", mode="after")
    @classmethod
    def _query(cls, v: str) -> str:
        return search_query(v)


class SearchHitModel(BaseModel):
    sae: str
    index: int
    score: float = Field(description="text: activation / the feature's typical activation (raw activation without an atlas); "
                         "atlas: lift, P(fires | the query word) / P(fires)")
    activation: float = Field(description="text: max activation on the query; atlas: mean activation on the word")
    token: str = Field(description="text: the query token it fired on most; atlas: the matching token")
    label: str
    density: float | None
    max_act: float | None = Field(description="max activation on the atlas corpus")
    dense: bool = Field(default=False, description="fires on more than 10% of the atlas's tokens (listed last)")
    label_f1: float | None = Field(default=None, description="F1 of the label detecting the feature on held-out atlas text")
    share: float | None = Field(default=None, description="atlas: share of the feature's firings that are on the word")
    top_share: float | None = Field(default=None, description=f"atlas: share of its {TOP_CHECKED} strongest atlas examples "
                                    f"with the word within {NEAR_LEFT} tokens before to {NEAR_RIGHT} after the activation "
                                    "(ranked by this, then lift)")


class SearchResponse(BaseModel):
    query: str
    mode: str
    query_tokens: list[str] = Field(default_factory=list)
    text: dict[str, list[SearchHitModel]] | None = Field(default=None, description="features that fire on the query, per SAE")
    atlas: dict[str, list[SearchHitModel]] | None = Field(default=None, description="features specific to the query's whole word on the atlas, by lift")
    atlas_status: AtlasStatusModel
