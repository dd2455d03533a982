"""Analysis view: requests and responses (per-token features, logit lens, feature cards)."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from app.api.features.schemas import AtlasStatusModel, FeatureAtlasModel, SteerLinkModel
from app.api.schemas import PromptFields, SystemReadModel
from app.engine.ranking import RankBy

SaeName = Literal["coarse", "fine"]
LensKind = Literal["logit", "tuned"]
LENS_KIND_DOC = ("which lens reads the layers: 'logit' (final norm + unembedding) or 'tuned' (each layer's affine "
                 "translator first; 422 when the profile has no tuned lens)")
FEATURE_PATTERN = r"^(coarse|fine):\d{1,9}$"  # 'sae:index' of a feature


class AnalyzeRequest(PromptFields):
    top_k: int = Field(default=10, ge=1, le=50, description="features listed per token and SAE (at most 50)")
    include_sinks: bool = Field(default=False, description="rank features at position 0 / special / massive-norm tokens too")
    lens: bool = Field(default=False, description="also run the logit lens (the `lens` field of the response)")
    lens_kind: LensKind = Field(default="logit", description=LENS_KIND_DOC)
    feature: str | None = Field(default=None, pattern=FEATURE_PATTERN,
                                description="'sae:index' of a feature whose card comes with the result (`card`)")
    rank: RankBy = Field(default="unusual", description="unusual: by activation over the feature's typical activation, "
                         "dense features (firing on > 10% of tokens) last; activation: by raw activation")


class SAETokenModel(BaseModel):
    indices: list[int] = Field(description="the features listed at this token, in the request's rank order")
    values: list[float] = Field(description="their raw activations")
    ratios: list[float | None] = Field(default_factory=list, description="activation / the feature's typical activation when firing (atlas); None without one")
    dense: list[bool] = Field(default_factory=list, description="fires on more than 10% of the atlas's tokens")
    labels: list[str] = Field(default_factory=list, description="atlas labels ('' without an atlas)")
    rel_error: float
    cosine: float
    l0: int


class TokenModel(BaseModel):
    position: int
    token_id: int
    token: str
    sink: bool
    resid_norm: float
    saes: dict[str, SAETokenModel]


class LensRequest(PromptFields):
    top: int = Field(default=5, ge=1, le=10, description="tokens kept per layer and position (at most 10)")
    lens_kind: LensKind = Field(default="logit", description=LENS_KIND_DOC)


class LensResponse(BaseModel):
    profile: str
    layers: list[str] = Field(description='"embed", then "0" .. "n_layers-1" (each block\'s resid_post)')
    tokens: list[str]
    top_tokens: list[list[list[str]]] = Field(description="[layer][position] -> top tokens, most probable first")
    top_probs: list[list[list[float]]] = Field(description="[layer][position] -> their probabilities")
    lens_kind: LensKind = Field(default="logit", description="the lens that read the layers")
    kl: list[list[float]] = Field(default_factory=list, description="[layer][position] -> KL(model's output || this "
                                  "layer's readout) in nats over the full vocabulary (0 on the last layer)")
    kl_mean: list[float] | None = Field(default=None, description="[layer] -> mean KL over positions that are not "
                                        "sinks (None when every position is one)")
    sink: list[bool] = Field(default_factory=list, description="[position] -> left out of kl_mean (position 0, "
                             "special tokens, residual norm above the profile's sink_norm)")


class AnalyzeResponse(BaseModel):
    profile: str
    hook_name: str
    text: str
    tokens: list[TokenModel]
    explained_variance: dict[str, float | None]
    next_tokens: list[tuple[str, float]]
    next_token_ids: list[int] = Field(default_factory=list, description="the ids of next_tokens, in the same order")
    system: SystemReadModel | None = Field(default=None, description="which system prompt the model read (chat template default included)")
    sae_widths: dict[str, int] = Field(default_factory=dict)
    lens: LensResponse | None = None
    card: FeatureResponse | None = Field(default=None, description="the card of the requested `feature` on this prompt")


class FeatureResponse(BaseModel):
    sae: str
    index: int
    width: int
    decoder_norm: float
    promoted: list[tuple[str, float]] = Field(description="tokens whose logits the decoder direction raises most (W_dec[i] @ W_U)")
    suppressed: list[tuple[str, float]] = Field(description="tokens whose logits it lowers most (value is the logit change, negative)")
    neuronpedia_url: str | None = None
    tokens: list[str] | None = Field(default=None, description="the prompt's tokens, when a prompt was given")
    activations: list[float] | None = Field(default=None, description="the feature's activation at each position")
    sink: list[bool] | None = None
    max_activation: float | None = Field(default=None, description="max over positions (sinks left out unless include_sinks)")
    max_position: int | None = None
    atlas: FeatureAtlasModel | None = Field(default=None, description="corpus context from the feature atlas (none without one)")
    atlas_status: AtlasStatusModel | None = Field(default=None, description="whether there is an atlas, else how to build it")
    steer: SteerLinkModel | None = Field(default=None, description="where its 'steer' link opens Generate (none when no scale is known)")
